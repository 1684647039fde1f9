//! Metrics and the access log: counters move by exactly the requests sent, route labels stay
//! capped under a flood of random paths, JSON and combined log lines carry the fields and no
//! secret, and SIGHUP reopens a rotated log file.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn scrape(proxy: &Proxy) -> String {
    client().get(proxy.admin_url("/metrics")).send().unwrap().text().unwrap()
}

/// The value of one sample line (`name{labels} value`), 0 when absent.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

fn requests_total(text: &str) -> f64 {
    text.lines().filter(|l| l.starts_with("sting_requests_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn metrics_count_exactly_and_route_labels_stay_capped() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.server_toml = "metrics_max_routes = 50\naccess_log = \"off\"";
    let proxy = Proxy::start(opts);
    proxy.wait_ready();

    let cookie = login(&proxy.url(""), "alice", "user");
    let before = scrape(&proxy);
    let c = client();
    for _ in 0..30 {
        assert_eq!(c.get(proxy.url("/echo/m")).header("cookie", format!("session={cookie}")).send().unwrap().status(), 200);
    }
    for _ in 0..7 {
        assert_eq!(c.get(proxy.url("/nope")).send().unwrap().status(), 404);
    }
    let after = scrape(&proxy);
    let ok = r#"sting_requests_total{method="GET",route="/echo/m",status_class="2xx"}"#;
    // Responses the app did not route share one label.
    let missing = r#"sting_requests_total{method="GET",route="unmatched",status_class="4xx"}"#;
    assert_eq!(sample(&after, ok) - sample(&before, ok), 30.0, "{after}");
    assert_eq!(sample(&after, missing) - sample(&before, missing), 7.0);
    assert_eq!(requests_total(&after) - requests_total(&before), 37.0);
    let hits =
        |t: &str| sample(t, r#"sting_auth_outcomes_total{outcome="flask_cache_hit"}"#) + sample(t, r#"sting_auth_outcomes_total{outcome="flask_redis_hit"}"#);
    assert_eq!(hits(&after) - hits(&before), 30.0, "the 30 logged-in requests were identified from the Flask session");
    assert_eq!(sample(&after, "sting_request_duration_seconds_count") - sample(&before, "sting_request_duration_seconds_count"), 37.0);
    assert!(after.contains("sting_build_info{version=") && after.contains("sting_analytics_events_written_total"), "{after}");
    // The analytics writer flushes off the hot path, up to a batch window after the response.
    wait_until("the gauge shows alice's session", Duration::from_secs(10), || scrape(&proxy).contains("\nsting_active_sessions 1\n"));
    assert!(scrape(&proxy).contains("sting_redis_command_duration_seconds_bucket"));

    // 10,000 distinct paths the app serves (its catch-all /echo/...), from 4 clients: every
    // request is counted, labels stay capped.
    let sent_before = requests_total(&scrape(&proxy));
    std::thread::scope(|s| {
        for t in 0..4 {
            let url = proxy.url("");
            s.spawn(move || {
                let c = client();
                for i in 0..2500 {
                    let word: String = format!("{t}x{i}").chars().map(|ch| if ch.is_ascii_digit() { (b'a' + ch as u8 - b'0') as char } else { ch }).collect();
                    c.get(format!("{url}/echo/{word}")).send().unwrap();
                }
            });
        }
    });
    let flooded = scrape(&proxy);
    assert_eq!(requests_total(&flooded) - sent_before, 10_000.0);
    let routes: BTreeSet<&str> =
        flooded.lines().filter(|l| l.starts_with("sting_requests_total{")).filter_map(|l| l.split("route=\"").nth(1)?.split('"').next()).collect();
    assert!(routes.len() <= 51, "{} route labels: {routes:?}", routes.len());
    assert!(routes.contains("other"), "{routes:?}");
}

#[test]
fn access_log_lines_carry_the_fields_and_no_secret() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let dir = tempfile::tempdir().unwrap();
    let json_log = dir.path().join("access.log");
    let mut opts = ProxyOpts::new(&redis, app.url());
    let server = format!("access_log = \"json\"\naccess_log_path = {:?}", json_log.display().to_string());
    opts.server_toml = &server;
    let proxy = Proxy::start(opts);
    proxy.wait_ready();

    let cookie = login(&proxy.url(""), "alice", "user");
    let sid = cookie.rsplit_once('.').unwrap().0.to_owned();
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    let r = client()
        .get(proxy.url("/echo/users/42?token=secret-token-123"))
        .header("cookie", format!("session={cookie}"))
        .header("user-agent", ua)
        .header("referer", "http://example.com/from")
        .header("authorization", "Bearer bearer-secret-456")
        .header("x-request-id", "req-abc-1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = wait_for_line(&json_log, "req-abc-1");
    let v: Value = serde_json::from_str(&line).unwrap();
    for (field, want) in [
        ("request_id", Value::from("req-abc-1")),
        ("method", "GET".into()),
        ("path", "/echo/users/42".into()),
        ("route", "/echo/users/:id".into()),
        ("status", 200.into()),
        ("user_id", "alice".into()),
        ("session_id", sid.as_str().into()),
        ("client_ip", "127.0.0.1".into()),
        ("ua_family", "Chrome".into()),
        ("os", "Linux".into()),
        ("device", "desktop".into()),
        ("referrer", "http://example.com/from".into()),
    ] {
        assert_eq!(v[field], want, "{field}: {line}");
    }
    for f in ["time", "bytes", "latency_ms", "upstream_latency_ms", "auth"] {
        assert!(v.get(f).is_some(), "{f}: {line}");
    }
    for secret in [cookie.as_str(), "secret-token-123", "bearer-secret-456"] {
        assert!(!line.contains(secret), "{secret} leaked into {line}");
    }

    // SIGHUP reopens the file after logrotate moved it.
    std::fs::rename(&json_log, dir.path().join("access.log.1")).unwrap();
    let _ = Command::new("kill").args(["-HUP", &proxy.pid().to_string()]).status();
    wait_until("the log reopened", Duration::from_secs(10), || {
        client().get(proxy.url("/echo/after-rotate")).header("x-request-id", "req-after-rotate").send().unwrap();
        std::fs::read_to_string(&json_log).is_ok_and(|t| t.contains("req-after-rotate"))
    });
}

#[test]
fn combined_log_parses_with_the_standard_regex() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("combined.log");
    let mut opts = ProxyOpts::new(&redis, app.url());
    let server = format!("access_log = \"combined\"\naccess_log_path = {:?}", log.display().to_string());
    opts.server_toml = &server;
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "bob smith", "user");
    client().get(proxy.url("/echo/c?x=1")).header("cookie", format!("session={cookie}")).header("user-agent", "curl/8.0 \"quoted\"").send().unwrap();
    client().get(proxy.url("/nope")).send().unwrap();
    let text = wait_for_line(&log, "/nope");
    let re = regex::Regex::new(r#"^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$"#).unwrap();
    let all = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines.len() >= 3, "{all}");
    for l in &lines {
        assert!(re.is_match(l), "not combined format: {l}");
    }
    let c = lines.iter().find_map(|l| re.captures(l).filter(|c| &c[6] == "/echo/c")).expect("the /echo/c line");
    assert_eq!((&c[3], &c[5], &c[8]), ("bob\\x20smith", "GET", "200"), "{}", &c[0]);
    assert_eq!(&c[11], "curl/8.0 \\x22quoted\\x22");
    assert!(!all.contains(&cookie) && !all.contains("x=1"), "{all}");
    let _ = text;

    // A burst from 4 clients: one line per request, none lost in the queue.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let c = client();
                for _ in 0..50 {
                    c.get(proxy.url("/echo/burst")).send().unwrap();
                }
            });
        }
    });
    wait_until("200 burst lines", Duration::from_secs(10), || std::fs::read_to_string(&log).unwrap_or_default().matches("/echo/burst").count() == 200);
}

use std::process::Command;

fn wait_for_line(path: &std::path::Path, needle: &str) -> String {
    let mut found = String::new();
    wait_until(&format!("a log line with {needle}"), Duration::from_secs(10), || {
        found = std::fs::read_to_string(path).unwrap_or_default().lines().find(|l| l.contains(needle)).unwrap_or_default().to_owned();
        !found.is_empty()
    });
    found
}
