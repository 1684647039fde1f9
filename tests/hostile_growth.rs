//! Bounded growth under hostile traffic (issue 12, items 8-12): floods through the real binary,
//! then Redis's own `DBSIZE`, `KEYS` and `MEMORY USAGE` say what the proxy kept. Redis runs
//! `noeviction` in production and is shared with the app's logins, so the proxy's keys must
//! grow with users and days, never with requests or batches.

mod common;

use std::time::Duration;

use common::*;

fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(pattern).query(&mut redis.conn()).unwrap()
}

/// Sends `n` GETs of `path(i)` from 8 threads; returns the statuses' sum of 2xx.
fn flood(proxy: &Proxy, n: usize, headers: &'static [(&'static str, &'static str)], path: impl Fn(usize) -> String + Sync) -> usize {
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (ok, path) = (&ok, &path);
            s.spawn(move || {
                let c = client();
                for i in (t..n).step_by(8) {
                    let mut r = c.get(proxy.url(&path(i)));
                    for (k, v) in headers {
                        r = r.header(*k, *v);
                    }
                    if r.send().is_ok_and(|r| r.status().is_success()) {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    ok.into_inner()
}

fn wait_written(proxy: &Proxy, at_least: f64) {
    wait_until("the analytics writer", Duration::from_secs(60), || proxy.metric("sting_analytics_events_written_total") >= at_least);
}

/// 10,000 batches leave one writer key, not 10,000 markers.
#[test]
fn batches_leave_one_key_per_writer() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nbatch_max_events = 1\n", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let before = redis::cmd("DBSIZE").query::<i64>(&mut redis.conn()).unwrap();
    assert_eq!(flood(&proxy, 10_000, &[], |_| "/healthz".to_owned()), 10_000);
    wait_written(&proxy, 10_000.0);
    let batches = proxy.metric("sting_analytics_batch_events_count");
    assert!(batches >= 9_000.0, "about one batch per request: {batches}");
    assert_eq!(keys(&redis, "sting:analytics:writer:*").len(), 1);
    assert!(keys(&redis, "sting:analytics:batch:*").is_empty());
    let after = redis::cmd("DBSIZE").query::<i64>(&mut redis.conn()).unwrap();
    // The day's and hour's aggregates (analytics, request metrics, breakdowns) and the writer
    // key: a fixed set, whatever the number of batches.
    let per_period = |k: &String| k.starts_with("sting:analytics:daily:") || k.starts_with("sting:analytics:hourly:") || k.starts_with("sting:metrics:");
    let others: Vec<String> = keys(&redis, "*").into_iter().filter(|k| !per_period(k)).collect();
    assert!(after - before <= 30 && others.len() <= 2, "{batches} batches added {} keys; not per period: {others:?}", after - before);
}

/// The sids of today's light records (one-request sessions without a user).
fn light_records(redis: &RedisServer) -> Vec<String> {
    redis::cmd("HKEYS").arg(format!("sting:analytics:light:{}", today())).query(&mut redis.conn()).unwrap()
}

/// The proxy's per-session keys (`sting:analytics:session:{sid}` and its `:actions` / `:pages:`).
fn session_keys(redis: &RedisServer) -> Vec<String> {
    keys(redis, "sting:analytics:session:*")
}

/// One address whose every request gets a new anonymous session (a bot that drops cookies)
/// creates at most its allowance of session records; its requests still count in the totals.
#[test]
fn a_cookie_dropping_client_cannot_grow_session_records() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nnew_sessions_per_client_per_minute = 20\n", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    // /anon makes the app issue a new session to every request that carries none.
    assert_eq!(flood(&proxy, 600, &[("accept", "text/html")], |_| "/anon".to_owned()), 600);
    wait_written(&proxy, 600.0);
    let records = light_records(&redis).len();
    // The burst (20), plus what refilled during the flood (20 a minute).
    assert!((20..=30).contains(&records), "{records} session records from one address");
    assert!(session_keys(&redis).is_empty(), "one-request sessions make no keys of their own: {:?}", session_keys(&redis));
    let refused = proxy.metric("sting_analytics_sessions_refused_total");
    assert!(refused >= 570.0, "{refused}");
    let day: std::collections::HashMap<String, i64> = redis::cmd("HGETALL").arg(format!("sting:analytics:daily:{}", today())).query(&mut redis.conn()).unwrap();
    assert_eq!(day.get("hits"), Some(&600), "every request still counts: {day:?}");
    assert_eq!(day.get("sessions_started"), Some(&(records as i64)), "{day:?}");
    // Light records live at most the app's session lifetime (24 h here) past their day.
    let ttl: i64 = redis::cmd("TTL").arg(format!("sting:analytics:light:{}", today())).query(&mut redis.conn()).unwrap();
    assert!((86_400..=2 * 86_400).contains(&ttl), "light bucket ttl {ttl}");
}

/// What an anonymous one-request session costs in Redis, by Redis's own accounting
/// (`MEMORY USAGE ... SAMPLES 0` of every key the proxy keeps per session, and the active set):
/// under 300 bytes, where a full record with its page sets cost about 1.2 KB.
#[test]
fn a_one_request_session_costs_under_300_bytes() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nnew_sessions_per_client_per_minute = 0\n", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let n = 2_000;
    assert_eq!(flood(&proxy, n, &[("accept", "text/html")], |_| "/anon".to_owned()), n);
    wait_written(&proxy, n as f64);
    wait_until("every session recorded", Duration::from_secs(30), || light_records(&redis).len() == n);
    assert!(session_keys(&redis).is_empty());
    let active: i64 = redis::cmd("SCARD").arg("sting:active:sessions").query(&mut redis.conn()).unwrap();
    assert_eq!(active, 0, "a one-request session is not in the active set");
    let usage: i64 =
        redis::cmd("MEMORY").arg("USAGE").arg(format!("sting:analytics:light:{}", today())).arg("SAMPLES").arg(0).query(&mut redis.conn()).unwrap();
    let per_session = usage / n as i64;
    eprintln!("an anonymous one-request session costs {per_session} B ({usage} B for {n})");
    assert!(per_session < 300, "{per_session} B per one-request session");
}

/// Random page templates under a catch-all route: the day's and hour's page sets keep the
/// first `max_pages_per_day` and count the rest as `other`.
#[test]
fn top_pages_are_capped_per_day() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nmax_pages_per_day = 50\n", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    assert_eq!(flood(&proxy, 400, &[("accept", "text/html")], |i| format!("/echo/word{i}x")), 400);
    wait_written(&proxy, 400.0);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let pages: Vec<(String, i64)> =
        redis::cmd("ZRANGE").arg(format!("sting:analytics:daily:{today}:pages")).arg(0).arg(-1).arg("WITHSCORES").query(&mut redis.conn()).unwrap();
    assert_eq!(pages.len(), 51, "50 templates and other: {pages:?}");
    assert_eq!(pages.iter().find(|(p, _)| p == "other").map(|(_, n)| *n), Some(350));
    for hour in keys(&redis, "sting:analytics:hourly:*:pages") {
        let n: i64 = redis::cmd("ZCARD").arg(&hour).query(&mut redis.conn()).unwrap();
        assert!(n <= 51, "{hour}: {n}");
    }
}

/// Responses the app did not route (404) are one `unmatched` template: random paths neither
/// use up the metric label budget nor enter the page sets, and later real routes keep their
/// own label.
#[test]
fn not_found_paths_use_one_label() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { server_toml: "metrics_max_routes = 20\n", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let c = client();
    for i in 0..300 {
        assert_eq!(c.get(proxy.url(&format!("/no-such-page-{i}"))).header("accept", "text/html").send().unwrap().status(), 404);
    }
    assert_eq!(c.get(proxy.url("/healthz")).send().unwrap().status(), 200);
    // A request is counted in its logging phase, after its response went out: wait for it.
    let scrape = || c.get(proxy.admin_url("/metrics")).send().unwrap().text().unwrap();
    wait_until("the real route counted", Duration::from_secs(10), || scrape().contains(r#"route="/healthz""#));
    let text = scrape();
    assert!(text.contains(r#"route="unmatched",status_class="4xx"} 300"#), "{text}");
    assert!(!text.contains("no-such-page"));
    wait_written(&proxy, 301.0);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let pages: Vec<String> = redis::cmd("ZRANGE").arg(format!("sting:analytics:daily:{today}:pages")).arg(0).arg(-1).query(&mut redis.conn()).unwrap();
    assert!(pages.iter().all(|p| !p.contains("no-such-page")), "{pages:?}");
}

/// While Redis refuses connections, requests fail at once instead of each waiting out the
/// command timeout: most are answered by the fail-fast path (counted in metrics).
#[test]
fn requests_fail_fast_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: DEFAULT_RULES, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "ff-user", "user");
    redis.stop();
    for _ in 0..40 {
        let r = client().get(proxy.url("/dashboard")).header("cookie", format!("session={cookie}")).send().unwrap();
        assert_eq!(r.status(), 503);
    }
    let fast = proxy.metric(r#"sting_redis_errors_total{op="fail_fast"}"#);
    assert!(fast >= 30.0, "{fast} of 40 failed fast");
    redis.restart();
    wait_until("recovery", Duration::from_secs(15), || {
        client().get(proxy.url("/dashboard")).header("cookie", format!("session={cookie}")).send().unwrap().status() != 503
    });
}

/// A signed-in client choosing its own paths and bot names cannot grow its per-user aggregates:
/// 300 distinct route templates leave 100 and `other`, 30 distinct bot names 20 and `other`,
/// and every request is still counted.
#[test]
fn per_user_aggregates_stay_capped() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: "[analytics]\nbatch_max_delay_ms = 5\n", ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "mallory", "user");
    // Letters only and short, so no segment looks like an id: each path is its own template.
    let word = |mut i: usize| {
        let mut w = String::from("p");
        loop {
            w.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
            if i == 0 {
                return w;
            }
        }
    };
    let header: &'static str = Box::leak(format!("session={cookie}").into_boxed_str());
    let headers: &'static [(&'static str, &'static str)] = Box::leak(Box::new([("cookie", header)]));
    assert_eq!(flood(&proxy, 300, headers, |i| format!("/echo/{}", word(i))), 300);
    let c = client();
    for i in 0..30 {
        let r = c
            .get(proxy.url("/echo/bots"))
            .header("cookie", header)
            .header("user-agent", format!("Mozilla/5.0 (compatible; Crawl{}bot/1.0)", word(i)))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let routes = "sting:analytics:user:mallory:routes";
    let total = |key: &str| -> i64 {
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES").query(&mut redis.conn()).unwrap();
        members.iter().map(|(_, n)| *n as i64).sum()
    };
    wait_until("330 requests counted", Duration::from_secs(30), || total(routes) == 330);
    let zcard = |key: &str| redis::cmd("ZCARD").arg(key).query::<i64>(&mut redis.conn()).unwrap();
    let score = |key: &str, m: &str| redis::cmd("ZSCORE").arg(key).arg(m).query::<Option<i64>>(&mut redis.conn()).unwrap();
    assert_eq!(zcard(routes), 101, "100 templates and other");
    // 300 distinct templates took the 100 places; `/echo/bots` came after them.
    assert_eq!(score(routes, "/echo/bots"), None);
    assert_eq!(score(routes, "other"), Some(330 - 100));
    // Requests without a User-Agent are one device; 19 bot names fill the other places.
    let devices = "sting:analytics:user:mallory:devices";
    assert_eq!(zcard(devices), 21, "20 devices and other");
    assert_eq!(total(devices), 330);
    assert_eq!(score(devices, "other"), Some(30 - 19));
    let hours: Vec<String> = redis::cmd("HKEYS").arg("sting:analytics:user:mallory:activity").query(&mut redis.conn()).unwrap();
    assert!(hours.len() <= 4, "one or two hour fields and first/last seen: {hours:?}");
    // The API reports the same, bounded.
    let admin = login(&proxy.url(""), "root", "admin");
    let r = client().get(proxy.url("/api/analytics/users/mallory/behavior-patterns")).header("cookie", format!("session={admin}")).send().unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!((v["routes"].as_array().unwrap().len(), v["devices"].as_array().unwrap().len(), v["requests"].as_i64()), (101, 21, Some(330)));
}
