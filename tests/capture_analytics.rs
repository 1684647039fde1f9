//! Analytics capture end to end: real Redis, the real Flask app, real User-Agents, a generated
//! GeoIP database, and the proxy binary. Counts are checked exactly.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use redis::Commands;

const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

fn session_record(redis: &RedisServer, sid: &str) -> HashMap<String, String> {
    redis.conn().hgetall(format!("sting:analytics:session:{sid}")).unwrap()
}

/// Polls until the session record's `field` equals `want`.
fn wait_field(redis: &RedisServer, key: &str, field: &str, want: &str) {
    let start = std::time::Instant::now();
    loop {
        let got: Option<String> = redis.conn().hget(key, field).unwrap();
        if got.as_deref() == Some(want) {
            return;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let all: HashMap<String, String> = redis.conn().hgetall(key).unwrap();
            panic!("{key} {field}: wanted {want}, have {got:?}; record {all:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A page-view GET through the proxy with a session cookie, a UA and a forwarded client IP.
fn browse(proxy: &Proxy, path: &str, cookie: Option<&str>, ua: &str, ip: &str) -> u16 {
    let mut req = client().get(proxy.url(path)).header("accept", "text/html").header("user-agent", ua).header("x-forwarded-for", ip);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("session={c}"));
    }
    req.send().unwrap().status().as_u16()
}

fn login_as(proxy: &Proxy, user: &str, ua: &str, ip: &str) -> String {
    let r = client()
        .post(proxy.url("/login"))
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .json(&serde_json::json!({"user_id": user, "email": format!("{user}@example.com"), "role": "user"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    set_cookie_value(&r, "session").unwrap()
}

struct Setup {
    redis: RedisServer,
    app: FlaskApp,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

/// Redis + app + proxy trusting loopback as a load balancer (so tests choose the client IP),
/// with the generated GeoIP database.
fn setup(analytics_toml: &str) -> Setup {
    setup_with(analytics_toml, "")
}

/// [`setup`] with extra `[session]` settings.
fn setup_with(analytics_toml: &str, session_toml: &'static str) -> Setup {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let dir = tempfile::tempdir().unwrap();
    let mmdb = make_mmdb(dir.path());
    let extra = format!("[analytics]\nbatch_max_delay_ms = 20\n{analytics_toml}\n");
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.session_toml = session_toml;
    opts.extra_toml = Box::leak(extra.into_boxed_str());
    opts.env = vec![("STING_TRUSTED_PROXIES", "127.0.0.0/8".into()), ("GEOIP_DATABASE", mmdb.display().to_string())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    Setup { redis, app, proxy, _dir: dir }
}

/// Page views, hits, device, geo, route templates and the user's history are recorded.
#[test]
fn page_views_devices_geo_and_templates_are_recorded() {
    let s = setup("");
    let cookie = login_as(&s.proxy, "alice", CHROME_MAC, "81.2.69.7");
    let sid = sid_of(&cookie);
    for i in 0..3 {
        assert_eq!(browse(&s.proxy, &format!("/echo/users/{}/docs/{}", 100 + i, 7), Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    }
    assert_eq!(browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    // A data fetch and an asset: hits, not page views.
    client().get(s.proxy.url("/api/data")).header("cookie", format!("session={cookie}")).header("accept", "application/json").send().unwrap();
    client().get(s.proxy.url("/static/app.js")).header("cookie", format!("session={cookie}")).send().unwrap();

    let key = format!("sting:analytics:session:{sid}");
    // 7 hits: the login POST belongs to the session it created.
    wait_field(&s.redis, &key, "hits", "7");
    let rec = session_record(&s.redis, &sid);
    assert_eq!(rec["user_id"], "alice");
    assert_eq!(rec["page_views"], "4");
    assert_eq!(rec["browser"], "Chrome");
    assert_eq!(rec["os"], "Mac OSX");
    assert_eq!(rec["device"], "desktop");
    assert_eq!(rec["country"], "GB");
    assert_eq!(rec["city"], "London");
    assert_eq!(rec["first_ip"], "81.2.69.7");
    assert_eq!(rec["ip"], "127.0.0.1", "the latest address: the last two requests came direct");

    let day = today();
    let mut c = s.redis.conn();
    let pages: HashMap<String, i64> = c.zrange_withscores(format!("sting:analytics:daily:{day}:pages"), 0, -1).unwrap();
    assert_eq!(pages.get("/echo/users/:id/docs/:id"), Some(&3));
    assert_eq!(pages.get("/"), Some(&1));
    let daily: HashMap<String, i64> = c.hgetall(format!("sting:analytics:daily:{day}")).unwrap();
    assert_eq!(daily["page_views"], 4);
    assert_eq!(daily["hits"], 7);
    assert_eq!(rec["auth_source"], "flask-session");
    assert_eq!(daily["sessions_started"], 1);
    let history: Vec<String> = c.zrange("sting:analytics:user:alice:sessions", 0, -1).unwrap();
    assert_eq!(history, vec![sid.clone()]);
    assert!(c.sismember::<_, _, bool>("sting:active:sessions", &sid).unwrap());
    assert!(c.sismember::<_, _, bool>("sting:active:users:alice", &sid).unwrap());
    let actions: Vec<String> = c.lrange(format!("sting:analytics:session:{sid}:actions"), 0, -1).unwrap();
    let parsed: Vec<serde_json::Value> = actions.iter().map(|a| serde_json::from_str(a).unwrap()).collect();
    assert_eq!(parsed.iter().filter(|a| a["action"] == "page_view").count(), 4);
    assert!(parsed.iter().any(|a| a["action"] == "login"));
    let users: i64 = redis::cmd("PFCOUNT").arg(format!("sting:analytics:daily:{day}:users")).query(&mut c).unwrap();
    assert_eq!(users, 1);
}

/// Real UAs land in the right device classes, and bots are counted apart.
#[test]
fn devices_are_classified_from_real_user_agents() {
    let s = setup("");
    for (ua, ip) in [(CHROME_MAC, "81.2.69.1"), (SAFARI_IPHONE, "89.160.20.5"), (FIREFOX_LINUX, "203.0.113.9"), (GOOGLEBOT, "198.51.100.3")] {
        assert_eq!(browse(&s.proxy, "/", None, ua, ip), 200);
    }
    let day = today();
    let key = format!("sting:analytics:daily:{day}");
    wait_field(&s.redis, &key, "page_views", "4");
    let mut c = s.redis.conn();
    let devices: HashMap<String, i64> = c.zrange_withscores(format!("{key}:devices"), 0, -1).unwrap();
    assert_eq!(devices, HashMap::from([("desktop".into(), 2), ("mobile".into(), 1), ("bot".into(), 1)]));
    let browsers: HashMap<String, i64> = c.zrange_withscores(format!("{key}:browsers"), 0, -1).unwrap();
    assert_eq!(browsers.get("Firefox"), Some(&1));
    assert_eq!(browsers.get("Googlebot"), Some(&1));
    let countries: HashMap<String, i64> = c.zrange_withscores(format!("{key}:countries"), 0, -1).unwrap();
    assert_eq!(countries, HashMap::from([("GB".into(), 1), ("SE".into(), 1), ("DE".into(), 1), ("US".into(), 1)]));
    let bot_views: i64 = c.hget(&key, "bot_page_views").unwrap();
    assert_eq!(bot_views, 1);
}

/// Bot names are chosen by the client: a day's `browsers` breakdown keeps the first
/// MAX_BOT_NAMES_PER_DAY of them and counts the rest under "other bot", losing no page view.
#[test]
fn a_client_cycling_bot_names_cannot_grow_the_browsers_breakdown() {
    let s = setup("");
    let extra = 30;
    let n = sting_proxy::capture::device::MAX_BOT_NAMES_PER_DAY + extra;
    for i in 0..n {
        assert_eq!(browse(&s.proxy, "/", None, &format!("scanner{i}bot/1.0"), "198.51.100.3"), 200);
    }
    let key = format!("sting:analytics:daily:{}", today());
    wait_field(&s.redis, &key, "page_views", &n.to_string());
    let mut c = s.redis.conn();
    let browsers: HashMap<String, i64> = c.zrange_withscores(format!("{key}:browsers"), 0, -1).unwrap();
    assert_eq!(browsers.len(), sting_proxy::capture::device::MAX_BOT_NAMES_PER_DAY + 1, "{browsers:?}");
    assert_eq!(browsers.get(sting_proxy::capture::device::OTHER_BOT), Some(&(extra as i64)));
    assert_eq!(browsers.values().sum::<i64>(), n as i64, "every page view is still counted");
    let bot_views: i64 = c.hget(&key, "bot_page_views").unwrap();
    assert_eq!(bot_views, n as i64);
}

/// Logout (the app clearing its cookie) ends the session with its duration and leaves the
/// active sets.
#[test]
fn logout_ends_the_session_with_a_duration() {
    let s = setup("");
    let cookie = login_as(&s.proxy, "bob", FIREFOX_LINUX, "81.2.69.1");
    let sid = sid_of(&cookie);
    browse(&s.proxy, "/", Some(&cookie), FIREFOX_LINUX, "81.2.69.1");
    std::thread::sleep(Duration::from_millis(1100));
    let r = client().post(s.proxy.url("/logout")).header("cookie", format!("session={cookie}")).send().unwrap();
    assert_eq!(r.status(), 200);
    let key = format!("sting:analytics:session:{sid}");
    wait_field(&s.redis, &key, "end_reason", "logout");
    let rec = session_record(&s.redis, &sid);
    assert!(rec["duration"].parse::<i64>().unwrap() >= 1, "{rec:?}");
    let mut c = s.redis.conn();
    assert!(!c.sismember::<_, _, bool>("sting:active:sessions", &sid).unwrap());
    assert!(!c.sismember::<_, _, bool>("sting:active:users:bob", &sid).unwrap());
    let daily: HashMap<String, i64> = c.hgetall(format!("sting:analytics:daily:{}", today())).unwrap();
    assert_eq!(daily["sessions_ended"], 1);
    assert!(daily["duration_total_s"] >= 1);
}

/// Expiry of the app's session key ends the session at once via keyspace notifications.
#[test]
fn expiry_ends_the_session_via_keyspace_notifications() {
    let s = setup("");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("Egx").query(&mut s.redis.conn()).unwrap();
    let cookie = login_as(&s.proxy, "carol", CHROME_MAC, "81.2.69.1");
    let sid = sid_of(&cookie);
    browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.1");
    let key = format!("sting:analytics:session:{sid}");
    wait_field(&s.redis, &key, "page_views", "1");
    let _: () = s.redis.conn().pexpire(format!("sting:session:{sid}"), 100).unwrap();
    wait_field(&s.redis, &key, "end_reason", "expired");
    assert!(!s.redis.conn().sismember::<_, _, bool>("sting:active:sessions", &sid).unwrap());
}

/// Without notifications, the periodic sweep finds sessions whose app key is gone.
#[test]
fn sweep_ends_sessions_whose_app_key_is_gone() {
    let s = setup("keyspace_notifications = false\nsweep_interval_seconds = 1");
    let cookie = login_as(&s.proxy, "dave", CHROME_MAC, "81.2.69.1");
    let sid = sid_of(&cookie);
    browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.1");
    let key = format!("sting:analytics:session:{sid}");
    wait_field(&s.redis, &key, "page_views", "1");
    let _: () = s.redis.conn().del(format!("sting:session:{sid}")).unwrap();
    wait_field(&s.redis, &key, "end_reason", "expired");
}

/// Instances sharing Redis take turns to sweep: each interval one walks the active set and the
/// others skip it.
#[test]
fn instances_take_turns_to_sweep() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let opts = || ProxyOpts { extra_toml: "[analytics]\nbatch_max_delay_ms = 5\nsweep_interval_seconds = 1", ..ProxyOpts::new(&redis, app.url()) };
    let (a, b) = (Proxy::start(opts()), Proxy::start(opts()));
    a.wait_ready();
    b.wait_ready();
    let count = |outcome: &str| {
        let line = format!("sting_session_sweeps_total{{outcome=\"{outcome}\"}}");
        a.metric(&line) + b.metric(&line)
    };
    wait_until("three skipped turns", Duration::from_secs(20), || count("other_instance") >= 3.0);
    assert!(count("swept") >= 1.0, "someone swept");
    assert_eq!(count("failed"), 0.0);
}

/// Two proxy instances sharing one Redis, 8 clients on each × 250 page views, all on one
/// session: exactly 4000 page views, and the hourly and daily totals agree with the session's.
#[test]
fn counts_are_exact_across_two_instances() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let a = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nbatch_max_delay_ms = 5", ..ProxyOpts::new(&redis, app.url()) });
    let b = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nbatch_max_delay_ms = 5", ..ProxyOpts::new(&redis, app.url()) });
    a.wait_ready();
    b.wait_ready();
    let cookie = login(&a.url(""), "eve", "user");
    let sid = sid_of(&cookie);
    browse_concurrently(&[a.url("/"), b.url("/")], &cookie, 16, 250, |_| "sting-proxy-tests");
    let key = format!("sting:analytics:session:{sid}");
    wait_field(&redis, &key, "page_views", "4000");
    let mut c = redis.conn();
    let day: HashMap<String, i64> = c.hgetall(format!("sting:analytics:daily:{}", today())).unwrap();
    assert_eq!(day["page_views"], 4000);
    assert_eq!(day["sessions_started"], 1);
    let hourly_keys: Vec<String> = redis::cmd("KEYS").arg("sting:analytics:hourly:????-??-??T??").query(&mut c).unwrap();
    let hourly_sum: i64 = hourly_keys.iter().map(|k| c.hget::<_, _, Option<i64>>(k, "page_views").unwrap().unwrap_or(0)).sum();
    assert_eq!(hourly_sum, 4000);
    let rec = session_record(&redis, &sid);
    assert_eq!(rec["hits"], "4001", "4000 page views + the login POST that created the session");
    assert_eq!(rec["auth_source"], "flask-session");
}

/// Events that arrive while Redis is down are kept and written when it returns.
#[test]
fn redis_restart_loses_no_buffered_event() {
    let mut redis = RedisServer::start();
    let app_redis = RedisServer::start();
    let app = FlaskApp::start(&app_redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nbatch_max_delay_ms = 5", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    redis.stop();
    for _ in 0..50 {
        assert_eq!(client().get(proxy.url("/")).header("accept", "text/html").send().unwrap().status(), 200);
    }
    redis.restart();
    let key = format!("sting:analytics:daily:{}", today());
    wait_field(&redis, &key, "page_views", "50");
    let dropped = proxy.log().contains("dropped");
    assert!(!dropped, "{}", proxy.log());
}

/// SIGTERM flushes events still waiting for their batch.
#[test]
fn sigterm_flushes_buffered_events() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    // A batch would wait 60 s: only the shutdown flush can write these events in time.
    let mut proxy =
        Proxy::start(ProxyOpts { extra_toml: "[analytics]\nbatch_max_delay_ms = 60000\nbatch_max_events = 100000", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    for _ in 0..20 {
        client().get(proxy.url("/")).header("accept", "text/html").send().unwrap();
    }
    let status = proxy.terminate(Duration::from_secs(20));
    assert!(status.success());
    let views: Option<i64> = redis.conn().hget(format!("sting:analytics:daily:{}", today()), "page_views").unwrap();
    assert_eq!(views, Some(20));
}

/// With analytics off, nothing analytic is written.
#[test]
fn analytics_disabled_writes_nothing() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.env = vec![("ANALYTICS_ENABLED", "false".into())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "frank", "user");
    echo(&proxy.url("/echo"), Some(&cookie), &[]);
    std::thread::sleep(Duration::from_millis(300));
    let keys: Vec<String> = redis::cmd("KEYS").arg("sting:*").query(&mut redis.conn()).unwrap();
    assert!(keys.iter().all(|k| k.starts_with("sting:session:")), "{keys:?}");
}

/// After a scenario, every key in Redis matches a pattern documented in docs/redis-schema.md,
/// and every key the proxy wrote carries a TTL no longer than the retention.
#[test]
fn every_key_is_documented_and_expires() {
    let s = setup("");
    let cookie = login_as(&s.proxy, "grace", SAFARI_IPHONE, "89.160.20.5");
    browse(&s.proxy, "/echo/a/1", Some(&cookie), SAFARI_IPHONE, "89.160.20.5");
    client().post(s.proxy.url("/logout")).header("cookie", format!("session={cookie}")).send().unwrap();
    browse(&s.proxy, "/", None, GOOGLEBOT, "198.51.100.3");
    // A visitor the app gives a session and never sees again: a light record.
    client().get(s.proxy.url("/anon")).send().unwrap();
    wait_field(&s.redis, &format!("sting:analytics:session:{}", sid_of(&cookie)), "end_reason", "logout");
    wait_until("a light record", Duration::from_secs(15), || s.redis.conn().exists(format!("sting:analytics:light:{}", today())).unwrap());

    let doc = std::fs::read_to_string(repo_root().join("docs/redis-schema.md")).unwrap();
    let patterns: Vec<String> = doc.lines().filter(|l| l.starts_with("| `sting:")).map(|l| l.split('`').nth(1).unwrap().to_owned()).collect();
    assert!(patterns.len() >= 8, "{patterns:?}");
    let matches = |key: &str| patterns.iter().any(|p| pattern_matches(p, key));
    let mut c = s.redis.conn();
    let keys: Vec<String> = c.scan().unwrap().collect();
    assert!(keys.len() > 10);
    for key in &keys {
        assert!(matches(key), "undocumented key {key}; documented: {patterns:?}");
        if key.starts_with("sting:session:") {
            continue; // the app's own keys
        }
        let ttl: i64 = c.ttl(key).unwrap();
        assert!(ttl > 0 && ttl <= 30 * 86_400, "{key} has TTL {ttl}");
    }
}

/// `sting:analytics:session:{sid}` matches `sting:analytics:session:abc`: each `{...}` stands
/// for one or more characters other than `:`, anything else is literal.
fn pattern_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[u8], k: &[u8]) -> bool {
        match p.first() {
            None => k.is_empty(),
            Some(b'{') => {
                let close = p.iter().position(|c| *c == b'}').unwrap();
                let rest = &p[close + 1..];
                let span = k.iter().take_while(|c| **c != b':').count();
                (1..=span).any(|n| go(rest, &k[n..]))
            }
            Some(c) => k.first() == Some(c) && go(&p[1..], &k[1..]),
        }
    }
    go(pattern.as_bytes(), key.as_bytes())
}

/// A session without activity for the idle timeout is ended by the sweep, at its last activity.
#[test]
fn idle_sessions_are_ended_by_the_sweep() {
    let s = setup("keyspace_notifications = false\nsweep_interval_seconds = 1\nidle_timeout_seconds = 1");
    let cookie = login_as(&s.proxy, "heidi", CHROME_MAC, "81.2.69.1");
    let sid = sid_of(&cookie);
    browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.1");
    let key = format!("sting:analytics:session:{sid}");
    wait_field(&s.redis, &key, "end_reason", "idle");
    let rec = session_record(&s.redis, &sid);
    assert_eq!(rec["end_time"], rec["last_time"], "an idle session ends at its last activity");
}

/// Configured actions are recorded by name in the session's action list.
#[test]
fn named_actions_are_recorded() {
    let s = setup("[[analytics.actions]]\nmethod = \"POST\"\nroute = \"/upload\"\nname = \"upload_document\"");
    let cookie = login_as(&s.proxy, "ivan", CHROME_MAC, "81.2.69.1");
    let sid = sid_of(&cookie);
    let r = client().post(s.proxy.url("/upload")).header("cookie", format!("session={cookie}")).body("hello").send().unwrap();
    assert_eq!(r.status(), 200);
    let key = format!("sting:analytics:session:{sid}:actions");
    wait_until("upload_document action", Duration::from_secs(15), || {
        let actions: Vec<String> = s.redis.conn().lrange(&key, 0, -1).unwrap();
        actions.iter().any(|a| a.contains("\"upload_document\"") && a.contains("\"/upload\""))
    });
}

/// A Kratos session at AAL2 records the step-up event (kept 7 days) and the session's AAL.
#[test]
fn aal2_step_up_is_recorded() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("strong", StubAnswer::session("id-2fa", None, "aal2"));
    let proxy = Proxy::start(ProxyOpts { kratos: Some(kratos.url()), extra_toml: "[analytics]\nbatch_max_delay_ms = 5", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    for _ in 0..3 {
        echo(&proxy.url("/echo"), None, &[("x-session-token", "strong")]);
    }
    let kratos_sid = "7458af86-c1d8-401c-978a-8da89133f98b";
    wait_field(&redis, &format!("sting:analytics:session:{kratos_sid}"), "aal", "aal2");
    let mut c = redis.conn();
    let events: Vec<String> = redis::cmd("KEYS").arg(format!("sting:aal2:{kratos_sid}:*")).query(&mut c).unwrap();
    assert_eq!(events.len(), 1, "one step-up, however many requests: {events:?}");
    let ttl: i64 = c.ttl(&events[0]).unwrap();
    assert!(ttl > 7 * 86_400 - 60 && ttl <= 7 * 86_400);
    let body: serde_json::Value = serde_json::from_str(&c.get::<_, String>(&events[0]).unwrap()).unwrap();
    assert_eq!(body["user_id"], "id-2fa");
    assert_eq!(session_record(&redis, kratos_sid)["auth_source"], "kratos");
}

/// A Kratos logout seen by the proxy (the response expires `ory_kratos_session`) ends the
/// Kratos session, and the next request with that cookie asks Kratos again.
#[test]
fn kratos_logout_ends_the_kratos_session() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("k-cookie", StubAnswer::session("id-k", None, "aal1"));
    let proxy = Proxy::start(ProxyOpts { kratos: Some(kratos.url()), extra_toml: "[analytics]\nbatch_max_delay_ms = 5", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let c = client();
    let with_cookie = |path: &str| c.get(proxy.url(path)).header("cookie", "ory_kratos_session=k-cookie").header("accept", "text/html").send().unwrap();
    assert_eq!(with_cookie("/").status(), 200);
    let out = with_cookie("/self-service/logout");
    assert_eq!(set_cookie_value(&out, "ory_kratos_session").as_deref(), Some(""));
    let kratos_sid = "7458af86-c1d8-401c-978a-8da89133f98b";
    wait_field(&redis, &format!("sting:analytics:session:{kratos_sid}"), "end_reason", "logout");
    assert_eq!(kratos.calls(), 1);
    with_cookie("/");
    assert_eq!(kratos.calls(), 2, "the cached answer was forgotten at logout");
}

/// A light record, live or (in the bucket's `:ended` twin) ended.
fn light_record(redis: &RedisServer, sid: &str) -> Option<Vec<serde_json::Value>> {
    let bucket = format!("sting:analytics:light:{}", today());
    let live: Option<String> = redis.conn().hget(&bucket, sid).unwrap();
    let ended: Option<String> = redis.conn().hget(format!("{bucket}:ended"), sid).unwrap();
    assert!(live.is_none() || ended.is_none(), "{sid} is both live and ended");
    live.or(ended).map(|v| serde_json::from_str(&v).unwrap())
}

fn day_counter(redis: &RedisServer, field: &str) -> i64 {
    redis.conn().hget::<_, _, Option<i64>>(format!("sting:analytics:daily:{}", today()), field).unwrap().unwrap_or(0)
}

/// A session the proxy first sees on one page view (here one the app made before the proxy
/// came: a cookie from the app directly) is a light record: counted, in no active set, no key
/// of its own. Its second request promotes it to the full record it would have had: same start,
/// both page views and actions, its first page counted once per period.
#[test]
fn a_one_request_session_is_light_until_its_second_request() {
    let s = setup("");
    let r = client().get(format!("{}/anon", s.app.url())).send().unwrap();
    let cookie = set_cookie_value(&r, "session").unwrap();
    let sid = sid_of(&cookie);
    assert_eq!(browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    wait_until("the light record", Duration::from_secs(15), || light_record(&s.redis, &sid).is_some());
    let light = light_record(&s.redis, &sid).unwrap();
    assert_eq!(light.len(), 11, "{light:?}");
    assert_eq!(light[2], "81.2.69.7");
    assert_eq!(light[10], "/");
    assert!(session_record(&s.redis, &sid).is_empty());
    assert!(!s.redis.conn().sismember::<_, _, bool>("sting:active:sessions", &sid).unwrap());
    assert_eq!(day_counter(&s.redis, "sessions_started"), 1);

    assert_eq!(browse(&s.proxy, "/login", Some(&cookie), CHROME_MAC, "81.2.69.8"), 200);
    let key = format!("sting:analytics:session:{sid}");
    wait_field(&s.redis, &key, "page_views", "2");
    let rec = session_record(&s.redis, &sid);
    assert_eq!(rec["start_time"], light[0].as_str().unwrap(), "the start is the light record's");
    assert_eq!((rec["hits"].as_str(), rec["first_ip"].as_str(), rec["ip"].as_str()), ("2", "81.2.69.7", "81.2.69.8"));
    assert_eq!(rec["browser"], "Chrome");
    assert!(light_record(&s.redis, &sid).is_none(), "promoted records leave the light bucket");
    assert!(s.redis.conn().sismember::<_, _, bool>("sting:active:sessions", &sid).unwrap());
    assert_eq!(day_counter(&s.redis, "sessions_started"), 1, "promotion is not a second start");
    let actions: Vec<String> = s.redis.conn().lrange(format!("{key}:actions"), 0, -1).unwrap();
    let pages: Vec<String> = actions.iter().rev().map(|a| serde_json::from_str::<serde_json::Value>(a).unwrap()["page"].as_str().unwrap().to_owned()).collect();
    assert_eq!(pages, ["/", "/login"], "{actions:?}");
    // The first page is in the session's pages sets: viewing it again counts no new session.
    assert_eq!(browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.8"), 200);
    wait_field(&s.redis, &key, "page_views", "3");
    let page_sessions: HashMap<String, i64> = s.redis.conn().zrange_withscores(format!("sting:analytics:daily:{}:page_sessions", today()), 0, -1).unwrap();
    assert_eq!((page_sessions.get("/"), page_sessions.get("/login")), (Some(&1), Some(&1)), "{page_sessions:?}");
}

/// A light record ends like any session (here idle, by the sweep), once; a later request
/// promotes it to a record that is already ended, not to a second start.
#[test]
fn a_light_session_ends_once_and_stays_ended() {
    let s = setup("keyspace_notifications = false\nsweep_interval_seconds = 1\nidle_timeout_seconds = 1");
    let r = client().get(format!("{}/anon", s.app.url())).send().unwrap();
    let cookie = set_cookie_value(&r, "session").unwrap();
    let sid = sid_of(&cookie);
    assert_eq!(browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    wait_until("the light record ends", Duration::from_secs(15), || light_record(&s.redis, &sid).is_some_and(|l| l.len() == 14));
    let light = light_record(&s.redis, &sid).unwrap();
    assert_eq!((light[11].as_str(), light[13].as_str()), (light[0].as_str(), Some("idle")), "ended at its only request: {light:?}");
    let live: i64 = s.redis.conn().hlen(format!("sting:analytics:light:{}", today())).unwrap();
    assert_eq!(live, 0, "the sweep reads live records only: ended ones move out");
    assert_eq!((day_counter(&s.redis, "sessions_ended"), day_counter(&s.redis, "duration_le_10")), (1, 1));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(day_counter(&s.redis, "sessions_ended"), 1, "the sweep ends it once");

    assert_eq!(browse(&s.proxy, "/login", Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    let key = format!("sting:analytics:session:{sid}");
    wait_field(&s.redis, &key, "page_views", "2");
    let rec = session_record(&s.redis, &sid);
    assert_eq!(rec["end_reason"], "idle");
    assert!(!s.redis.conn().sismember::<_, _, bool>("sting:active:sessions", &sid).unwrap());
    assert_eq!((day_counter(&s.redis, "sessions_started"), day_counter(&s.redis, "sessions_ended")), (1, 1));
}

/// The app deleting a light session's key (its logout) ends it through the keyspace
/// notification, with the same counts as a full record.
#[test]
fn a_light_session_ends_when_the_app_deletes_it() {
    let s = setup("");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("Egx").query(&mut s.redis.conn()).unwrap();
    let r = client().get(format!("{}/anon", s.app.url())).send().unwrap();
    let cookie = set_cookie_value(&r, "session").unwrap();
    let sid = sid_of(&cookie);
    assert_eq!(browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    wait_until("the light record", Duration::from_secs(15), || light_record(&s.redis, &sid).is_some());
    let _: () = s.redis.conn().del(format!("sting:session:{sid}")).unwrap();
    wait_until("the light record ends", Duration::from_secs(15), || light_record(&s.redis, &sid).is_some_and(|l| l.len() == 14));
    assert_eq!(light_record(&s.redis, &sid).unwrap()[13], "logout");
    assert_eq!((day_counter(&s.redis, "sessions_ended"), day_counter(&s.redis, "ended_logout")), (1, 1));
}

/// A light record older than the app's session lifetime is gone, as an expired full record
/// would be: the sid's next request starts a new session.
#[test]
fn a_light_record_past_the_session_lifetime_starts_anew() {
    let s = setup_with("", "lifetime_hours = 1");
    let r = client().get(format!("{}/anon", s.app.url())).send().unwrap();
    let cookie = set_cookie_value(&r, "session").unwrap();
    let sid = sid_of(&cookie);
    // What a visit two hours ago left (its bucket is today's as long as the test does not run
    // just after midnight UTC).
    let two_hours_ago = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
    let old = serde_json::json!([two_hours_ago.to_string(), "", "81.2.69.7", "Chrome", "Mac OS X", "desktop", "GB", "London", 1, 0, ""]);
    let _: () = s.redis.conn().hset(format!("sting:analytics:light:{}", today()), &sid, old.to_string()).unwrap();
    assert_eq!(browse(&s.proxy, "/", Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    assert_eq!(browse(&s.proxy, "/login", Some(&cookie), CHROME_MAC, "81.2.69.7"), 200);
    wait_field(&s.redis, &format!("sting:analytics:session:{sid}"), "page_views", "2");
    let rec = session_record(&s.redis, &sid);
    assert!(rec["start_time"].parse::<i64>().unwrap() > two_hours_ago + 3_600_000, "a new start: {rec:?}");
    assert_eq!(rec["hits"], "2", "the old visit's request is not carried over");
    assert_eq!(day_counter(&s.redis, "sessions_started"), 1, "counted once, by this start");
}
