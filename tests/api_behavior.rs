//! A user's behaviour patterns (`users/{id}/behavior-patterns`) and who is online
//! (`sessions/online`) through the real binary: exact numbers after a known scenario, checked
//! against what other reads (the replay timeline, the user's session list) say, and the API's
//! access rules.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "behavior-analytics-token-0123";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const GB: &str = "81.2.69.7";
const SE: &str = "89.160.20.5";

struct Setup {
    redis: RedisServer,
    _app: FlaskApp,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

/// Redis + app + proxy trusting loopback as a load balancer (so the test chooses the client
/// address) with the generated GeoIP database.
fn setup() -> Setup {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let dir = tempfile::tempdir().unwrap();
    let mmdb = make_mmdb(dir.path());
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.extra_toml = "[analytics]\nbatch_max_delay_ms = 5";
    opts.env =
        vec![("STING_ANALYTICS_TOKEN", TOKEN.to_owned()), ("STING_TRUSTED_PROXIES", "127.0.0.0/8".into()), ("GEOIP_DATABASE", mmdb.display().to_string())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    Setup { redis, _app: app, proxy, _dir: dir }
}

fn sid(cookie: &str) -> String {
    cookie.rsplit_once('.').unwrap().0.to_owned()
}

fn get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().get(proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn api(proxy: &Proxy, path: &str) -> (u16, Value) {
    get(proxy, &format!("/api/analytics/{path}"), &[("authorization", &format!("Bearer {TOKEN}"))])
}

fn ok(proxy: &Proxy, path: &str) -> Value {
    let (status, body) = api(proxy, path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn login_as(proxy: &Proxy, user: &str, ua: &str, ip: &str) -> String {
    let r = client()
        .post(proxy.url("/login"))
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .json(&json!({"user_id": user, "email": format!("{user}@example.com"), "role": "user"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    set_cookie_value(&r, "session").unwrap()
}

fn browse(proxy: &Proxy, cookie: &str, path: &str, ua: &str, ip: &str) {
    let r = client()
        .get(proxy.url(path))
        .header("accept", "text/html")
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .header("cookie", format!("session={cookie}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
}

/// `(weekday 0 = Monday, hour)` of an RFC 3339 time, UTC.
fn weekday_hour(iso: &str) -> (usize, usize) {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::parse_from_rfc3339(iso).unwrap().to_utc();
    (t.weekday().num_days_from_monday() as usize, t.hour() as usize)
}

fn seconds_between(from: &Value, to: &Value) -> i64 {
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp_millis();
    (t(to) - t(from)) / 1000
}

/// One user signs in from Chrome in GB and from Firefox in SE: every aggregate counts exactly
/// the signed-in requests sent (the logins themselves carry no user yet), the hours match the
/// replay timelines' own timestamps, the median matches the session list's times, and the
/// sessions across devices say which device and country each session used.
#[test]
fn behavior_patterns_report_the_scenario_exactly() {
    let s = setup();
    let p = &s.proxy;
    let chrome = login_as(p, "zoe", CHROME, GB);
    for path in ["/", "/echo/items/1", "/", "/"] {
        browse(p, &chrome, path, CHROME, GB);
    }
    // Session lengths of at least a second and (almost surely) under one.
    std::thread::sleep(Duration::from_millis(1100));
    browse(p, &chrome, "/echo/a", CHROME, GB);
    let firefox = login_as(p, "zoe", FIREFOX, SE);
    browse(p, &firefox, "/", FIREFOX, SE);
    browse(p, &firefox, "/echo/items/3", FIREFOX, SE);
    wait_until("7 signed-in requests counted", Duration::from_secs(15), || api(p, "users/zoe/behavior-patterns").1["requests"] == 7);
    let b = ok(p, "users/zoe/behavior-patterns");

    assert_eq!(b["user_id"], "zoe");
    assert_eq!(b["routes"], json!([{"name": "/", "count": 4}, {"name": "/echo/items/:id", "count": 2}, {"name": "/echo/a", "count": 1}]), "{b}");
    assert_eq!(
        b["devices"],
        json!([
            {"name": "Chrome|Linux|desktop", "browser": "Chrome", "os": "Linux", "type": "desktop", "count": 5},
            {"name": "Firefox|Linux|desktop", "browser": "Firefox", "os": "Linux", "type": "desktop", "count": 2},
        ]),
        "{b}"
    );
    assert_eq!(b["countries"], json!([{"name": "GB", "count": 5}, {"name": "SE", "count": 2}]), "{b}");

    // The hours, cell by cell, from the two sessions' replay timelines (every signed-in request,
    // with its own timestamp).
    let mut expected = [[0i64; 24]; 7];
    let mut replayed = 0;
    for cookie in [&chrome, &firefox] {
        for r in ok(p, &format!("sessions/replay/{}", sid(cookie)))["requests"].as_array().unwrap() {
            let (d, h) = weekday_hour(r["timestamp"].as_str().unwrap());
            expected[d][h] += 1;
            replayed += 1;
        }
    }
    assert_eq!(replayed, 7);
    assert_eq!(b["hours"]["matrix"], json!(expected), "{b}");
    assert_eq!((b["hours"]["timezone"].as_str(), b["hours"]["weekdays"][0].as_str()), (Some("UTC"), Some("Mon")));

    // Sessions across devices: newest first, each with the device and country it was used from.
    let list = ok(p, "users/zoe/sessions");
    let sessions = b["sessions"].as_array().unwrap();
    let seen: Vec<Value> =
        sessions.iter().map(|x| json!([x["session_id"], x["device"]["browser"], x["location"]["country"], x["location"]["city"], x["end_time"]])).collect();
    assert_eq!(seen, [json!([sid(&firefox), "Firefox", "SE", "Linköping", null]), json!([sid(&chrome), "Chrome", "GB", "London", null])]);
    assert_eq!((b["sessions_total"].as_i64(), b["sessions_measured"].as_i64()), (Some(2), Some(2)));
    // Lengths so far, from the session list's own times; the median of two is their mean.
    let mut lengths = Vec::new();
    for (x, y) in sessions.iter().zip(list["sessions"].as_array().unwrap()) {
        assert_eq!(x["session_id"], y["session_id"]);
        assert_eq!((x["start_time"].clone(), x["last_activity"].clone()), (y["start_time"].clone(), y["last_activity"].clone()));
        let length = seconds_between(&y["start_time"], &y["last_activity"]);
        assert_eq!(x["length_seconds"], length, "{x}");
        lengths.push(length);
    }
    assert!(lengths[1] >= 1, "the Chrome session lasted over a second: {lengths:?}");
    assert_eq!(b["median_session_seconds"].as_f64(), Some((lengths[0] + lengths[1]) as f64 / 2.0), "{b}");
    // First seen: the first login; last seen: the newest activity.
    assert_eq!(b["first_seen"], list["sessions"][1]["start_time"]);
    assert_eq!(b["last_seen"], list["sessions"][0]["last_activity"]);

    // An ended session counts by its duration; `limit` cuts the list, not the median.
    client().post(p.url("/logout")).header("cookie", format!("session={firefox}")).send().unwrap();
    wait_until("the Firefox session ended", Duration::from_secs(15), || api(p, "users/zoe/behavior-patterns").1["sessions"][0]["end_reason"] == "logout");
    let b = ok(p, "users/zoe/behavior-patterns?limit=1");
    assert_eq!(b["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(b["sessions"][0]["length_seconds"], b["sessions"][0]["duration"]);
    assert_eq!(b["sessions_measured"], 2);
    // The logout request itself was a signed-in request on a known route.
    assert_eq!(b["requests"], 8);
    assert!(b["routes"].as_array().unwrap().contains(&json!({"name": "/logout", "count": 1})), "{b}");
}

/// Unknown users are 404; the endpoint follows the API's access rules; bad limits are 400.
#[test]
fn behavior_patterns_access_and_errors() {
    let s = setup();
    let p = &s.proxy;
    let user = login_as(p, "plain", CHROME, GB);
    browse(p, &user, "/", CHROME, GB);
    wait_until("plain's request counted", Duration::from_secs(15), || api(p, "users/plain/behavior-patterns").0 == 200);
    let (status, body) = api(p, "users/nobody/behavior-patterns");
    assert_eq!((status, body["error"].as_str(), body["message"].as_str()), (404, Some("not_found"), Some("no such user")));
    let path = "/api/analytics/users/plain/behavior-patterns";
    assert_eq!(get(p, path, &[]).0, 401);
    assert_eq!(get(p, "/api/analytics/sessions/online", &[]).0, 401);
    let (status, body) = get(p, path, &[("cookie", &format!("session={user}"))]);
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "a user may not read even their own patterns");
    let admin = login(&p.url(""), "boss", "admin");
    assert_eq!(get(p, path, &[("cookie", &format!("session={admin}"))]).1["requests"], 1, "an admin session reads it");
    for q in ["limit=0", "limit=501"] {
        let (status, body) = api(p, &format!("users/plain/behavior-patterns?{q}"));
        assert_eq!((status, body["parameter"].as_str()), (400, Some("limit")), "{q}");
    }
    assert_eq!(api(p, "sessions/online?limit=501").1["parameter"], "limit");
    let r = client().post(p.url(path)).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), 405);
}

/// Who is online: signed-in active sessions only, newest activity first, with email, device,
/// place and the route of the newest request; a logout or a revocation takes a session off.
#[test]
fn online_lists_signed_in_active_sessions_newest_first() {
    let s = setup();
    let p = &s.proxy;
    let alice = login_as(p, "alice", CHROME, GB);
    browse(p, &alice, "/", CHROME, GB);
    browse(p, &alice, "/echo/items/5", CHROME, GB);
    let carol = login_as(p, "carol", CHROME, GB);
    browse(p, &carol, "/", CHROME, GB);
    // An anonymous session, active (two requests) but without a user.
    let anon = client().get(format!("{}/anon", s._app.url())).send().unwrap();
    let anon = set_cookie_value(&anon, "session").unwrap();
    for _ in 0..2 {
        let r = client().get(p.url("/")).header("cookie", format!("session={anon}")).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    std::thread::sleep(Duration::from_millis(20));
    let bob = login_as(p, "bob", FIREFOX, SE);
    browse(p, &bob, "/echo/b", FIREFOX, SE);
    client().post(p.url("/logout")).header("cookie", format!("session={carol}")).send().unwrap();
    wait_until("the scenario recorded", Duration::from_secs(15), || {
        api(p, &format!("sessions/{}", sid(&carol))).1["end_reason"] == "logout"
            && api(p, "sessions/active").1["active_sessions"] == 3
            && api(p, &format!("sessions/{}", sid(&bob))).1["page_views"] == 1
    });

    let online = ok(p, "sessions/online");
    let rows: Vec<Value> = online["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| json!([x["user_id"], x["email"], x["session_id"], x["device"]["browser"], x["location"]["country"], x["location"]["city"], x["last_route"]]))
        .collect();
    assert_eq!(
        rows,
        [
            json!(["bob", "bob@example.com", sid(&bob), "Firefox", "SE", "Linköping", "/echo/b"]),
            json!(["alice", "alice@example.com", sid(&alice), "Chrome", "GB", "London", "/echo/items/:id"]),
        ],
        "{online}"
    );
    assert_eq!(online["total"], 2, "carol's ended session left the index: {online}");
    let sessions = online["sessions"].as_array().unwrap();
    assert!(sessions[0]["last_activity"].as_str() > sessions[1]["last_activity"].as_str());
    assert_eq!(sessions[1]["last_activity"], ok(p, &format!("sessions/{}", sid(&alice)))["last_activity"]);
    assert_eq!(sessions[1]["last_method"], "GET");
    let one = ok(p, "sessions/online?limit=1");
    assert_eq!(one["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(one["sessions"][0]["user_id"], "bob");

    // A request from alice makes her the newest again (and shows her signed in).
    assert_eq!(seen(&echo(&p.url("/echo"), Some(&alice), &[]), "x-user-id"), Some("alice"));
    browse(p, &alice, "/echo/again", CHROME, GB);
    wait_until("alice first", Duration::from_secs(15), || api(p, "sessions/online").1["sessions"][0]["last_route"] == "/echo/again");

    // Revoked: off the list, and her cookie is anonymous from now on.
    let r = client().delete(p.url(&format!("/api/analytics/sessions/{}", sid(&alice)))).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), 200);
    let users: Vec<Value> = ok(p, "sessions/online")["sessions"].as_array().unwrap().iter().map(|x| x["user_id"].clone()).collect();
    assert_eq!(users, [json!("bob")]);
    let echoed = echo(&p.url("/echo"), Some(&alice), &[]);
    assert_eq!(seen(&echoed, "x-user-id"), None, "{echoed}");
    let zcard: i64 = redis::cmd("ZCARD").arg("sting:active:online").query(&mut s.redis.conn()).unwrap();
    assert_eq!(zcard, 1);
    let ttl: i64 = redis::cmd("TTL").arg("sting:active:online").query(&mut s.redis.conn()).unwrap();
    assert!(ttl > 29 * 86_400 && ttl <= 30 * 86_400, "{ttl}");
    let mut per_user: BTreeMap<String, i64> = BTreeMap::new();
    for u in ["alice", "bob", "carol"] {
        let ttl: i64 = redis::cmd("TTL").arg(format!("sting:analytics:user:{u}:activity")).query(&mut s.redis.conn()).unwrap();
        per_user.insert(u.into(), ttl);
    }
    assert!(per_user.values().all(|t| *t > 29 * 86_400 && *t <= 30 * 86_400), "{per_user:?}");
}
