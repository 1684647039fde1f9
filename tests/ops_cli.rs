//! The ops CLI (`sessions`, `stats`, `top`, `cleanup`, `validate`) against a live scenario:
//! its `--json` output equals the analytics API's answer, its tables carry the same numbers,
//! `cleanup` ends what the sweep would, and `validate --fix` repairs a corrupted keyspace.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN: &str = "ops-cli-analytics-token-0123";

struct Scenario {
    redis: RedisServer,
    _app: FlaskApp,
    proxy: Proxy,
    alice: String,
    bob: String,
    carol: String,
}

fn sid(cookie: &str) -> String {
    cookie.rsplit_once('.').unwrap().0.to_owned()
}

fn api(proxy: &Proxy, path: &str) -> Value {
    let r = client().get(proxy.url(path)).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().unwrap()
}

fn view(proxy: &Proxy, cookie: &str, path: &str) {
    let r = client().get(proxy.url(path)).header("cookie", format!("session={cookie}")).header("accept", "text/html").send().unwrap();
    assert_eq!(r.status(), 200);
}

fn page_views(redis: &RedisServer, sid: &str) -> Option<i64> {
    redis::cmd("HGET").arg(format!("sting:analytics:session:{sid}")).arg("page_views").query(&mut redis.conn()).unwrap()
}

/// alice: 3 page views; bob: 2 then logs out; carol: 1. The sweep and keyspace listener are off,
/// so only the commands under test end sessions.
fn scenario() -> Scenario {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.extra_toml = "[analytics]\nbatch_max_delay_ms = 5\nkeyspace_notifications = false\nsweep_interval_seconds = 3600";
    opts.env = vec![("STING_ANALYTICS_TOKEN", TOKEN.to_owned())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    let base = proxy.url("");
    let (alice, bob, carol) = (login(&base, "alice", "user"), login(&base, "bob", "user"), login(&base, "carol", "user"));
    for p in ["/", "/echo/items/1", "/echo/items/2"] {
        view(&proxy, &alice, p);
    }
    view(&proxy, &bob, "/");
    view(&proxy, &bob, "/echo/b");
    view(&proxy, &carol, "/");
    for (c, n) in [(&alice, 3), (&bob, 2), (&carol, 1)] {
        wait_until("page views recorded", Duration::from_secs(15), || page_views(&redis, &sid(c)) == Some(n));
    }
    client().post(proxy.url("/logout")).header("cookie", format!("session={bob}")).send().unwrap();
    let bob_sid = sid(&bob);
    wait_until("bob's session ended", Duration::from_secs(15), || api(&proxy, &format!("/api/analytics/sessions/{bob_sid}"))["end_reason"] == "logout");
    Scenario { redis, _app: app, proxy, alice, bob, carol }
}

fn json_of(proxy: &Proxy, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = proxy.cli(&all);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

fn human(proxy: &Proxy, args: &[&str]) -> String {
    let (code, out, err) = proxy.cli(args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

fn without(mut v: Value, fields: &[&str]) -> Value {
    for f in fields {
        v.as_object_mut().unwrap().remove(*f);
    }
    v
}

/// Every read command prints what the API answers, as JSON and as a table.
#[test]
fn commands_report_what_the_api_reports() {
    let s = scenario();
    let p = &s.proxy;

    let active = json_of(p, &["sessions", "active"]);
    assert_eq!(active["active_sessions"], 2);
    let mut listed: Vec<String> = active["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap().to_owned()).collect();
    listed.sort();
    let mut expected = vec![sid(&s.alice), sid(&s.carol)];
    expected.sort();
    assert_eq!(listed, expected);
    let out = human(p, &["sessions", "active"]);
    assert!(out.starts_with("Active sessions: 2"), "{out}");
    let (code, _, err) = p.cli(&["sessions", "active", "--limit", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--limit"), "{err}");
    assert!(out.contains(&sid(&s.alice)) && out.contains("SESSION") && out.contains("PAGE VIEWS"), "{out}");

    assert_eq!(json_of(p, &["sessions", "list"]), api(p, "/api/analytics/sessions?limit=20"));
    assert_eq!(json_of(p, &["sessions", "list"])["total_count"], 3);
    assert_eq!(json_of(p, &["sessions", "list", "--user", "alice", "--limit", "5"]), api(p, "/api/analytics/users/alice/sessions?limit=5"));
    let out = human(p, &["sessions", "list", "--user", "bob"]);
    assert!(out.contains("Sessions of user bob: showing 1 of 1") && out.contains("logout"), "{out}");

    let bob_sid = sid(&s.bob);
    assert_eq!(json_of(p, &["sessions", "show", &bob_sid]), api(p, &format!("/api/analytics/sessions/{bob_sid}")));
    let out = human(p, &["sessions", "show", &sid(&s.alice)]);
    assert!(out.contains("page views:") && out.contains("/echo/items/:id") && out.contains("Recent actions"), "{out}");
    // Flask-Session ids are URL-safe base64 and may start with '-': taken as the id, not a flag.
    for missing in ["no-such-session", "-no-such-session"] {
        let (code, _, err) = p.cli(&["sessions", "show", missing]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("no such session"), "{missing}: {err}");
    }
    let (code, out, err) = p.cli(&["sessions", "list", "--user=-nobody", "--limit", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Sessions of user -nobody"), "{out}");

    let stats = json_of(p, &["stats"]);
    assert_eq!(without(stats.clone(), &["timestamp"]), without(api(p, "/api/analytics/sessions/stats"), &["timestamp"]));
    assert_eq!((stats["total_sessions_today"].as_i64(), stats["page_views_today"].as_i64()), (Some(3), Some(6)));
    let out = human(p, &["stats"]);
    assert!(out.lines().any(|l| l.starts_with("page views:") && l.trim_end().ends_with(" 6")), "{out}");
    let (code, _, err) = p.cli(&["stats", "--date", "yesterday"]);
    assert_eq!(code, 1);
    assert!(err.contains("--date"), "{err}");

    assert_eq!(json_of(p, &["top", "pages"]), api(p, "/api/analytics/pages/top?period=day&limit=10"));
    let out = human(p, &["top", "pages"]);
    let row = out.lines().find(|l| l.starts_with("/echo/items/:id")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["/echo/items/:id", "2", "1"], "page, views, sessions");
    assert_eq!(json_of(p, &["top", "devices"]), api(p, "/api/analytics/devices?period=day&limit=10"));
    assert_eq!(json_of(p, &["top", "countries", "--limit", "3"]), api(p, "/api/analytics/geo?period=day&limit=3"));
    assert!(human(p, &["top", "countries"]).contains("unknown"));
}

/// `cleanup` ends the active sessions whose app session is gone, once.
#[test]
fn cleanup_ends_sessions_whose_app_session_is_gone() {
    let s = scenario();
    let carol_sid = sid(&s.carol);
    // A one-request session (a light record, not in the active set) whose app key is gone too.
    let r = client().get(format!("{}/anon", s._app.url())).send().unwrap();
    let visitor = sid(&set_cookie_value(&r, "session").unwrap());
    view(&s.proxy, &set_cookie_value(&r, "session").unwrap(), "/");
    let light = format!("sting:analytics:light:{}", chrono::Utc::now().format("%Y-%m-%d"));
    wait_until("the light record", Duration::from_secs(15), || redis::cmd("HEXISTS").arg(&light).arg(&visitor).query(&mut s.redis.conn()).unwrap());
    for gone in [&carol_sid, &visitor] {
        let _: () = redis::cmd("DEL").arg(format!("sting:session:{gone}")).query(&mut s.redis.conn()).unwrap();
    }
    let dry = json_of(&s.proxy, &["cleanup", "--dry-run"]);
    assert_eq!(dry, serde_json::json!({"checked": 3, "ended": 2, "expired": 2, "idle": 0, "dry_run": true, "held_back": 0}));
    assert_eq!(api(&s.proxy, "/api/analytics/sessions/active")["active_sessions"], 2, "a dry run changes nothing");
    let out = json_of(&s.proxy, &["cleanup"]);
    assert_eq!(out, serde_json::json!({"checked": 3, "ended": 2, "expired": 2, "idle": 0, "dry_run": false, "held_back": 0}));
    assert_eq!(api(&s.proxy, "/api/analytics/sessions/active")["active_sessions"], 1);
    assert_eq!(api(&s.proxy, &format!("/api/analytics/sessions/{carol_sid}"))["end_reason"], "expired");
    assert_eq!(api(&s.proxy, "/api/analytics/sessions/stats")["sessions_ended_today"], 3);
    let again = human(&s.proxy, &["cleanup"]);
    assert!(again.contains("Checked 1 sessions: ended 0"), "{again}");
}

/// A wrong `session.key_prefix` makes every app session look gone: `cleanup` holds them back
/// (exit 1, says why) instead of ending every live session.
#[test]
fn cleanup_holds_back_when_every_app_session_looks_gone() {
    let s = scenario();
    for user in ["dan", "eve"] {
        let cookie = login(&s.proxy.url(""), user, "user");
        view(&s.proxy, &cookie, "/");
    }
    wait_until("4 active sessions", Duration::from_secs(15), || api(&s.proxy, "/api/analytics/sessions/active")["active_sessions"] == 4);
    let conf = std::fs::read_to_string(s.proxy.dir.path().join("sting-proxy.toml")).unwrap();
    let wrong = s.proxy.dir.path().join("wrong-prefix.toml");
    std::fs::write(&wrong, conf.replace("[session]\n", "[session]\nkey_prefix = \"other:\"\n")).unwrap();
    let (code, out, err) = s.proxy.cli_with_config(&["cleanup"], &wrong);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("Held back 4") && out.contains("key_prefix"), "{out}");
    assert_eq!(api(&s.proxy, "/api/analytics/sessions/active")["active_sessions"], 4, "nothing was ended");
}

/// `validate` finds each kind of corruption; `--fix` repairs it without touching records or
/// counters; a second run is clean.
#[test]
fn validate_fix_repairs_a_corrupted_keyspace() {
    let s = scenario();
    let p = &s.proxy;
    let clean = json_of(p, &["validate"]);
    assert_eq!(clean["problems"], 0, "{clean}");
    let before = api(p, "/api/analytics/sessions/stats");

    let mut c = s.redis.conn();
    // The day the scenario was counted in (not "now": the test may cross midnight).
    let today = before["date"].as_str().unwrap().to_owned();
    let alice_sid = sid(&s.alice);
    let bob_sid = sid(&s.bob);
    let _: () = redis::pipe()
        .sadd("sting:active:sessions", &["ghost-1", "ghost-2"])
        .ignore()
        .sadd("sting:active:sessions", &bob_sid)
        .ignore() // ended, yet marked active
        .sadd("sting:active:users:alice", &["ghost-3", bob_sid.as_str()])
        .ignore() // missing; another user's
        .zadd("sting:analytics:user:alice:sessions", "ghost-4", 1)
        .ignore()
        .zadd("sting:analytics:sessions:recent", "ghost-5", 1)
        .ignore()
        .zadd("sting:active:online", &bob_sid, 1)
        .ignore() // ended, yet listed as online
        .persist(format!("sting:analytics:daily:{today}"))
        .ignore()
        .persist(format!("sting:analytics:session:{alice_sid}"))
        .ignore()
        .set("sting:analytics:batch:stray", 1)
        .ignore()
        // Configuration, kept without a TTL on purpose: not a problem, and --fix leaves it.
        .set("sting:security:alert_rules", "[]")
        .ignore()
        // Written under a longer retention (say, before it was lowered): outlives today's.
        .expire(format!("sting:analytics:session:{bob_sid}"), 90 * 86_400)
        .ignore()
        .query(&mut c)
        .unwrap();

    let (code, out, err) = p.cli(&["validate", "--json"]);
    assert_eq!(code, 1, "problems found and not fixed: {out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let found = |r: &Value, check: &str| r["checks"].as_array().unwrap().iter().find(|f| f["check"] == check).unwrap()["found"].as_i64().unwrap();
    assert_eq!(found(&report, "active_without_record"), 3, "{report}");
    assert_eq!(found(&report, "user_active_dangling"), 2, "{report}");
    assert_eq!(found(&report, "index_dangling"), 2, "{report}");
    assert_eq!(found(&report, "no_ttl"), 3, "{report}");
    assert_eq!(found(&report, "online_dangling"), 1, "{report}");
    assert_eq!(found(&report, "ttl_over_retention"), 1, "{report}");
    assert_eq!(report["problems"], 12);
    let (code, table, _) = p.cli(&["validate"]);
    assert_eq!(code, 1);
    assert!(table.contains("active_without_record") && table.contains("validate --fix"), "{table}");

    let fixed = json_of(p, &["validate", "--fix"]);
    assert_eq!((fixed["problems"].as_i64(), fixed["fixed"].as_i64()), (Some(12), Some(12)), "{fixed}");
    assert_eq!(json_of(p, &["validate"])["problems"], 0);

    let ttl = |k: &str| redis::cmd("TTL").arg(k).query::<i64>(&mut s.redis.conn()).unwrap();
    assert!(ttl(&format!("sting:analytics:daily:{today}")) > 29 * 86_400);
    assert!((1..=86_400).contains(&ttl("sting:analytics:batch:stray")));
    assert_eq!(ttl("sting:security:alert_rules"), -1, "alert rules never expire");
    assert!((1..=30 * 86_400).contains(&ttl(&format!("sting:analytics:session:{bob_sid}"))), "shortened to the retention");
    // Records and counters are kept; only the dangling references went.
    assert_eq!(without(api(p, "/api/analytics/sessions/stats"), &["timestamp"]), without(before, &["timestamp"]));
    assert_eq!(api(p, &format!("/api/analytics/sessions/{bob_sid}"))["end_reason"], "logout");
    let members: Vec<String> = redis::cmd("SMEMBERS").arg("sting:active:sessions").query(&mut s.redis.conn()).unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    let online: Vec<String> = redis::cmd("ZRANGE").arg("sting:active:online").arg(0).arg(-1).query(&mut s.redis.conn()).unwrap();
    assert_eq!(online.len(), 2, "alice and carol stay, bob went: {online:?}");
    assert!(!online.contains(&bob_sid));
}

/// `behavior USER` and `online` print what their endpoints answer, as JSON and as tables.
#[test]
fn behavior_and_online_commands() {
    let s = scenario();
    let p = &s.proxy;
    let alice = json_of(p, &["behavior", "alice"]);
    assert_eq!(alice, api(p, "/api/analytics/users/alice/behavior-patterns?limit=20"));
    assert_eq!(alice["routes"], serde_json::json!([{"name": "/echo/items/:id", "count": 2}, {"name": "/", "count": 1}]));
    assert_eq!(alice["sessions"][0]["session_id"], sid(&s.alice).as_str());
    let out = human(p, &["behavior", "alice"]);
    let row = out.lines().find(|l| l.starts_with("/echo/items/:id")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["/echo/items/:id", "2"], "route, requests");
    assert!(out.contains("requests:") && out.contains("Usual hours") && out.contains("Sessions across devices") && out.contains(&sid(&s.alice)), "{out}");
    let bob = json_of(p, &["behavior", "bob", "--limit", "1"]);
    assert_eq!((bob["sessions"][0]["end_reason"].as_str(), bob["sessions_measured"].as_i64()), (Some("logout"), Some(1)));
    let (code, _, err) = p.cli(&["behavior", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such user"), "{err}");

    let online = json_of(p, &["online"]);
    assert_eq!(without(online.clone(), &["timestamp"]), without(api(p, "/api/analytics/sessions/online?limit=50"), &["timestamp"]));
    let users: Vec<&str> = online["sessions"].as_array().unwrap().iter().map(|x| x["user_id"].as_str().unwrap()).collect();
    assert_eq!(users, ["carol", "alice"], "newest activity first; bob logged out");
    let out = human(p, &["online"]);
    assert!(out.starts_with("Online: 2 signed-in session(s)"), "{out}");
    let row = out.lines().find(|l| l.starts_with("alice ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("alice@example.com") && row.contains(&sid(&s.alice)) && row.trim_end().ends_with("/echo/items/:id"), "{row}");
    let (code, _, err) = p.cli(&["online", "--limit", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--limit"), "{err}");
}
