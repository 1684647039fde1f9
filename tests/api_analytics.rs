//! The analytics REST API: access control, exact numbers after a known scenario, parameter
//! validation, and that nothing under the API prefix ever reaches the app.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN: &str = "integration-analytics-token";

struct Setup {
    redis: RedisServer,
    app: FlaskApp,
    proxy: Proxy,
}

fn setup() -> Setup {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.extra_toml = "[analytics]\nbatch_max_delay_ms = 5\nallowed_origins = [\"https://ops.example.com\"]";
    opts.env = vec![("STING_ANALYTICS_TOKEN", format!("another-token-0123456789,{TOKEN}"))];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    Setup { redis, app, proxy }
}

fn get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().get(proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn with_token(proxy: &Proxy, path: &str) -> (u16, Value) {
    get(proxy, path, &[("authorization", &format!("Bearer {TOKEN}"))])
}

fn page_view(proxy: &Proxy, cookie: &str, path: &str) {
    let r = client().get(proxy.url(path)).header("cookie", format!("session={cookie}")).header("accept", "text/html").send().unwrap();
    assert_eq!(r.status(), 200);
}

fn wait_page_views(redis: &RedisServer, sid: &str, n: i64) {
    let key = format!("sting:analytics:session:{sid}");
    wait_until(&format!("{key} page_views = {n}"), Duration::from_secs(15), || {
        redis::cmd("HGET").arg(&key).arg("page_views").query::<Option<i64>>(&mut redis.conn()).unwrap() == Some(n)
    });
}

/// Only an admin session or a configured bearer token reads the API; everything else is
/// refused with a JSON body, and cross-origin browsers are refused unless configured.
#[test]
fn access_control() {
    let s = setup();
    let path = "/api/analytics/sessions/active";
    assert_eq!(get(&s.proxy, path, &[]).0, 401);
    assert_eq!(get(&s.proxy, path, &[("authorization", "Bearer wrong-token-0123456789")]).0, 401);
    let user = login(&s.proxy.url(""), "plain", "user");
    let (status, body) = get(&s.proxy, path, &[("cookie", &format!("session={user}"))]);
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let admin = login(&s.proxy.url(""), "boss", "admin");
    assert_eq!(get(&s.proxy, path, &[("cookie", &format!("session={admin}"))]).0, 200);
    assert_eq!(with_token(&s.proxy, path).0, 200);
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(get(&s.proxy, path, &[("authorization", &auth), ("origin", "https://evil.example")]).0, 403);
    assert_eq!(get(&s.proxy, path, &[("authorization", &auth), ("origin", "https://ops.example.com")]).0, 200);
}

/// After a known scenario the seed's three endpoints and the session endpoint give exact numbers.
#[test]
fn endpoints_report_the_scenario_exactly() {
    let s = setup();
    let alice = login(&s.proxy.url(""), "alice", "user");
    let bob = login(&s.proxy.url(""), "bob", "user");
    let (alice_sid, bob_sid) = (alice.rsplit_once('.').unwrap().0.to_owned(), bob.rsplit_once('.').unwrap().0.to_owned());
    for p in ["/", "/echo/a", "/echo/users/1"] {
        page_view(&s.proxy, &alice, p);
    }
    page_view(&s.proxy, &bob, "/");
    page_view(&s.proxy, &bob, "/echo/b");
    wait_page_views(&s.redis, &alice_sid, 3);
    wait_page_views(&s.redis, &bob_sid, 2);
    client().post(s.proxy.url("/logout")).header("cookie", format!("session={bob}")).send().unwrap();
    wait_until("bob's session ended", Duration::from_secs(15), || {
        with_token(&s.proxy, &format!("/api/analytics/sessions/{bob_sid}")).1["end_reason"] == "logout"
    });

    let (status, active) = with_token(&s.proxy, "/api/analytics/sessions/active");
    assert_eq!(status, 200);
    assert_eq!(active["active_sessions"], 1);
    assert!(chrono::DateTime::parse_from_rfc3339(active["timestamp"].as_str().unwrap()).is_ok());

    let (_, stats) = with_token(&s.proxy, "/api/analytics/sessions/stats");
    assert_eq!(stats["total_sessions_today"], 2);
    assert_eq!(stats["unique_users_today"], 2);
    assert_eq!(stats["active_sessions"], 1);
    assert_eq!(stats["sessions_ended_today"], 1);
    assert_eq!(stats["page_views_today"], 5);
    assert!(stats["average_duration_minutes"].as_f64().unwrap() >= 0.0);

    let (_, hist) = with_token(&s.proxy, "/api/analytics/users/alice/sessions?limit=10");
    assert_eq!(hist["user_id"], "alice");
    assert_eq!(hist["total_count"], 1);
    let sess = &hist["sessions"][0];
    assert_eq!(sess["session_id"], alice_sid.as_str());
    assert_eq!(sess["page_views"], 3);
    assert_eq!(sess["end_time"], Value::Null);
    for field in ["start_time", "duration", "ip_address", "location", "device"] {
        assert!(sess.get(field).is_some(), "{field}");
    }

    let (_, durations) = with_token(&s.proxy, "/api/analytics/sessions/durations");
    assert_eq!(durations["sessions_ended"], 1);
    let in_buckets: i64 = durations["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_i64().unwrap()).sum();
    assert_eq!(in_buckets, 1, "{durations}");
    assert!(durations["median_le_seconds"].as_u64().is_some());

    // Summed over the default windows (24 hours, 30 days), so an hour or day boundary in the
    // middle of the test cannot change the totals.
    for granularity in ["hour", "day"] {
        let (status, ts) = with_token(&s.proxy, &format!("/api/analytics/timeseries?metric=page_views&granularity={granularity}"));
        assert_eq!(status, 200);
        let total: i64 = ts["points"].as_array().unwrap().iter().map(|p| p["value"].as_i64().unwrap()).sum();
        assert_eq!(total, 5, "{granularity}: {ts}");
    }
    let (_, starts) = with_token(&s.proxy, "/api/analytics/timeseries?metric=sessions_started&granularity=day");
    assert_eq!(starts["points"].as_array().unwrap().iter().map(|p| p["value"].as_i64().unwrap()).sum::<i64>(), 2);
    assert_eq!(with_token(&s.proxy, "/api/analytics/timeseries?metric=bogus").1["parameter"], "metric");

    let (_, detail) = with_token(&s.proxy, &format!("/api/analytics/sessions/{alice_sid}"));
    let views = detail["actions"].as_array().unwrap().iter().filter(|a| a["action"] == "page_view").count();
    assert_eq!(views, 3);
    // "/" was viewed by both sessions, once each; "/echo/users/:id" by alice only.
    let (_, top) = with_token(&s.proxy, "/api/analytics/pages/top");
    let page = |name: &str| top["pages"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null);
    assert_eq!((page("/")["count"].as_i64(), page("/")["unique_sessions"].as_i64()), (Some(2), Some(2)), "{top}");
    assert_eq!(page("/echo/users/:id")["unique_sessions"], 1, "{top}");
    assert_eq!(with_token(&s.proxy, "/api/analytics/sessions/no-such-session").0, 404);
}

/// Bad parameters get a 400 naming the parameter; unknown endpoints and methods get JSON errors.
#[test]
fn bad_requests_are_explained() {
    let s = setup();
    for q in ["limit=0", "limit=501", "limit=ten"] {
        let (status, body) = with_token(&s.proxy, &format!("/api/analytics/users/u/sessions?{q}"));
        assert_eq!((status, body["parameter"].as_str()), (400, Some("limit")), "{q}");
    }
    assert_eq!(with_token(&s.proxy, "/api/analytics/nope").0, 404);
    let r = client().post(s.proxy.url("/api/analytics/sessions/active")).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), 405);
}

/// No spelling of an API path reaches the app: every answer is the proxy's own JSON.
#[test]
fn api_paths_never_reach_the_app() {
    let s = setup();
    let auth = format!("Bearer {TOKEN}");
    for path in [
        "/api/analytics/sessions/active",
        "/api/analytics",
        "/api/analytics/echo",
        "//api/analytics/sessions/active",
        "/api/%61nalytics/sessions/active",
        "/api/analytics/../echo",
    ] {
        let resp = raw_request(s.proxy.port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"));
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert!(v.get("active_sessions").is_some() || v.get("error").is_some(), "{path} answered by the app? {resp}");
        assert!(!body.contains("\"headers\""), "{path} reached the app's /echo: {resp}");
    }
    // The app logs every request it serves: a control request shows up, no API request does.
    assert_eq!(client().get(s.proxy.url("/echo/control")).send().unwrap().status(), 200);
    wait_until("the app logs the control request", Duration::from_secs(10), || s.app.requests_log().iter().any(|l| l.contains("/echo/control")));
    let log = s.app.requests_log();
    assert!(!log.iter().any(|l| l.contains("api/") || l.contains("%61")), "the app saw API requests: {log:?}");
}

/// Top pages, devices and geo report the day's page views by template, device and country;
/// bad `period`/`date` values are rejected by name.
#[test]
fn breakdown_endpoints() {
    let s = setup();
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let view = |path: &str, ua: &str| {
        let r = client().get(s.proxy.url(path)).header("accept", "text/html").header("user-agent", ua).send().unwrap();
        assert_eq!(r.status(), 200);
    };
    let hour_before = chrono::Utc::now().format("%Y-%m-%dT%H").to_string();
    for i in 0..3 {
        view(&format!("/echo/items/{i}"), chrome);
    }
    view("/", chrome);
    view("/", googlebot);
    wait_until("5 page views counted", Duration::from_secs(15), || with_token(&s.proxy, "/api/analytics/sessions/stats").1["page_views_today"] == 5);

    let (status, top) = with_token(&s.proxy, "/api/analytics/pages/top?limit=2");
    assert_eq!(status, 200);
    assert_eq!(top["period"], "day");
    // No session cookie, so no session to count per page.
    assert_eq!(
        top["pages"],
        serde_json::json!([{"name": "/echo/items/:id", "count": 3, "unique_sessions": 0}, {"name": "/", "count": 2, "unique_sessions": 0}])
    );

    let (_, dev) = with_token(&s.proxy, "/api/analytics/devices");
    assert_eq!(dev["bots"], 1);
    assert!(dev["browsers"].as_array().unwrap().iter().any(|b| b["name"] == "Chrome" && b["count"] == 4));
    assert!(dev["device_types"].as_array().unwrap().iter().any(|b| b["name"] == "desktop" && b["count"] == 4));

    let (_, geo) = with_token(&s.proxy, "/api/analytics/geo");
    assert_eq!(geo["countries"], serde_json::json!([{"name": "unknown", "count": 5}]), "no GeoIP database configured");

    let hour = chrono::Utc::now().format("%Y-%m-%dT%H").to_string();
    let (_, hourly) = with_token(&s.proxy, &format!("/api/analytics/pages/top?period=hour&date={hour}"));
    // Unless the views straddled an hour boundary, the hour holds them all.
    if hour == hour_before {
        assert_eq!(hourly["pages"][0]["count"], 3);
    }
    assert_eq!(hourly["date"], hour.as_str());
    for (q, p) in [("period=week", "period"), ("date=yesterday", "date"), ("limit=1000", "limit")] {
        let (status, body) = with_token(&s.proxy, &format!("/api/analytics/pages/top?{q}"));
        assert_eq!((status, body["parameter"].as_str()), (400, Some(p)), "{q}");
    }
}

/// The recent-sessions list, peak hours and stats for a given day report the scenario exactly.
#[test]
fn recent_sessions_peak_hours_and_stats_by_date() {
    let s = setup();
    let started = chrono::Utc::now();
    let carol = login(&s.proxy.url(""), "carol", "user");
    let dave = login(&s.proxy.url(""), "dave", "user");
    let (carol_sid, dave_sid) = (carol.rsplit_once('.').unwrap().0.to_owned(), dave.rsplit_once('.').unwrap().0.to_owned());
    for _ in 0..4 {
        page_view(&s.proxy, &carol, "/");
    }
    page_view(&s.proxy, &dave, "/echo/x");
    wait_page_views(&s.redis, &carol_sid, 4);
    wait_page_views(&s.redis, &dave_sid, 1);

    let (status, recent) = with_token(&s.proxy, "/api/analytics/sessions?limit=10");
    assert_eq!(status, 200);
    assert_eq!(recent["total_count"], 2);
    let ids: Vec<&str> = recent["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![dave_sid.as_str(), carol_sid.as_str()], "newest first");
    assert_eq!(with_token(&s.proxy, "/api/analytics/sessions?limit=1").1["sessions"].as_array().unwrap().len(), 1);

    let (status, peak) = with_token(&s.proxy, "/api/analytics/activity/peak-hours?days=7");
    assert_eq!(status, 200);
    assert_eq!((peak["days"].as_i64(), peak["timezone"].as_str()), (Some(7), Some("UTC")));
    assert_eq!(peak["total"], 5, "{peak}");
    let matrix = peak["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 7);
    assert!(matrix.iter().all(|row| row.as_array().unwrap().len() == 24));
    let cells: i64 = matrix.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(cells, 5);
    // The peak cell is the weekday of this test (at its start or, across midnight, its end).
    let now = chrono::Utc::now();
    use chrono::Datelike;
    let weekday = peak["peak"]["weekday_index"].as_u64().unwrap() as u32;
    assert!([started, now].iter().any(|t| t.weekday().num_days_from_monday() == weekday), "{peak}");
    let p = &peak["peak"];
    use chrono::Timelike;
    let hour = p["hour"].as_u64().unwrap() as u32;
    assert!([started, now].iter().any(|t| t.hour() == hour), "the peak is at this test's hour: {peak}");
    assert_eq!(matrix[weekday as usize][hour as usize], p["value"]);
    if started.hour() == now.hour() {
        assert_eq!(p["value"], 5, "all five views in one cell: {peak}");
    }
    let (_, logins) = with_token(&s.proxy, "/api/analytics/activity/peak-hours?metric=sessions_started");
    assert_eq!(logins["total"], 2);
    for (q, param) in [("days=0", "days"), ("days=32", "days"), ("metric=unique_users", "metric")] {
        let (status, body) = with_token(&s.proxy, &format!("/api/analytics/activity/peak-hours?{q}"));
        assert_eq!((status, body["parameter"].as_str()), (400, Some(param)), "{q}");
    }

    let today = started.format("%Y-%m-%d").to_string();
    let (_, stats) = with_token(&s.proxy, &format!("/api/analytics/sessions/stats?date={today}"));
    assert_eq!(stats["date"].as_str(), Some(today.as_str()));
    if now.date_naive() == started.date_naive() {
        assert_eq!(stats["page_views_today"], 5);
    }
    let (_, old) = with_token(&s.proxy, "/api/analytics/sessions/stats?date=2020-01-01");
    assert_eq!((old["total_sessions_today"].as_i64(), old["page_views_today"].as_i64()), (Some(0), Some(0)));
    assert_eq!(with_token(&s.proxy, "/api/analytics/sessions/stats?date=tomorrow").1["parameter"], "date");
}

/// `docs/openapi.yaml` is served as is, is a valid OpenAPI 3.1 document, and every response
/// the API gives in a scenario (every operation, and its errors) validates against it.
#[test]
fn openapi_document_matches_real_responses() {
    let s = setup();
    let spec = std::fs::read_to_string(repo_root().join("docs/openapi.yaml")).unwrap();
    let r = client().get(s.proxy.url("/api/analytics/openapi.yaml")).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().contains("yaml"));
    assert_eq!(r.text().unwrap(), spec, "the served document is docs/openapi.yaml");

    let erin = login(&s.proxy.url(""), "erin", "user");
    let frank = login(&s.proxy.url(""), "frank", "user");
    let (erin_sid, frank_sid) = (erin.rsplit_once('.').unwrap().0.to_owned(), frank.rsplit_once('.').unwrap().0.to_owned());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    // Issue 17: a funnel defined before the reads, so its report has a 200 to record.
    let defined = client()
        .post(s.proxy.url("/api/analytics/funnels"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&serde_json::json!({"name": "browse", "steps": ["/", "/echo/items/:id"]}))
        .send()
        .unwrap();
    let defined = serde_json::json!({"path": "/api/analytics/funnels", "method": "POST", "status": defined.status().as_u16(), "body": defined.json::<Value>().unwrap(), "content_type": "application/json"});
    assert_eq!(defined["status"], 200, "{defined}");
    page_view(&s.proxy, &erin, "/");
    page_view(&s.proxy, &erin, "/echo/items/7");
    page_view(&s.proxy, &frank, "/");
    wait_page_views(&s.redis, &erin_sid, 2);
    wait_page_views(&s.redis, &frank_sid, 1);
    client().post(s.proxy.url("/logout")).header("cookie", format!("session={frank}")).send().unwrap();
    wait_until("frank's session ended", Duration::from_secs(15), || {
        with_token(&s.proxy, &format!("/api/analytics/sessions/{frank_sid}")).1["end_reason"] == "logout"
    });

    let hour = chrono::Utc::now().format("%Y-%m-%dT%H").to_string();
    let paths = [
        "/api/analytics/sessions/active".to_owned(),
        "/api/analytics/sessions/stats".into(),
        "/api/analytics/sessions?limit=5".into(),
        "/api/analytics/users/erin/sessions?limit=5".into(),
        "/api/analytics/users/nobody/sessions".into(),
        format!("/api/analytics/sessions/{erin_sid}"),
        format!("/api/analytics/sessions/{frank_sid}"),
        "/api/analytics/sessions/no-such-session".into(),
        "/api/analytics/pages/top".into(),
        format!("/api/analytics/pages/top?period=hour&date={hour}"),
        "/api/analytics/devices".into(),
        "/api/analytics/geo".into(),
        "/api/analytics/sessions/durations".into(),
        "/api/analytics/sessions/durations?date=2020-01-01".into(),
        "/api/analytics/timeseries?metric=unique_users&granularity=day".into(),
        "/api/analytics/timeseries".into(),
        "/api/analytics/activity/peak-hours".into(),
        "/api/analytics/activity/peak-hours?days=1&metric=errors".into(),
        "/api/analytics/pages/top?limit=0".into(),
        "/api/analytics/timeseries?granularity=week".into(),
        "/api/analytics/no-such-endpoint".into(),
        "/api/analytics/sessions/anomalies?severity=low&limit=5".into(),
        "/api/analytics/sessions/anomalies?severity=urgent".into(),
        format!("/api/analytics/sessions/replay/{erin_sid}"),
        "/api/analytics/sessions/replay/no-such-session".into(),
        "/api/analytics/users/erin/behavior-patterns".into(),
        "/api/analytics/users/frank/behavior-patterns?limit=1".into(),
        "/api/analytics/users/nobody/behavior-patterns".into(),
        "/api/analytics/users/erin/behavior-patterns?limit=0".into(),
        "/api/analytics/sessions/online".into(),
        "/api/analytics/sessions/online?limit=0".into(),
        format!("/api/analytics/sessions/stats?from={today}&to={today}"),
        "/api/analytics/pages/top?from=2026-10-30&to=2026-11-02".into(),
        "/api/analytics/devices?period=hour&from=2026-10-31T22&to=2026-11-01T01".into(),
        "/api/analytics/geo?from=2026-10-30&to=2026-11-02".into(),
        "/api/analytics/sessions/durations?from=2026-10-30&to=2026-11-02".into(),
        "/api/analytics/sessions/anomalies?from=2026-10-30&to=2026-11-02".into(),
        "/api/analytics/pages/top?from=2026-11-02&to=2026-11-01".into(),
        "/api/analytics/acquisition".into(),
        format!("/api/analytics/acquisition?period=hour&from={hour}&to={hour}&limit=3"),
        "/api/analytics/acquisition?from=2020-01-01".into(),
        "/api/analytics/funnels".into(),
        format!("/api/analytics/funnels/browse?from={today}"),
        "/api/analytics/funnels/nosuch".into(),
        "/api/analytics/retention".into(),
        "/api/analytics/retention?granularity=day&from=2026-10-30&to=2026-11-02".into(),
        "/api/analytics/retention?granularity=year".into(),
    ];
    let bad_rules = client()
        .post(s.proxy.url("/api/analytics/sessions/alerts/configure"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&serde_json::json!([{"detector": "telepathy", "log": true}]))
        .send()
        .unwrap();
    let bad_rules = serde_json::json!({"path": "/api/analytics/sessions/alerts/configure", "method": "POST", "status": bad_rules.status().as_u16(), "body": bad_rules.json::<Value>().unwrap(), "content_type": "application/json"});
    let mut recorded: Vec<Value> = paths
        .iter()
        .map(|p| {
            let (status, body) = with_token(&s.proxy, p);
            serde_json::json!({"path": p, "status": status, "body": body, "content_type": "application/json"})
        })
        .collect();
    recorded.push(defined);
    let bearer = format!("Bearer {TOKEN}");
    for p in ["/api/analytics/acquisition?format=csv", "/api/analytics/funnels/browse?format=csv", "/api/analytics/retention?format=csv"] {
        let r = call(&s.proxy, reqwest::Method::GET, p, &[("authorization", &bearer)]);
        assert_eq!((r["status"].as_u64(), r["content_type"].as_str()), (Some(200), Some("text/csv; charset=utf-8")), "{r}");
        recorded.push(r);
    }
    let (status, body) = get(&s.proxy, "/api/analytics/sessions/active", &[]);
    recorded.push(serde_json::json!({"path": "/api/analytics/sessions/active", "status": status, "body": body, "content_type": "application/json"}));
    let (status, body) = get(&s.proxy, "/api/analytics/sessions/stats", &[("cookie", &format!("session={erin}"))]);
    recorded.push(serde_json::json!({"path": "/api/analytics/sessions/stats", "status": status, "body": body, "content_type": "application/json"}));
    let (status, body) = get(&s.proxy, "/api/analytics/geo", &[("authorization", &format!("Bearer {TOKEN}")), ("origin", "https://evil.example")]);
    recorded.push(serde_json::json!({"path": "/api/analytics/geo", "status": status, "body": body, "content_type": "application/json"}));
    let r = client().post(s.proxy.url("/api/analytics/devices")).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    let status = r.status().as_u16();
    recorded.push(serde_json::json!({"path": "/api/analytics/devices", "method": "POST", "status": status, "body": r.json::<Value>().unwrap(), "content_type": "application/json"}));
    // The changes, last (they revoke erin's session): with the token, then one user's data
    // exported and erased, then the audit log.
    for (method, path) in [
        (reqwest::Method::DELETE, format!("/api/analytics/sessions/{erin_sid}")),
        (reqwest::Method::DELETE, "/api/analytics/sessions/no-such-session".to_owned()),
        (reqwest::Method::POST, "/api/analytics/users/frank/revoke".to_owned()),
        (reqwest::Method::POST, "/api/analytics/sessions/alerts/configure".to_owned()),
        (reqwest::Method::GET, "/api/analytics/sessions/alerts/configure".to_owned()),
    ] {
        let rules = serde_json::json!([{"detector": "*", "min_severity": "medium", "log": true}]);
        let r = client().request(method.clone(), s.proxy.url(&path)).header("authorization", format!("Bearer {TOKEN}")).json(&rules).send().unwrap();
        let status = r.status().as_u16();
        recorded.push(serde_json::json!({"path": path, "method": method.as_str(), "status": status, "body": r.json::<Value>().unwrap(), "content_type": "application/json"}));
    }
    recorded.extend(export_and_erase(&s, &erin_sid, &frank_sid));
    let audit = call(&s.proxy, reqwest::Method::GET, "/api/analytics/audit?limit=5", &[("authorization", &format!("Bearer {TOKEN}"))]);
    let entries = audit["body"]["entries"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.starts_with(&["erase_user", "erase_user", "export_user"]), "newest first: {audit}");
    assert!(entries[0]["target"].as_str().is_some_and(|t| t.starts_with("sha256:")), "erased under a pseudonym: {audit}");
    assert!(!audit.to_string().contains("frank"), "the audit log keeps no trace of an erased user: {audit}");
    recorded.push(audit);
    recorded.push(bad_rules);
    let (status, first_event) = first_sse_event(&s.proxy);
    assert!(first_event.starts_with("event: active\ndata: {"), "{first_event}");
    recorded.push(serde_json::json!({"path": "/api/analytics/stream/active", "status": status, "body": null, "content_type": "text/event-stream"}));
    recorded.push(serde_json::json!({"path": "/api/analytics/openapi.yaml", "status": 200, "body": null, "content_type": "application/yaml"}));
    // The new reads answered with data, not just with a valid shape.
    let answer = |path: &str| recorded.iter().find(|r| r["path"] == path).unwrap()["body"].clone();
    let online = answer("/api/analytics/sessions/online");
    assert_eq!(online["sessions"].as_array().map(|s| s.iter().map(|x| x["user_id"].clone()).collect::<Vec<_>>()), Some(vec![Value::from("erin")]), "{online}");
    assert_eq!(answer("/api/analytics/users/erin/behavior-patterns")["requests"], 2);
    let funnel = answer(&format!("/api/analytics/funnels/browse?from={today}"));
    assert_eq!(funnel["steps"][0]["sessions"], 2, "erin and frank viewed /: {funnel}");
    assert_eq!(funnel["steps"][1]["sessions"], 1, "erin went on to an item: {funnel}");
    assert_eq!(answer("/api/analytics/acquisition")["referrers"][0]["name"], "(direct)");
    let statuses: Vec<i64> = recorded.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    for expected in [200, 400, 401, 403, 404, 405] {
        assert!(statuses.contains(&expected), "the scenario exercises a {expected}: {statuses:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("responses.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&recorded).unwrap()).unwrap();
    let out = std::process::Command::new(venv_python(FlaskSession::V08))
        .arg(repo_root().join("tests/python/check_openapi.py"))
        .arg(repo_root().join("docs/openapi.yaml"))
        .arg(&file)
        .arg("--require-all")
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "responses do not conform to docs/openapi.yaml:\n{report}");
    assert!(report.contains(&format!("validated {} responses", recorded.len())), "{report}");
    let log = s.app.requests_log();
    assert!(!log.iter().any(|l| l.contains("/api/")), "the app saw API requests: {log:?}");
}

/// One request with `headers`, recorded as `check_openapi.py` reads it (status, body, content type).
fn call(proxy: &Proxy, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> Value {
    let mut req = client().request(method.clone(), proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    serde_json::json!({"path": path, "method": method.as_str(), "status": status, "body": r.json::<Value>().unwrap_or(Value::Null), "content_type": content_type})
}

/// One user's data, as `openapi_document_matches_real_responses` exercises it after the
/// revocations: erin's export (with a session cookie, refused without the CSRF header, and with
/// the token), an export of a user nothing is held about, then frank's erasure: counted dry,
/// done, done again (zeros), a bad `dry_run`, and his export once erased (404). Returns the
/// recorded responses.
fn export_and_erase(s: &Setup, erin_sid: &str, frank_sid: &str) -> Vec<Value> {
    use reqwest::Method;
    let bearer = format!("Bearer {TOKEN}");
    let token = [("authorization", bearer.as_str())];
    let mut recorded = Vec::new();

    let admin = login(&s.proxy.url(""), "boss", "admin");
    let cookie = format!("session={admin}");
    let no_csrf = call(&s.proxy, Method::GET, "/api/analytics/users/erin/export", &[("cookie", &cookie)]);
    assert_eq!((no_csrf["status"].as_u64(), no_csrf["body"]["error"].as_str()), (Some(403), Some("forbidden")), "{no_csrf}");
    let with_csrf = call(&s.proxy, Method::GET, "/api/analytics/users/erin/export", &[("cookie", &cookie), ("x-sting-csrf", "1")]);
    assert_eq!(with_csrf["status"], 200, "{with_csrf}");
    recorded.extend([no_csrf, with_csrf]);

    let export = call(&s.proxy, Method::GET, "/api/analytics/users/erin/export", &token);
    let body = &export["body"];
    assert_eq!((export["status"].as_u64(), body["user_id"].as_str()), (Some(200), Some("erin")), "{export}");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{export}");
    let session = &sessions[0];
    assert_eq!((session["session_id"].as_str(), session["end_reason"].as_str()), (Some(erin_sid), Some("revoked")), "{export}");
    assert_eq!(session["email"], "erin@example.com", "opened: {export}");
    let views = session["actions"].as_array().unwrap().iter().filter(|a| a["action"] == "page_view").count();
    assert_eq!(views, 2, "{export}");
    let routes: Vec<&str> = session["requests"].as_array().unwrap().iter().filter_map(|r| r["route"].as_str()).collect();
    assert!(routes.contains(&"/echo/items/:id"), "the request timeline: {export}");
    assert_eq!((body["behavior"]["user_id"].as_str(), body["behavior"]["requests"].as_i64()), (Some("erin"), Some(2)), "{export}");
    let audited = body["audit"].as_array().unwrap();
    assert!(audited.iter().any(|e| e["action"] == "revoke_session" && e["target"] == erin_sid), "{export}");
    recorded.push(export);

    let nobody = call(&s.proxy, Method::GET, "/api/analytics/users/nobody/export", &token);
    assert_eq!((nobody["status"].as_u64(), nobody["body"]["error"].as_str()), (Some(404), Some("not_found")), "{nobody}");
    recorded.push(nobody);

    let exists = |key: &str| redis::cmd("EXISTS").arg(key).query::<i64>(&mut s.redis.conn()).unwrap() == 1;
    let record = format!("sting:analytics:session:{frank_sid}");
    assert!(exists(&record));
    let dry = call(&s.proxy, Method::DELETE, "/api/analytics/users/frank?dry_run=true", &token);
    let counts = |v: &Value| (v["body"]["sessions"].as_u64(), v["body"]["keys_deleted"].as_u64(), v["body"]["entries_removed"].as_u64());
    assert_eq!((dry["status"].as_u64(), dry["body"]["user_id"].as_str(), dry["body"]["dry_run"].as_bool()), (Some(200), Some("frank"), Some(true)), "{dry}");
    let (sessions, keys, entries) = counts(&dry);
    assert_eq!(sessions, Some(1), "{dry}");
    assert!(keys.unwrap() > 0 && entries.unwrap() > 0, "frank's record, his index, the recent index, his revocation: {dry}");
    assert!(exists(&record), "a dry run removes nothing");

    let erased = call(&s.proxy, Method::DELETE, "/api/analytics/users/frank", &token);
    assert_eq!((erased["status"].as_u64(), erased["body"]["dry_run"].as_bool()), (Some(200), Some(false)), "{erased}");
    assert_eq!(counts(&erased), counts(&dry), "the dry run counted what the erasure removed: {dry} {erased}");
    let left: Vec<String> = [format!("*{frank_sid}*"), "*frank*".to_owned()]
        .iter()
        .flat_map(|p| redis::cmd("KEYS").arg(p).query::<Vec<String>>(&mut s.redis.conn()).unwrap())
        .collect();
    assert!(left.is_empty(), "keys left about frank: {left:?}");
    let again = call(&s.proxy, Method::DELETE, "/api/analytics/users/frank", &token);
    assert_eq!((again["status"].as_u64(), counts(&again)), (Some(200), (Some(0), Some(0), Some(0))), "idempotent: {again}");

    let bad = call(&s.proxy, Method::DELETE, "/api/analytics/users/frank?dry_run=maybe", &token);
    assert_eq!((bad["status"].as_u64(), bad["body"]["parameter"].as_str()), (Some(400), Some("dry_run")), "{bad}");
    let gone = call(&s.proxy, Method::GET, "/api/analytics/users/frank/export", &token);
    assert_eq!(gone["status"], 404, "nothing is held about an erased user: {gone}");
    recorded.extend([dry, erased, again, bad, gone]);
    recorded
}

/// Opens the live stream and returns its status and first `active` event.
fn first_sse_event(proxy: &Proxy) -> (u16, String) {
    use std::io::Read;
    let mut r = client().get(proxy.url("/api/analytics/stream/active")).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    while !seen.contains("event: active") || !seen[seen.find("event: active").unwrap()..].contains("\n\n") {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let start = seen.find("event: active").unwrap();
    let end = start + seen[start..].find("\n\n").unwrap();
    (status, seen[start..end].to_owned())
}
