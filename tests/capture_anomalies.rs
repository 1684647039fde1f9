//! Session anomaly detection (issue 13): one scenario per detector through the real binary,
//! real Flask-Session app and Kratos stub, with real User-Agent strings and a generated GeoIP
//! database whose cities lie far apart (London, Munich, Linköping, Tokyo); an ordinary session
//! raises nothing; two instances record an anomaly once.

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "anomaly-test-token-0123456789";
const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const LONDON: &str = "81.2.69.7";
const LONDON_OTHER_NET: &str = "81.2.69.200";
const MUNICH: &str = "203.0.113.7";
const LINKOPING: &str = "89.160.20.9";

struct Setup {
    redis: RedisServer,
    _app: FlaskApp,
    proxies: Vec<Proxy>,
    _dir: tempfile::TempDir,
    _kratos: Option<KratosStub>,
}

/// Redis, the app and `n` proxies (trusting loopback as a load balancer, so tests choose the
/// client address) with the generated GeoIP database and `security_toml`.
fn setup(n: usize, security_toml: &str, kratos: Option<KratosStub>) -> Setup {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let dir = tempfile::tempdir().unwrap();
    let (mmdb, asn) = make_mmdbs(dir.path());
    let proxies = (0..n)
        .map(|_| {
            let mut opts = ProxyOpts::new(&redis, app.url());
            opts.kratos = kratos.as_ref().map(KratosStub::url);
            opts.extra_toml = Box::leak(format!("[analytics]\nbatch_max_delay_ms = 5\n[security]\n{security_toml}\n").into_boxed_str());
            opts.env = vec![
                ("STING_TRUSTED_PROXIES", "127.0.0.0/8".into()),
                ("GEOIP_DATABASE", mmdb.display().to_string()),
                ("GEOIP_ASN_DATABASE", asn.display().to_string()),
                ("STING_ANALYTICS_TOKEN", TOKEN.to_owned()),
            ];
            let p = Proxy::start(opts);
            p.wait_ready();
            p
        })
        .collect();
    Setup { redis, _app: app, proxies, _dir: dir, _kratos: kratos }
}

fn login_as(proxy: &Proxy, user: &str, ua: &str, ip: &str) -> String {
    let r = client()
        .post(proxy.url("/login"))
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .json(&serde_json::json!({"user_id": user, "role": "user"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    set_cookie_value(&r, "session").unwrap()
}

fn browse(proxy: &Proxy, cookie: &str, ua: &str, ip: &str) {
    let r = client()
        .get(proxy.url("/"))
        .header("cookie", format!("session={cookie}"))
        .header("accept", "text/html")
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn anomalies(proxy: &Proxy, query: &str) -> serde_json::Value {
    let r = client().get(proxy.url(&format!("/api/analytics/sessions/anomalies?{query}"))).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

/// The detectors that fired for `sid`, once its `hits` reached `hits`.
fn detected(s: &Setup, sid: &str, hits: i64) -> Vec<String> {
    wait_until("the session's requests written", Duration::from_secs(15), || {
        redis::cmd("HGET").arg(format!("sting:analytics:session:{sid}")).arg("hits").query::<Option<i64>>(&mut s.redis.conn()).unwrap() == Some(hits)
    });
    let all = anomalies(&s.proxies[0], "limit=500");
    let mut found: Vec<String> =
        all["anomalies"].as_array().unwrap().iter().filter(|a| a["session_id"] == sid).map(|a| a["detector"].as_str().unwrap().to_owned()).collect();
    found.sort();
    found
}

fn anomaly_of(s: &Setup, sid: &str, detector: &str) -> serde_json::Value {
    let all = anomalies(&s.proxies[0], "limit=500");
    all["anomalies"].as_array().unwrap().iter().find(|a| a["session_id"] == sid && a["detector"] == detector).cloned().unwrap()
}

/// A copied cookie used from another browser: `ua_change`, with the old and new browser.
#[test]
fn a_session_used_from_another_browser_is_a_ua_change() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let cookie = login_as(p, "alice", CHROME_MAC, LONDON);
    browse(p, &cookie, CHROME_MAC, LONDON);
    browse(p, &cookie, FIREFOX_LINUX, LONDON);
    let sid = sid_of(&cookie);
    assert_eq!(detected(&s, &sid, 3), ["ua_change"]);
    let a = anomaly_of(&s, &sid, "ua_change");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["user_id"], "alice");
    assert_eq!(a["evidence"], serde_json::json!({"old": "Chrome|Mac OSX|desktop", "new": "Firefox|Linux|desktop"}));
    // The CLI reads the same answer.
    let (code, out, err) = p.cli(&["anomalies", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), anomalies(p, ""));
    let (code, out, _) = p.cli(&["anomalies", "--severity", "high"]);
    assert!(code == 0 && out.contains("ua_change") && out.contains("alice"), "{out}");
}

/// The same session from London, then from another London network, then from Munich a second
/// later: `ip_change` (once), `country_change` GB → DE, and `impossible_travel` (about 920 km in
/// about a second).
#[test]
fn a_session_that_jumps_countries_is_an_impossible_travel() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let cookie = login_as(p, "bob", CHROME_MAC, LONDON);
    browse(p, &cookie, CHROME_MAC, LONDON);
    browse(p, &cookie, CHROME_MAC, LONDON_OTHER_NET);
    browse(p, &cookie, CHROME_MAC, MUNICH);
    let sid = sid_of(&cookie);
    // 81.2.69.7 and 81.2.69.200 share a /24: the first change of prefix is Munich's.
    assert_eq!(detected(&s, &sid, 4), ["country_change", "impossible_travel", "ip_change"]);
    assert_eq!(anomaly_of(&s, &sid, "country_change")["evidence"], serde_json::json!({"old": "GB", "new": "DE"}));
    // With the ASN database, the networks' owners too.
    assert_eq!(
        anomaly_of(&s, &sid, "ip_change")["evidence"],
        serde_json::json!({"old": "81.2.69.0/24", "new": "203.0.113.0/24", "old_asn": "AS64500 Example Home Broadband", "new_asn": "AS64501 Example Hosting GmbH"})
    );
    let travel = anomaly_of(&s, &sid, "impossible_travel");
    assert_eq!((travel["evidence"]["from"].as_str(), travel["evidence"]["to"].as_str()), (Some("London"), Some("Munich")));
    let km = travel["evidence"]["distance_km"].as_i64().unwrap();
    assert!((900..=950).contains(&km), "London-Munich is about 920 km: {km}");
    assert!(travel["evidence"]["speed_kmh"].as_i64().unwrap() > 1000);
    // Filters: severity at or above, and user.
    let high = anomalies(p, "severity=high");
    assert!(high["anomalies"].as_array().unwrap().iter().all(|a| a["severity"] == "high"));
    assert_eq!(high["total"], 1);
    assert_eq!(anomalies(p, "user=nobody")["total"], 0);
    assert_eq!(anomalies(p, "user=bob")["total"], 3);
}

/// A user's second session from a browser and a country never seen for them:
/// `new_device` and `new_country`; the first session (no history yet) raises neither.
#[test]
fn a_new_device_and_country_for_a_user_are_noticed() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let first = login_as(p, "carol", CHROME_MAC, LONDON);
    browse(p, &first, CHROME_MAC, LONDON);
    assert_eq!(detected(&s, &sid_of(&first), 2), Vec::<String>::new());
    let second = login_as(p, "carol", FIREFOX_LINUX, LINKOPING);
    browse(p, &second, FIREFOX_LINUX, LINKOPING);
    let sid = sid_of(&second);
    assert_eq!(detected(&s, &sid, 2), ["new_country", "new_device"]);
    assert_eq!(anomaly_of(&s, &sid, "new_country")["evidence"], serde_json::json!({"country": "SE"}));
    // A third session from the first browser and place is nothing new.
    let third = login_as(p, "carol", CHROME_MAC, LONDON);
    browse(p, &third, CHROME_MAC, LONDON);
    assert_eq!(detected(&s, &sid_of(&third), 2), Vec::<String>::new());
}

/// More active sessions of one user than `max_concurrent_sessions`.
#[test]
fn too_many_concurrent_sessions_of_a_user() {
    let s = setup(1, "max_concurrent_sessions = 2", None);
    let p = &s.proxies[0];
    let sessions: Vec<String> = (0..3).map(|_| login_as(p, "dave", CHROME_MAC, LONDON)).collect();
    for (i, c) in sessions.iter().enumerate() {
        browse(p, c, CHROME_MAC, LONDON);
        let found = detected(&s, &sid_of(c), 2);
        if i < 2 {
            assert!(found.is_empty(), "session {i}: {found:?}");
        } else {
            assert_eq!(found, ["concurrent_sessions"]);
            assert_eq!(anomaly_of(&s, &sid_of(c), "concurrent_sessions")["evidence"], serde_json::json!({"active_sessions": 3, "limit": 2}));
        }
    }
}

/// A Kratos session seen at AAL2, then at AAL1 (two credentials of the one Kratos session, as
/// the stub's fixture has one session id): `aal_downgrade`.
#[test]
fn a_session_that_loses_its_second_factor_is_an_aal_downgrade() {
    let kratos = KratosStub::start();
    kratos.answer("strong", StubAnswer::session("erin", None, "aal2"));
    kratos.answer("weak", StubAnswer::session("erin", None, "aal1"));
    let s = setup(1, "", Some(kratos));
    let p = &s.proxies[0];
    let get = |token: &str| {
        let r =
            client().get(p.url("/echo")).header("x-session-token", token).header("user-agent", CHROME_MAC).header("x-forwarded-for", LONDON).send().unwrap();
        assert_eq!(r.status(), 200);
    };
    get("strong");
    let sid = "7458af86-c1d8-401c-978a-8da89133f98b";
    assert_eq!(detected(&s, sid, 1), Vec::<String>::new());
    get("weak");
    assert_eq!(detected(&s, sid, 2), ["aal_downgrade"]);
}

/// An ordinary session: 500 requests from one address and browser raise nothing; the day's
/// anomaly counters stay empty.
#[test]
fn an_ordinary_session_raises_no_anomaly() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let cookie = login_as(p, "frank", CHROME_MAC, LONDON);
    let c = client();
    for i in 0..499 {
        let r = c
            .get(p.url(&format!("/echo/items/{}", i % 20)))
            .header("cookie", format!("session={cookie}"))
            .header("user-agent", CHROME_MAC)
            .header("x-forwarded-for", LONDON)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(detected(&s, &sid_of(&cookie), 500), Vec::<String>::new());
    assert_eq!(anomalies(p, "")["total"], 0);
}

/// Two instances share one session, one from London and one from Munich, at once: each
/// detector fires once, not once per instance or batch.
#[test]
fn two_instances_record_an_anomaly_once() {
    let s = setup(2, "", None);
    let cookie = login_as(&s.proxies[0], "grace", CHROME_MAC, LONDON);
    let sid = sid_of(&cookie);
    std::thread::scope(|scope| {
        for (p, ip) in [(&s.proxies[0], LONDON), (&s.proxies[1], MUNICH)] {
            let cookie = &cookie;
            scope.spawn(move || {
                for _ in 0..50 {
                    browse(p, cookie, CHROME_MAC, ip);
                }
            });
        }
    });
    let found = detected(&s, &sid, 101);
    assert_eq!(found, ["country_change", "impossible_travel", "ip_change"], "each once");
}

/// The day's list keeps the newest `max_anomalies_per_day`; the counters count every one.
#[test]
fn the_days_anomaly_list_is_capped() {
    let s = setup(1, "max_anomalies_per_day = 2", None);
    let p = &s.proxies[0];
    for user in ["u1", "u2", "u3"] {
        let cookie = login_as(p, user, CHROME_MAC, LONDON);
        browse(p, &cookie, CHROME_MAC, LONDON);
        browse(p, &cookie, FIREFOX_LINUX, LONDON);
        detected(&s, &sid_of(&cookie), 3);
    }
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let kept: i64 = redis::cmd("LLEN").arg(format!("sting:security:anomalies:{day}")).query(&mut s.redis.conn()).unwrap();
    let counted: i64 = redis::cmd("HGET").arg(format!("sting:analytics:daily:{day}")).arg("anomalies_high").query(&mut s.redis.conn()).unwrap();
    assert_eq!((kept, counted), (2, 3));
}

/// What a receiver got: (the status it answered, the signature header, the body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(u16, Option<String>, String)>>>;

/// A webhook receiver: answers 500 to the first `fail_first` requests, then 200; keeps every
/// request (signature header and body).
struct Receiver {
    port: u16,
    got: Received,
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Received = Default::default();
        let seen = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let (mut line, mut signature, mut length) = (String::new(), None, 0usize);
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "x-sting-signature" => signature = Some(v.trim().to_owned()),
                        "content-length" => length = v.trim().parse().unwrap(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut all = seen.lock().unwrap();
                let status = if all.len() < fail_first { 500 } else { 200 };
                all.push((status, signature, String::from_utf8(body).unwrap()));
                drop(all);
                let _ = (&conn).write_all(format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes());
            }
        });
        Receiver { port, got }
    }
}

/// An alert rule sends an anomaly to a webhook, signed (HMAC-SHA256 over "timestamp.body",
/// verified here), retried after a 500, and once only: the receiver sees one delivered body
/// per (session, detector), however many times the session repeats the anomaly's cause. The
/// rules are set through the API with the CSRF header and read back.
#[test]
fn alerts_reach_a_signed_webhook_with_retries_and_no_duplicates() {
    use hmac::Mac;
    let receiver = Receiver::start(1);
    let s = setup(1, "webhook_secret = \"whsec-test-0123456789\"", None);
    let p = &s.proxies[0];
    let rules = serde_json::json!([{"detector": "ua_change", "min_severity": "high", "webhooks": [format!("http://127.0.0.1:{}/hook", receiver.port)]}]);
    let r = client().post(p.url("/api/analytics/sessions/alerts/configure")).bearer_auth(TOKEN).json(&rules).send().unwrap();
    assert_eq!(r.status(), 200);
    let read: serde_json::Value = client().get(p.url("/api/analytics/sessions/alerts/configure")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    assert_eq!(read["rules"][0]["detector"], "ua_change");
    let bad = client()
        .post(p.url("/api/analytics/sessions/alerts/configure"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!([{"detector": "telepathy", "log": true}]))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);

    let cookie = login_as(p, "henry", CHROME_MAC, LONDON);
    browse(p, &cookie, CHROME_MAC, LONDON);
    for _ in 0..5 {
        browse(p, &cookie, FIREFOX_LINUX, LONDON);
    }
    let sid = sid_of(&cookie);
    assert_eq!(detected(&s, &sid, 7), ["ua_change"]);
    wait_until("the webhook delivered", Duration::from_secs(15), || receiver.got.lock().unwrap().iter().any(|(status, _, _)| *status == 200));
    std::thread::sleep(Duration::from_millis(1500));
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [500, 200], "one retry after the 500, then nothing more: {got:?}");
    for (_, signature, body) in &got {
        let signature = signature.as_deref().expect("signed");
        let (t, v1) = signature.strip_prefix("t=").unwrap().split_once(",v1=").unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec-test-0123456789").unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        mac.verify_slice(&hex::decode(v1).unwrap()).expect("the signature verifies");
        let alert: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!((alert["detector"].as_str(), alert["session_id"].as_str()), (Some("ua_change"), Some(sid.as_str())));
    }
    let metrics = client().get(p.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("sting_security_alerts_total{result=\"delivered\"} 1"), "{metrics}");
    assert!(metrics.contains("sting_security_alerts_total{result=\"retried\"} 1"));
}

/// With `security.actions.ua_change = "revoke"`, the cookie used from another browser stops
/// working by itself: the session is revoked on every instance, ended as `revoked`, and the
/// audit log names the detector.
#[test]
fn a_detector_set_to_revoke_stops_the_stolen_session() {
    let s = setup(2, "actions = { ua_change = \"revoke\" }", None);
    let (a, b) = (&s.proxies[0], &s.proxies[1]);
    let cookie = login_as(a, "ivy", CHROME_MAC, LONDON);
    browse(a, &cookie, CHROME_MAC, LONDON);
    let user_on = |p: &Proxy| {
        let r = client()
            .get(p.url("/echo"))
            .header("cookie", format!("session={cookie}"))
            .header("user-agent", CHROME_MAC)
            .header("x-forwarded-for", LONDON)
            .send()
            .unwrap();
        seen(&r.json().unwrap(), "x-user-id").map(str::to_owned)
    };
    assert_eq!(user_on(b).as_deref(), Some("ivy"));
    // The thief's browser.
    browse(a, &cookie, FIREFOX_LINUX, MUNICH);
    let sid = sid_of(&cookie);
    wait_until("the session revoked", Duration::from_secs(15), || user_on(b).is_none());
    assert_eq!(user_on(a), None);
    let rec: serde_json::Value = client().get(a.url(&format!("/api/analytics/sessions/{sid}"))).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    assert_eq!(rec["end_reason"], "revoked");
    let audit: serde_json::Value = client().get(a.url("/api/analytics/audit")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    assert_eq!((audit["entries"][0]["actor"].as_str(), audit["entries"][0]["target"].as_str()), (Some("detector:ua_change"), Some(sid.as_str())));
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "revoked once, by one instance");
}

/// A dual-stack client moving between its IPv4 and IPv6 addresses is not a network change:
/// prefixes are compared within one address family.
#[test]
fn switching_between_ipv4_and_ipv6_is_not_an_ip_change() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let cookie = login_as(p, "judy", CHROME_MAC, LONDON);
    browse(p, &cookie, CHROME_MAC, LONDON);
    browse(p, &cookie, CHROME_MAC, "2001:db8::7");
    browse(p, &cookie, CHROME_MAC, LONDON);
    let found = detected(&s, &sid_of(&cookie), 4);
    assert!(!found.contains(&"ip_change".to_owned()), "{found:?}");
}

/// A signed-in session's replay: its requests in order (method, route template, status,
/// latency, address prefix, device), never a query string or cookie, capped at
/// `replay_max_entries` (the newest kept).
#[test]
fn a_session_replay_is_its_request_timeline_bounded() {
    let s = setup(1, "replay_max_entries = 5", None);
    let p = &s.proxies[0];
    let cookie = login_as(p, "kate", CHROME_MAC, LONDON);
    let c = client();
    for i in 0..8 {
        let r = c
            .get(p.url(&format!("/echo/items/{i}?secret=hunter{i}")))
            .header("cookie", format!("session={cookie}"))
            .header("user-agent", CHROME_MAC)
            .header("x-forwarded-for", LONDON)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let sid = sid_of(&cookie);
    detected(&s, &sid, 9);
    let r = c.get(p.url(&format!("/api/analytics/sessions/replay/{sid}"))).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().unwrap();
    assert!(!body.contains("hunter") && !body.contains("secret") && !body.contains(&cookie), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let requests = v["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 5, "the newest 5 of 8: {v}");
    let times: Vec<&str> = requests.iter().map(|r| r["timestamp"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
    let r0 = &requests[0];
    assert_eq!((r0["method"].as_str(), r0["route"].as_str(), r0["status"].as_i64()), (Some("GET"), Some("/echo/items/:id"), Some(200)));
    assert_eq!((r0["address"].as_str(), r0["device"].as_str()), (Some("81.2.69.0/24"), Some("Chrome / Mac OSX / desktop")));
    assert!(r0["latency_ms"].as_f64().unwrap() > 0.0);
    let missing = c.get(p.url("/api/analytics/sessions/replay/no-such-session")).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(missing.status(), 404);
}

/// One session from four /24 networks within ten minutes (more than
/// `max_addresses_per_session` = 3): `many_addresses`, naming them, once.
#[test]
fn a_session_used_from_many_networks_is_many_addresses() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let cookie = login_as(p, "kate", CHROME_MAC, "81.2.69.7");
    for ip in ["81.2.70.7", "81.2.71.7", "81.2.70.8", "81.2.72.7", "81.2.73.7"] {
        browse(p, &cookie, CHROME_MAC, ip);
    }
    let sid = sid_of(&cookie);
    assert_eq!(detected(&s, &sid, 6), ["ip_change", "many_addresses"]);
    let a = anomaly_of(&s, &sid, "many_addresses");
    // The login request had no user yet: its network is not the session's.
    assert_eq!(a["evidence"]["addresses"], serde_json::json!(["81.2.70.0/24", "81.2.71.0/24", "81.2.72.0/24", "81.2.73.0/24"]));
    assert_eq!(a["evidence"]["window_minutes"], 10);
    // The per-session memory of recent networks stays bounded (limit + 1 at most).
    let recent: String = redis::cmd("HGET").arg(format!("sting:analytics:session:{sid}")).arg("pfx_recent").query(&mut s.redis.conn()).unwrap();
    assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&recent).unwrap().len() <= 4, "{recent}");
}

/// Two networks (home and phone) all day long are not `many_addresses`.
#[test]
fn two_networks_back_and_forth_are_not_many_addresses() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let cookie = login_as(p, "liam", CHROME_MAC, LONDON);
    for i in 0..20 {
        browse(p, &cookie, CHROME_MAC, if i % 2 == 0 { "81.2.70.7" } else { LONDON });
    }
    let found = detected(&s, &sid_of(&cookie), 21);
    assert!(!found.contains(&"many_addresses".to_owned()), "{found:?}");
}

/// Forged session cookies: 25 different badly signed cookies from one address make one
/// `auth_failure_burst` for that address (no session, no user); one stale cookie retried 60
/// times from another address makes none.
#[test]
fn a_burst_of_forged_cookies_from_one_address_is_noticed_once() {
    let s = setup(1, "", None);
    let p = &s.proxies[0];
    let c = client();
    let send = |cookie: String, ip: &str| {
        let r = c.get(p.url("/echo")).header("cookie", format!("session={cookie}")).header("x-forwarded-for", ip).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(seen(&r.json().unwrap(), "x-user-id"), None);
    };
    for i in 0..60 {
        send("0f3c1d2e-stale.AAAAAA.notasignature".to_owned(), LONDON);
        if i < 30 {
            send(format!("forged-{i:04}.ZZZZZZ.bad{i}"), MUNICH);
        }
    }
    wait_until("the burst recorded", Duration::from_secs(15), || anomalies(p, "")["total"] == 1);
    let a = &anomalies(p, "")["anomalies"][0];
    assert_eq!(a["detector"], "auth_failure_burst");
    assert_eq!(a["severity"], "high");
    assert!(a["session_id"].is_null() && a["user_id"].is_null(), "{a}");
    assert_eq!(a["evidence"]["address"], MUNICH);
    assert_eq!(a["evidence"]["invalid_credentials"], 20);
    assert!(a["evidence"]["kinds"]["bad_signature"].as_i64().unwrap() >= 20, "{a}");
    // All 90 failures are in; still one anomaly.
    wait_until("every request written", Duration::from_secs(15), || {
        let stats: serde_json::Value = client().get(p.url("/api/analytics/sessions/stats")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
        stats["hits_today"].as_i64() >= Some(90)
    });
    assert_eq!(anomalies(p, "")["total"], 1);
}

/// Hostile input: invalid credentials from 6,000 addresses (a spray, or forged forwarding
/// headers) keep at most `AUTH_FAILURE_ADDRESS_CAP` (5,000) addresses apart in the window's
/// hash; the rest are counted under `other`, which reports the spray as one burst.
#[test]
fn the_auth_failure_window_is_bounded() {
    let s = setup(1, "auth_failure_window_seconds = 3600", None);
    let p = &s.proxies[0];
    let c = client();
    for i in 0..6_000u32 {
        let ip = format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256);
        let r = c.get(p.url("/echo")).header("cookie", format!("session=x{i}.AAAA.bad")).header("x-forwarded-for", ip).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut conn = s.redis.conn();
    let key = || -> Option<String> {
        let keys: Vec<String> = redis::cmd("KEYS").arg("sting:security:auth_failures:*").query(&mut s.redis.conn()).unwrap();
        keys.into_iter().next()
    };
    wait_until("the spray written", Duration::from_secs(30), || {
        key().is_some_and(|k| {
            let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL").arg(&k).query(&mut s.redis.conn()).unwrap();
            let counted: i64 = fields.iter().filter(|(f, _)| f.ends_with("#bad_signature")).map(|(_, v)| v.parse::<i64>().unwrap()).sum();
            counted == 6_000
        })
    });
    let k = key().unwrap();
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL").arg(&k).query(&mut conn).unwrap();
    let addresses = fields.keys().filter(|f| !f.contains(['|', '#', '!'])).count();
    assert_eq!(addresses, 5_001, "5,000 addresses and other");
    assert_eq!(fields["#"], "5000");
    assert_eq!(fields["other#bad_signature"], "1000");
    // Distinct credentials are kept only up to the threshold (20): a burst needs no more.
    assert_eq!(fields["other"], "20");
    assert_eq!(fields.keys().filter(|f| f.starts_with("other|")).count(), 20);
    let spray = anomalies(p, "");
    assert_eq!(spray["total"], 1, "{spray}");
    assert_eq!(spray["anomalies"][0]["evidence"]["address"], "other");
    let ttl: i64 = redis::cmd("TTL").arg(&k).query(&mut conn).unwrap();
    assert!(ttl > 0 && ttl <= 7200, "lives two windows: {ttl}");
}

/// `security.actions.ua_change = "step_up"`: the stolen Kratos session is held on every
/// instance (anonymous, its credentials not forwarded, protected routes send it to Kratos's
/// AAL2 flow) until whoami shows it authenticated again at AAL2 after the anomaly; a session
/// that was already at AAL2 before does not count as stepped up.
#[test]
fn a_detector_set_to_step_up_holds_the_session_until_a_second_factor() {
    let kratos = KratosStub::start();
    kratos.answer("tok", StubAnswer::session("mia", None, "aal1"));
    let s = setup(2, "actions = { ua_change = \"step_up\" }\n[[auth.rules]]\nprefix = \"/dashboard\"\nrequire = \"session\"", Some(kratos));
    let (a, b) = (&s.proxies[0], &s.proxies[1]);
    let kratos = s._kratos.as_ref().unwrap();
    let get = |p: &Proxy, path: &str, ua: &str| {
        client()
            .get(p.url(path))
            .header("x-session-token", "tok")
            .header("user-agent", ua)
            .header("x-forwarded-for", LONDON)
            .header("accept", "text/html")
            .send()
            .unwrap()
    };
    let user_on = |p: &Proxy| seen(&get(p, "/echo", CHROME_MAC).json().unwrap(), "x-user-id").map(str::to_owned);
    assert_eq!(user_on(b).as_deref(), Some("mia"));
    assert_eq!(get(a, "/echo", FIREFOX_LINUX).status(), 200);
    wait_until("the session held on B", Duration::from_secs(15), || user_on(b).is_none());
    // Held: no identity and no credential reach the app; a protected page goes to Kratos.
    let echoed: serde_json::Value = get(a, "/echo", CHROME_MAC).json().unwrap();
    assert_eq!((seen(&echoed, "x-user-id"), seen(&echoed, "x-session-token")), (None, None));
    let r = get(b, "/dashboard/x", CHROME_MAC);
    assert_eq!(r.status(), 302);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(to, format!("{}/self-service/login/browser?aal=aal2&refresh=true&return_to=%2Fdashboard%2Fx", kratos.url()));
    let audit: serde_json::Value = client().get(a.url("/api/analytics/audit")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    assert_eq!(audit["entries"][0]["action"], "step_up_session");
    // AAL2 from before the anomaly is not a step-up.
    kratos.answer("tok", StubAnswer::session("mia", None, "aal2"));
    assert_eq!(user_on(a), None);
    // The user completes Kratos's AAL2 flow: honoured again, on both instances.
    kratos.answer("tok", StubAnswer::session("mia", None, "aal2").authenticated_now());
    assert_eq!(user_on(b).as_deref(), Some("mia"));
    wait_until("the step-up seen by A", Duration::from_secs(5), || user_on(a).as_deref() == Some("mia"));
    let marks: i64 = redis::cmd("ZCARD").arg("sting:security:step_up").query(&mut s.redis.conn()).unwrap();
    assert_eq!(marks, 0);
}

/// A held Flask session is not cleared by someone else's AAL2: the thief adds a Kratos token of
/// their own account (with a second factor, just authenticated) to the stolen cookie, and the
/// session stays held on every instance.
#[test]
fn a_thiefs_own_second_factor_does_not_clear_a_held_session() {
    let kratos = KratosStub::start();
    kratos.answer("thief-aal2", StubAnswer::session("thief", None, "aal2").authenticated_now());
    let s = setup(2, "actions = { ua_change = \"step_up\" }", Some(kratos));
    let (a, b) = (&s.proxies[0], &s.proxies[1]);
    let cookie = login_as(a, "nora", CHROME_MAC, LONDON);
    browse(a, &cookie, CHROME_MAC, LONDON);
    let user_with = |p: &Proxy, token: Option<&str>| {
        let mut req =
            client().get(p.url("/echo")).header("cookie", format!("session={cookie}")).header("user-agent", FIREFOX_LINUX).header("x-forwarded-for", MUNICH);
        if let Some(t) = token {
            req = req.header("x-session-token", t);
        }
        seen(&req.send().unwrap().json().unwrap(), "x-user-id").map(str::to_owned)
    };
    assert_eq!(user_with(a, None).as_deref(), Some("nora"), "the stolen cookie's first use, from another browser");
    wait_until("the session held on B", Duration::from_secs(15), || user_with(b, None).is_none());
    for p in [a, b] {
        assert_eq!(user_with(p, Some("thief-aal2")), None, "still held, and not the thief either");
    }
    let marks: i64 = redis::cmd("ZCARD").arg("sting:security:step_up").query(&mut s.redis.conn()).unwrap();
    assert_eq!(marks, 1, "the mark stays");
}
