//! Issue 17 end to end, with exact numbers: acquisition (referrer domains and UTM tags of the
//! page view that starts a session), funnels (only in-order progress counts), retention cohorts
//! over weeks, ranges across month ends, CSV answers, and the per-day bound on client-chosen
//! acquisition values. Real Redis, the real Flask app and the proxy binary; back-dated traffic
//! goes through the writer's real write path (`Writer::backfill`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use redis::Commands;
use serde_json::Value;
use sting_proxy::capture::request_event::{CaptureEvent, RequestEvent};
use sting_proxy::identity::{AuthSource, Identity};

const TOKEN: &str = "integration-analytics-token";

struct Setup {
    redis: RedisServer,
    _app: FlaskApp,
    proxy: Proxy,
}

fn setup(analytics_toml: &str) -> Setup {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.extra_toml = Box::leak(format!("[analytics]\nbatch_max_delay_ms = 5\nretention_days = 400\n{analytics_toml}\n").into_boxed_str());
    opts.env = vec![("STING_ANALYTICS_TOKEN", TOKEN.to_owned()), ("STING_TRUSTED_PROXIES", "127.0.0.0/8".into())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    Setup { redis, _app: app, proxy }
}

fn api(proxy: &Proxy, path: &str) -> (u16, Value) {
    let r = client().get(proxy.url(path)).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn api_csv(proxy: &Proxy, path: &str) -> (String, String) {
    let r = client().get(proxy.url(path)).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, r.text().unwrap())
}

/// `name` → (sessions, users) of one acquisition dimension.
fn rows(v: &Value, dim: &str) -> Vec<(String, i64, i64)> {
    let mut out: Vec<(String, i64, i64)> = v[dim]
        .as_array()
        .unwrap_or_else(|| panic!("{dim} in {v}"))
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["sessions"].as_i64().unwrap(), r["users"].as_i64().unwrap()))
        .collect();
    out.sort();
    out
}

fn row(name: &str, sessions: i64, users: i64) -> (String, i64, i64) {
    (name.to_owned(), sessions, users)
}

/// A navigation (a page view) with an optional cookie and `Referer`; returns the session cookie
/// the app set, if any.
fn navigate(proxy: &Proxy, path: &str, cookie: Option<&str>, referer: Option<&str>) -> Option<String> {
    let mut req = client().get(proxy.url(path)).header("accept", "text/html");
    if let Some(c) = cookie {
        req = req.header("cookie", format!("session={c}"));
    }
    if let Some(r) = referer {
        req = req.header("referer", r);
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    set_cookie_value(&r, "session")
}

/// Sessions arriving with referrers and UTM tags: only the page view that starts a session
/// counts, same-site referrers are direct, the full referrer URL is never stored, and a
/// signed-in session's user is counted.
#[test]
fn acquisition_counts_the_source_of_each_sessions_first_page_view() {
    let s = setup("");
    let own = format!("http://127.0.0.1:{}/pricing", s.proxy.port);
    // 1: a newsletter link opened in webmail; its second page view (from elsewhere) is no landing.
    let s1 = navigate(
        &s.proxy,
        "/anon?utm_source=Newsletter&utm_medium=email&utm_campaign=Winter%20Sale",
        None,
        Some("https://Mail.Example.COM/inbox?secret=hunter2"),
    )
    .expect("a new session");
    navigate(&s.proxy, "/echo/next", Some(&s1), Some("https://elsewhere.example/later"));
    // 2: a news link. 3: from our own site (direct). 4: tagged, without a referrer.
    let s2 = navigate(&s.proxy, "/anon", None, Some("https://news.example.org/story/42")).expect("a new session");
    let s3 = navigate(&s.proxy, "/anon", None, Some(&own)).expect("a new session");
    navigate(&s.proxy, "/anon?utm_source=Newsletter", None, None).expect("a new session");
    // 5: a signed-in user whose first page view came from a search.
    let alice = login(&s.proxy.url(""), "alice", "user");
    navigate(&s.proxy, "/echo/home", Some(&alice), Some("https://www.google.com/search?q=private+words"));
    navigate(&s.proxy, "/echo/home2", Some(&alice), Some("https://www.bing.com/"));

    let day = today();
    let mut v = Value::Null;
    wait_until("five landings recorded", Duration::from_secs(15), || {
        v = api(&s.proxy, &format!("/api/analytics/acquisition?date={day}")).1;
        v["sessions"] == 5
    });
    assert_eq!(
        rows(&v, "referrers"),
        vec![row("(direct)", 2, 0), row("mail.example.com", 1, 0), row("news.example.org", 1, 0), row("www.google.com", 1, 1)],
        "{v}"
    );
    assert_eq!(rows(&v, "utm_source"), vec![row("Newsletter", 2, 0)]);
    assert_eq!(rows(&v, "utm_medium"), vec![row("email", 1, 0)]);
    assert_eq!(rows(&v, "utm_campaign"), vec![row("Winter Sale", 1, 0)]);
    // The hour and a range give the same (all of it happened now).
    let hour = chrono::Utc::now().format("%Y-%m-%dT%H").to_string();
    let (_, by_hour) = api(&s.proxy, &format!("/api/analytics/acquisition?period=hour&date={hour}"));
    if by_hour["sessions"] == 5 {
        assert_eq!(rows(&by_hour, "referrers"), rows(&v, "referrers"));
    }
    // A one-request session is a light record: no journey key of its own. Its second page view
    // (promoting it) is not a second landing.
    let sid = |cookie: &str| cookie.rsplit_once('.').unwrap().0.to_owned();
    let mut c = s.redis.conn();
    assert!(!c.exists::<_, bool>(format!("sting:analytics:session:{}:journey", sid(&s3))).unwrap());
    assert!(c.hexists::<_, _, bool>(format!("sting:analytics:light:{day}"), sid(&s2)).unwrap(), "s2 is light");
    navigate(&s.proxy, "/echo/again", Some(&s2), Some("https://later.example/"));
    wait_until("s2 promoted", Duration::from_secs(15), || {
        c.hget::<_, _, Option<i64>>(format!("sting:analytics:session:{}", sid(&s2)), "page_views").unwrap() == Some(2)
    });
    let (_, again) = api(&s.proxy, &format!("/api/analytics/acquisition?date={day}"));
    assert_eq!((again["sessions"].as_i64(), rows(&again, "referrers")), (Some(5), rows(&v, "referrers")), "{again}");
    let (_, ranged) = api(&s.proxy, &format!("/api/analytics/acquisition?from={day}&to={day}&limit=2"));
    assert_eq!(ranged["referrers"].as_array().unwrap().len(), 2, "limit: {ranged}");
    assert_eq!(ranged["referrers"][0]["name"], "(direct)", "the largest first: {ranged}");
    // CSV of the same answer.
    let (ct, csv) = api_csv(&s.proxy, &format!("/api/analytics/acquisition?date={day}&format=csv"));
    assert_eq!(ct, "text/csv; charset=utf-8");
    assert!(csv.starts_with("table,name,sessions,users\r\n"), "{csv}");
    assert!(csv.contains("\r\nreferrers,www.google.com,1,1\r\n") && csv.contains("\r\nutm_campaign,Winter Sale,1,0\r\n"), "{csv}");
    // Nothing of a referrer but its domain is kept anywhere.
    for (k, text) in redis_dump(&s.redis) {
        for secret in ["hunter2", "inbox", "private+words", "private words", "story/42", "elsewhere.example", "www.bing.com", "later.example"] {
            assert!(!k.contains(secret) && !text.contains(secret), "{secret:?} stored in {k}");
        }
    }
    // Bad parameters are named.
    for (q, p) in
        [("from=2026-13-01", "from"), ("from=2026-11-02&to=2026-11-01", "from"), ("date=2026-11-01&from=2026-11-01", "date"), ("format=xml", "format")]
    {
        let (status, body) = api(&s.proxy, &format!("/api/analytics/acquisition?{q}"));
        assert_eq!((status, body["parameter"].as_str()), (400, Some(p)), "{q}: {body}");
    }
    let (status, body) = api(&s.proxy, "/api/analytics/pages/top?from=2020-01-01&to=2026-01-01");
    assert_eq!((status, body["parameter"].as_str()), (400, Some("to")), "longer than 92 days: {body}");
}

/// A three-step funnel (a page, an action, a page): sessions that skip or reorder steps only
/// count the steps they reached in order. Funnels come from the config and from the API.
#[test]
fn funnels_count_only_in_order_progress() {
    let s = setup(
        r#"
[[analytics.actions]]
method = "POST"
route = "/echo/signup"
name = "signed_up"

[[analytics.funnels]]
name = "signup"
steps = ["/echo/pricing", "signed_up", "/echo/welcome"]
"#,
    );
    let base = s.proxy.url("");
    // An API-defined funnel, defined before its traffic.
    let define = |body: Value| {
        let r = client().post(s.proxy.url("/api/analytics/funnels")).header("authorization", format!("Bearer {TOKEN}")).json(&body).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (status, created) = define(serde_json::json!({"name": "checkout", "steps": ["/echo/cart", "/echo/pay"]}));
    assert_eq!(status, 200, "{created}");
    assert_eq!(define(serde_json::json!({"name": "checkout", "steps": ["/echo/a", "/echo/b"]})).1["parameter"], "name", "no redefinition");
    assert_eq!(define(serde_json::json!({"name": "signup", "steps": ["/echo/a", "/echo/b"]})).1["parameter"], "name", "configured names are taken");
    assert_eq!(define(serde_json::json!({"name": "one", "steps": ["/echo/a"]})).1["parameter"], "steps");
    assert_eq!(define(serde_json::json!({"name": "Bad Name", "steps": ["/echo/a", "/echo/b"]})).1["parameter"], "name");
    let r = client()
        .post(s.proxy.url("/api/analytics/funnels"))
        .header("authorization", "Bearer wrong-token-0000000000")
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "defining a funnel needs the API's credentials");

    let step = |cookie: &str, what: &str| match what {
        "signup" => {
            let r = client().post(s.proxy.url("/echo/signup")).header("cookie", format!("session={cookie}")).json(&serde_json::json!({})).send().unwrap();
            assert_eq!(r.status(), 200);
        }
        page => {
            navigate(&s.proxy, &format!("/echo/{page}"), Some(cookie), None);
        }
    };
    let anonymous = || navigate(&s.proxy, "/anon", None, None).expect("a session");
    let journeys: Vec<(String, Vec<&str>)> = vec![
        (login(&base, "ann", "user"), vec!["pricing", "signup", "welcome"]),            // 1, 2, 3
        (login(&base, "bob", "user"), vec!["pricing", "welcome", "signup"]),            // 1, 2
        (anonymous(), vec!["signup", "welcome", "pricing"]),                            // 1
        (login(&base, "ann", "user"), vec!["welcome", "pricing", "signup", "welcome"]), // 1, 2, 3
        (anonymous(), vec!["welcome"]),                                                 // none
        (login(&base, "cat", "user"), vec!["signup", "pricing", "pricing", "welcome"]), // 1
        (anonymous(), vec!["cart", "pay", "pay"]),                                      // checkout 1, 2
    ];
    for (cookie, steps) in &journeys {
        for st in steps {
            step(cookie, st);
        }
    }
    let day = today();
    let mut v = Value::Null;
    wait_until("the funnel's last step", Duration::from_secs(15), || {
        v = api(&s.proxy, &format!("/api/analytics/funnels/signup?from={day}&to={day}")).1;
        v["steps"][2]["sessions"] == 2 && v["steps"][0]["sessions"] == 5
    });
    let got: Vec<(i64, i64)> = v["steps"].as_array().unwrap().iter().map(|s| (s["sessions"].as_i64().unwrap(), s["users"].as_i64().unwrap())).collect();
    assert_eq!(got, vec![(5, 3), (3, 2), (2, 1)], "sessions and users per step: {v}");
    assert_eq!(v["steps"][1]["conversion"], 0.6, "{v}");
    assert_eq!(v["steps"][2]["conversion"], 0.6667, "{v}");
    assert_eq!(v["steps"][2]["conversion_from_start"], 0.4, "{v}");
    assert_eq!(v["steps"][0]["conversion"], Value::Null);
    assert_eq!(v["steps"][1]["goal"], "signed_up");
    // The checkout journey came last: its batch may land after the signup funnel's.
    let mut checkout = Value::Null;
    wait_until("the checkout funnel's last step", Duration::from_secs(15), || {
        checkout = api(&s.proxy, "/api/analytics/funnels/checkout").1;
        checkout["steps"][1]["sessions"] != 0
    });
    let got: Vec<i64> = checkout["steps"].as_array().unwrap().iter().map(|s| s["sessions"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![1, 1], "a repeated step counts once: {checkout}");
    let (code, out, err) = s.proxy.cli(&["--json", "funnels", "signup", "--from", &day, "--to", &day]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), v, "the CLI's funnel is the API's");
    let (code, table, _) = s.proxy.cli(&["funnels", "signup", "--from", &day, "--to", &day]);
    assert_eq!(code, 0);
    assert!(table.contains("signed_up") && table.contains("0.6667"), "{table}");
    let (_, list) = api(&s.proxy, "/api/analytics/funnels");
    let names: Vec<&str> = list["funnels"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["checkout", "signup"]);
    assert_eq!(api(&s.proxy, "/api/analytics/funnels/nosuch").0, 404);
    let (_, csv) = api_csv(&s.proxy, &format!("/api/analytics/funnels/signup?date={day}&format=csv"));
    assert_eq!(
        csv,
        "conversion,conversion_from_start,goal,sessions,step,users\r\n,,/echo/pricing,5,1,3\r\n0.6,0.6,signed_up,3,2,2\r\n0.6667,0.4,/echo/welcome,2,3,1\r\n"
    );
    // The audit log has the definition.
    let (_, audit) = api(&s.proxy, "/api/analytics/audit?limit=10");
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "define_funnel" && e["target"] == "checkout"), "{audit}");
}

// ------------------------------------------------------------------------------------------
// Back-dated traffic through the writer's real write path.
// ------------------------------------------------------------------------------------------

/// Writes events through `Writer::backfill` with the config `analytics_toml`.
struct Backfiller {
    rt: tokio::runtime::Runtime,
    backfill: sting_proxy::capture::writer::Backfill,
    _dir: tempfile::TempDir,
}

impl Backfiller {
    fn new(redis: &RedisServer, analytics_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sting.toml");
        std::fs::write(&file, format!("[analytics]\nretention_days = 400\n{analytics_toml}\n")).unwrap();
        let url = redis.url();
        let env = move |k: &str| match k {
            "SESSION_SECRET_KEY" => Some(SECRET.to_owned()),
            "REDIS_URL" => Some(url.clone()),
            _ => None,
        };
        let cfg = sting_proxy::config::Config::load_with_env(Some(&file), env).expect("config");
        let store = sting_proxy::store::RedisStore::new(
            &sting_proxy::config::redis_target::RedisTarget::Standalone { url: redis.url() },
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
        .unwrap();
        let privacy = Arc::new(sting_proxy::capture::privacy::Privacy::new(&cfg));
        let (_handle, writer) =
            sting_proxy::capture::writer::channel(&cfg.analytics, &cfg.security, cfg.session.lifetime_secs(), store, Duration::from_secs(5), privacy).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Backfiller { rt, backfill: writer.backfill(), _dir: dir }
    }

    fn write(&mut self, events: Vec<RequestEvent>) {
        let events: Vec<CaptureEvent> = events.into_iter().map(|e| CaptureEvent::Request(std::sync::Arc::new(e))).collect();
        let sent = self.rt.block_on(self.backfill.write(&events));
        assert!(sent > 0);
    }
}

fn at(iso: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso).unwrap().timestamp_millis()
}

/// A page view at `iso` of session `sid` (signed in as `user` if given).
fn page_view(iso: &str, sid: &str, user: Option<&str>, path: &str, referrer: Option<&str>) -> RequestEvent {
    RequestEvent {
        ts_ms: at(iso),
        sid: Some(sid.to_owned()),
        identity: user.map(|u| {
            Arc::new(Identity {
                user_id: u.into(),
                email: None,
                role: None,
                session_id: sid.into(),
                source: AuthSource::FlaskSession,
                aal: None,
                methods: vec![],
                authenticated_at: None,
            })
        }),
        path: path.into(),
        template: path.into(),
        auth_outcome: "flask_redis_hit",
        status: 200,
        latency_us: 1000,
        upstream_latency_us: Some(800),
        bytes_out: 100,
        ip: Some("81.2.69.1".parse().unwrap()),
        referrer: referrer.map(str::to_owned),
        host: referrer.map(|_| "app.example".to_owned()),
        navigation: true,
        ..RequestEvent::default()
    }
}

/// Users returning in later weeks: weekly and daily cohorts by first-seen day, with the share
/// active in each following period; the range crosses a month end.
#[test]
fn retention_cohorts_of_users_returning_in_later_weeks() {
    let s = setup("");
    let mut b = Backfiller::new(&s.redis, "");
    // Weeks (Monday first): W1 2026-10-05, W2 10-12, W3 10-19, W4 10-26 .. 11-01.
    let visits = [
        ("2026-10-05T09:00:00Z", "u1"),
        ("2026-10-07T09:00:00Z", "u2"),
        ("2026-10-12T09:00:00Z", "u3"),
        ("2026-10-13T09:00:00Z", "u1"),
        ("2026-10-13T10:00:00Z", "u4"),
        ("2026-10-14T09:00:00Z", "u2"),
        ("2026-10-20T09:00:00Z", "u3"),
        ("2026-10-27T09:00:00Z", "u1"),
        ("2026-11-01T23:00:00Z", "u1"),
    ];
    for (i, (iso, user)) in visits.iter().enumerate() {
        b.write(vec![page_view(iso, &format!("s{i}"), Some(user), "/home", None)]);
    }
    let (status, v) = api(&s.proxy, "/api/analytics/retention?granularity=week&from=2026-10-05&to=2026-11-01");
    let (code, out, err) = s.proxy.cli(&["retention", "--granularity", "week", "--from", "2026-10-05", "--to", "2026-11-01"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), v, "the CLI's retention is the API's");
    assert_eq!(status, 200, "{v}");
    let cohorts: Vec<(String, i64, Vec<i64>, Vec<Value>)> = v["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cohort"].as_str().unwrap().to_owned(),
                c["users"].as_i64().unwrap(),
                c["active"].as_array().unwrap().iter().map(|a| a.as_i64().unwrap()).collect(),
                c["share"].as_array().unwrap().clone(),
            )
        })
        .collect();
    let f = |x: f64| Value::from(x);
    assert_eq!(
        cohorts,
        vec![
            ("2026-10-05".to_owned(), 2, vec![2, 2, 0, 1], vec![f(1.0), f(1.0), f(0.0), f(0.5)]),
            ("2026-10-12".to_owned(), 2, vec![2, 1, 0], vec![f(1.0), f(0.5), f(0.0)]),
            ("2026-10-19".to_owned(), 0, vec![0, 0], vec![Value::Null, Value::Null]),
            ("2026-10-26".to_owned(), 0, vec![0], vec![Value::Null]),
        ],
        "{v}"
    );
    let (_, daily) = api(&s.proxy, "/api/analytics/retention?granularity=day&from=2026-10-05&to=2026-10-07");
    let got: Vec<(i64, Vec<i64>)> = daily["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["users"].as_i64().unwrap(), c["active"].as_array().unwrap().iter().map(|a| a.as_i64().unwrap()).collect()))
        .collect();
    assert_eq!(got, vec![(1, vec![1, 0, 0]), (0, vec![0, 0]), (1, vec![1])], "{daily}");
    assert_eq!(api(&s.proxy, "/api/analytics/retention?granularity=month").1["parameter"], "granularity");
    let (_, csv) = api_csv(&s.proxy, "/api/analytics/retention?granularity=day&from=2026-10-05&to=2026-10-07&format=csv");
    assert_eq!(
        csv,
        "active,cohort,share,users\r\n\"[1,0,0]\",2026-10-05,\"[1.0,0.0,0.0]\",1\r\n\"[0,0]\",2026-10-06,\"[null,null]\",0\r\n[1],2026-10-07,[1.0],1\r\n"
    );
    // Compact: one index field per user and two bitmaps per day of a few bytes.
    let mut c = s.redis.conn();
    assert_eq!(c.hlen::<_, i64>("sting:analytics:users:index").unwrap(), 4);
    let bytes: i64 = c.strlen("sting:analytics:daily:2026-10-13:active_users").unwrap();
    assert!(bytes <= 1, "{bytes} bytes for 4 users");
}

/// Ranges across month ends sum the days' hashes and sets: counters, top pages, acquisition
/// (by day and by hour) and the distinct users; a user who signs in after landing is credited
/// to the landing's source.
#[test]
fn ranges_across_month_ends_and_late_sign_ins() {
    let s = setup("");
    let mut b = Backfiller::new(&s.redis, "");
    b.write(vec![
        page_view("2026-10-30T12:00:00Z", "a0", None, "/x", Some("https://search.example/?q=1")),
        page_view("2026-10-31T23:30:00Z", "a1", None, "/x", Some("https://www.google.com/")),
        page_view("2026-10-31T23:31:00Z", "a1", None, "/y", Some("https://app.example/x")),
    ]);
    // The next batch, past midnight: a1 signs in (credited to google on the 31st), a2 lands.
    b.write(vec![
        page_view("2026-11-01T00:10:00Z", "a1", Some("dora"), "/x", None),
        page_view("2026-11-01T00:30:00Z", "a2", Some("eve"), "/x", Some("https://www.bing.com/")),
        page_view("2026-11-01T00:31:00Z", "a2", Some("eve"), "/x", None),
        page_view("2026-11-02T08:00:00Z", "a3", None, "/x", None),
    ]);
    let (_, top) = api(&s.proxy, "/api/analytics/pages/top?from=2026-10-31&to=2026-11-01");
    assert_eq!(top["pages"], serde_json::json!([{"name": "/x", "count": 4, "unique_sessions": 3}, {"name": "/y", "count": 1, "unique_sessions": 1}]), "{top}");
    assert_eq!((top["from"].as_str(), top["to"].as_str()), (Some("2026-10-31"), Some("2026-11-01")));
    let (_, stats) = api(&s.proxy, "/api/analytics/sessions/stats?from=2026-10-30&to=2026-11-02");
    assert_eq!(
        (stats["page_views_today"].as_i64(), stats["total_sessions_today"].as_i64(), stats["unique_users_today"].as_i64()),
        (Some(7), Some(4), Some(2)),
        "{stats}"
    );
    let (_, acq) = api(&s.proxy, "/api/analytics/acquisition?from=2026-10-31&to=2026-11-01");
    assert_eq!(acq["sessions"], 2);
    assert_eq!(rows(&acq, "referrers"), vec![row("www.bing.com", 1, 1), row("www.google.com", 1, 1)], "{acq}");
    let (_, hours) = api(&s.proxy, "/api/analytics/acquisition?period=hour&from=2026-10-31T23&to=2026-11-01T00");
    assert_eq!(rows(&hours, "referrers"), vec![row("www.bing.com", 1, 1), row("www.google.com", 1, 1)], "{hours}");
    let (_, one) = api(&s.proxy, "/api/analytics/acquisition?date=2026-10-30");
    assert_eq!(rows(&one, "referrers"), vec![row("search.example", 1, 0)], "{one}");
    let (_, wide) = api(&s.proxy, "/api/analytics/acquisition?from=2026-10-30&to=2026-11-02");
    assert_eq!(wide["sessions"], 4);
    // The CLI answers the same ranges as the API.
    let cli_json = |args: &[&str]| {
        let (code, out, err) = s.proxy.cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    assert_eq!(cli_json(&["--json", "acquisition", "--from", "2026-10-30", "--to", "2026-11-02", "--limit", "10"]), wide);
    let (_, stats) = api(&s.proxy, "/api/analytics/sessions/stats?from=2026-10-30&to=2026-11-02");
    let without_time = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("timestamp"));
        v
    };
    assert_eq!(without_time(cli_json(&["--json", "stats", "--from", "2026-10-30", "--to", "2026-11-02"])), without_time(stats));
    let (_, pages) = api(&s.proxy, "/api/analytics/pages/top?from=2026-10-31&to=2026-11-01");
    assert_eq!(cli_json(&["--json", "top", "pages", "--from", "2026-10-31", "--to", "2026-11-01"]), pages);
    let (code, _, err) = s.proxy.cli(&["acquisition", "--from", "2026-11-02", "--to", "2026-11-01"]);
    assert_ne!(code, 0);
    assert!(err.contains("--from") || err.contains("--to"), "{err}");
    assert_eq!(rows(&wide, "referrers")[0], row("(direct)", 1, 0), "{wide}");
    let (_, durations) = api(&s.proxy, "/api/analytics/sessions/durations?from=2026-10-30&to=2026-11-02");
    assert_eq!(durations["from"], "2026-10-30");
    // The CSV of a range is its JSON.
    let (_, csv) = api_csv(&s.proxy, "/api/analytics/pages/top?from=2026-10-31&to=2026-11-01&format=csv");
    assert_eq!(csv, "count,name,unique_sessions\r\n4,/x,3\r\n1,/y,1\r\n");

    // The CLI exports the daily aggregates of the range, as JSON and as CSV.
    let (code, out, err) = s.proxy.cli(&["export", "--from", "2026-10-30", "--to", "2026-11-02", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let per_day: Vec<(&str, i64, i64)> = v["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["date"].as_str().unwrap(), d["page_views"].as_i64().unwrap(), d["landings"].as_i64().unwrap()))
        .collect();
    assert_eq!(per_day, vec![("2026-10-30", 1, 1), ("2026-10-31", 2, 1), ("2026-11-01", 3, 1), ("2026-11-02", 1, 1)], "{out}");
    let (code, out, err) = s.proxy.cli(&["export", "--from", "2026-10-30", "--to", "2026-11-02", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    let table = parse_csv(&out);
    let col = |name: &str| table[0].iter().position(|c| c == name).unwrap_or_else(|| panic!("{name} in {:?}", table[0]));
    let (date, views, users) = (col("date"), col("page_views"), col("unique_users"));
    let got: Vec<(String, String, String)> = table[1..].iter().map(|r| (r[date].clone(), r[views].clone(), r[users].clone())).collect();
    assert_eq!(
        got,
        [("2026-10-30", "1", "0"), ("2026-10-31", "2", "0"), ("2026-11-01", "3", "2"), ("2026-11-02", "1", "0")].map(|(a, b, c)| (
            a.into(),
            b.into(),
            c.into()
        ))
    );
    let (code, _, err) = s.proxy.cli(&["export", "--from", "2026-11-02", "--to", "2026-11-01"]);
    assert!(code != 0 && err.contains("--from"), "{err}");
    let (code, _, err) = s.proxy.cli(&["export", "--from", "2026-01-01", "--to", "2026-11-01"]);
    assert!(code != 0 && err.contains("--to"), "{err}");
}

/// RFC 4180 rows (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// 10,000 sessions with random referrer domains and campaign names add at most N + 1 members
/// (N kept, the rest as `other`) to each day's and hour's sets, and every session still counts.
#[test]
fn hostile_referrers_and_campaigns_are_bounded_per_day() {
    let redis = RedisServer::start();
    let n = 50;
    let mut b = Backfiller::new(&redis, &format!("max_acquisition_values_per_day = {n}\nnew_sessions_per_client_per_minute = 0"));
    let mut seed: u64 = 0x5EED;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed >> 33
    };
    let total = 10_000;
    for chunk in 0..10 {
        let events: Vec<RequestEvent> = (0..total / 10)
            .map(|i| {
                let mut e = page_view("2026-11-15T10:00:00Z", &format!("h{chunk}-{i}"), None, "/", None);
                e.ts_ms += (chunk * 1000 + i) as i64;
                e.referrer = Some(format!("https://r{:x}.example/{}", next(), next()));
                e.host = Some("app.example".into());
                e.query = Some(format!("utm_campaign=c{:x}&utm_source=s{:x}", next(), next()));
                e
            })
            .collect();
        b.write(events);
    }
    let mut c = redis.conn();
    for key in [
        "sting:analytics:daily:2026-11-15:acq:referrers",
        "sting:analytics:daily:2026-11-15:acq:utm_campaign",
        "sting:analytics:daily:2026-11-15:acq:utm_source",
        "sting:analytics:hourly:2026-11-15T10:acq:referrers",
    ] {
        assert_eq!(c.zcard::<_, usize>(key).unwrap(), n + 1, "{key}");
        assert_eq!(c.zscore::<_, _, f64>(key, "other").unwrap(), (total - n) as f64, "{key}");
    }
    let landings: i64 = c.hget("sting:analytics:daily:2026-11-15", "landings").unwrap();
    assert_eq!(landings, total as i64);
}
