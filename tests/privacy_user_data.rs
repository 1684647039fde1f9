//! One user's data (issue 14): export it and erase it, through the API and the CLI, with two
//! proxy instances running. After the erasure a scan of the whole keyspace (the app's keys
//! included) finds no trace of that user's id, session ids, email, addresses or User-Agent,
//! while the other user's data is intact. Real Redis, Flask-Session app, proxies, Kratos stub.

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "user-data-test-token-0123456789";
const KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const VICTOR_UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 VictorProbe/1";
const THIEF_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0 ThiefProbe/2";
const WENDY_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 WendyProbe/3";
const VICTOR_IP: &str = "81.2.69.45";
const THIEF_IP: &str = "89.160.20.45";
const WENDY_IP: &str = "203.0.113.45";
/// The session id every Kratos stub session has (the fixture's).
const KRATOS_SID: &str = "7458af86-c1d8-401c-978a-8da89133f98b";

struct Setup {
    redis: RedisServer,
    _app: FlaskApp,
    _kratos: KratosStub,
    a: Proxy,
    b: Proxy,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("victor-token", StubAnswer::session("victor", None, "aal1"));
    let dir = tempfile::tempdir().unwrap();
    let mmdb = make_mmdb(dir.path());
    let start = || {
        let mut opts = ProxyOpts::new(&redis, app.url());
        opts.kratos = Some(kratos.url());
        opts.extra_toml = Box::leak(format!("[analytics]\nbatch_max_delay_ms = 5\nencryption_keys = [{KEY:?}]\n").into_boxed_str());
        opts.env =
            vec![("STING_TRUSTED_PROXIES", "127.0.0.0/8".into()), ("GEOIP_DATABASE", mmdb.display().to_string()), ("STING_ANALYTICS_TOKEN", TOKEN.to_owned())];
        let p = Proxy::start(opts);
        p.wait_ready();
        p
    };
    let (a, b) = (start(), start());
    Setup { redis, _app: app, _kratos: kratos, a, b, _dir: dir }
}

fn login(p: &Proxy, user: &str, ua: &str, ip: &str) -> String {
    login_from(&p.url(""), user, &format!("{user}@mail.example"), ua, ip)
}

fn browse(p: &Proxy, cookie: &str, ua: &str, ip: &str, path: &str) {
    let r = client().get(p.url(path)).header("cookie", format!("session={cookie}")).header("user-agent", ua).header("x-forwarded-for", ip).send().unwrap();
    assert_eq!(r.status(), 200);
}

fn hits(redis: &RedisServer, sid: &str) -> Option<i64> {
    redis::cmd("HGET").arg(format!("sting:analytics:session:{sid}")).arg("hits").query(&mut redis.conn()).unwrap()
}

fn call(p: &Proxy, method: reqwest::Method, path: &str) -> reqwest::blocking::Response {
    client().request(method, p.url(&format!("/api/analytics/{path}"))).bearer_auth(TOKEN).send().unwrap()
}

/// Opens every Fernet token in `text` with the test key, so the scan also sees what is sealed.
fn opened(text: &str) -> String {
    let key = fernet::Fernet::new(KEY).unwrap();
    let mut out = text.to_owned();
    for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=')).filter(|t| t.starts_with("gAAAAA")) {
        if let Ok(plain) = key.decrypt(token) {
            out.push(' ');
            out.push_str(&String::from_utf8_lossy(&plain));
        }
    }
    out
}

#[test]
fn export_then_erase_one_user_leaves_no_trace_and_the_other_intact() {
    let s = setup();
    let (a, b) = (&s.a, &s.b);
    // Victor: two Flask sessions (one of them stolen and revoked) and a Kratos session.
    let v1 = login(a, "victor", VICTOR_UA, VICTOR_IP);
    let v2 = login(b, "victor", VICTOR_UA, VICTOR_IP);
    for i in 0..3 {
        browse(a, &v1, VICTOR_UA, VICTOR_IP, &format!("/echo/items/{i}"));
        browse(b, &v2, VICTOR_UA, VICTOR_IP, "/echo/profile");
    }
    browse(b, &v1, THIEF_UA, THIEF_IP, "/echo/items/9");
    let r = client()
        .get(a.url("/echo"))
        .header("x-session-token", "victor-token")
        .header("user-agent", VICTOR_UA)
        .header("x-forwarded-for", VICTOR_IP)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wendy.
    let w = login(b, "wendy", WENDY_UA, WENDY_IP);
    for _ in 0..3 {
        browse(a, &w, WENDY_UA, WENDY_IP, "/echo/items/1");
    }
    let (sv1, sv2, sw) = (sid_of(&v1), sid_of(&v2), sid_of(&w));
    wait_until("every request written", Duration::from_secs(15), || {
        hits(&s.redis, &sv1) == Some(5) && hits(&s.redis, &sv2) == Some(4) && hits(&s.redis, &sw) == Some(4) && hits(&s.redis, KRATOS_SID) == Some(1)
    });
    assert_eq!(call(a, reqwest::Method::DELETE, &format!("sessions/{sv1}")).status(), 200, "revoked");
    wait_until("the anomaly alert", Duration::from_secs(15), || {
        let n: i64 = redis::cmd("XLEN").arg("sting:security:alerts").query(&mut s.redis.conn()).unwrap();
        n >= 1
    });

    // Export (instance B), and the CLI's, the same.
    let r = call(b, reqwest::Method::GET, "users/victor/export");
    assert_eq!(r.status(), 200);
    let export: serde_json::Value = r.json().unwrap();
    let sessions = export["sessions"].as_array().unwrap();
    let mut sids: Vec<&str> = sessions.iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    sids.sort();
    let mut want = vec![sv1.as_str(), sv2.as_str(), KRATOS_SID];
    want.sort();
    assert_eq!(sids, want);
    let first = sessions.iter().find(|x| x["session_id"] == sv1.as_str()).unwrap();
    assert_eq!((first["email"].as_str(), first["ip_address"].as_str()), (Some("victor@mail.example"), Some(THIEF_IP)), "opened: {first}");
    assert_eq!(first["end_reason"], "revoked");
    assert!(first["requests"].as_array().unwrap().len() >= 4 && !first["actions"].as_array().unwrap().is_empty(), "{first}");
    assert!(export["anomalies"].as_array().unwrap().iter().any(|x| x["detector"] == "ua_change"), "{export}");
    assert!(export["audit"].as_array().unwrap().iter().any(|x| x["action"] == "revoke_session"), "{export}");
    assert_eq!(export["behavior"]["requests"], 8, "the signed-in requests: {}", export["behavior"]);
    let (code, out, err) = a.cli(&["export", "--user", "victor"]);
    assert_eq!(code, 0, "{err}");
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(call(a, reqwest::Method::GET, "users/nobody/export").status(), 404);

    // A dry run changes nothing.
    let (code, out, _) = a.cli(&["erase", "--user", "victor", "--dry-run", "--json"]);
    assert_eq!(code, 0);
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(dry["keys_deleted"].as_i64().unwrap() > 5 && dry["entries_removed"].as_i64().unwrap() > 3, "{dry}");
    assert_eq!(call(b, reqwest::Method::GET, "users/victor/export").status(), 200);

    // The scan sees Victor before the erasure (sealed fields opened), so it can fail.
    let before = redis_dump(&s.redis);
    for t in ["victor@mail.example", VICTOR_IP, sv1.as_str(), KRATOS_SID] {
        assert!(before.iter().any(|(k, text)| k.contains(t) || opened(text).contains(t)), "{t:?} not seen before the erasure");
    }

    // Erase through instance A.
    let r = call(a, reqwest::Method::DELETE, "users/victor");
    assert_eq!(r.status(), 200);
    let erased: serde_json::Value = r.json().unwrap();
    // What the dry run counted, and the audit entry of the export made since.
    assert_eq!(
        (erased["sessions"].as_i64(), erased["keys_deleted"].as_i64(), erased["entries_removed"].as_i64()),
        (Some(3), dry["keys_deleted"].as_i64(), dry["entries_removed"].as_i64().map(|n| n + 1))
    );

    let traces = ["victor", &sv1, &sv2, KRATOS_SID, "victor@mail.example", VICTOR_IP, THIEF_IP, "VictorProbe", "ThiefProbe"];
    let revoked: Vec<String> = redis::cmd("ZRANGE").arg("sting:security:revoked").arg(0).arg(-1).query(&mut s.redis.conn()).unwrap();
    assert_eq!(revoked, vec![sv1.clone()], "the revoked session stays refused: a bare id, linked to nothing");
    for (key, text) in redis_dump(&s.redis) {
        if key == "sting:security:revoked" {
            continue;
        }
        let text = opened(&text);
        for t in traces {
            assert!(!key.contains(t) && !text.contains(t), "{t:?} left in {key}: {text}");
        }
    }
    // Idempotent; the audit log says it happened, under a pseudonym.
    let again: serde_json::Value = call(b, reqwest::Method::DELETE, "users/victor").json().unwrap();
    assert_eq!((again["keys_deleted"].as_i64(), again["entries_removed"].as_i64()), (Some(0), Some(0)), "{again}");
    let audit: serde_json::Value = call(a, reqwest::Method::GET, "audit").json().unwrap();
    assert!(
        audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "erase_user" && e["target"].as_str().unwrap().starts_with("sha256:")),
        "{audit}"
    );
    // Victor's app sessions are gone: logged out once the proxies' identity caches
    // (`session.cache_ttl_seconds`, 5 s here) let go ...
    wait_until("victor logged out", Duration::from_secs(10), || seen(&echo(&a.url("/echo"), Some(&v2), &[]), "x-user-id").is_none());
    // ... and Wendy's data is intact.
    let wendy: serde_json::Value = call(b, reqwest::Method::GET, &format!("sessions/{sw}")).json().unwrap();
    assert_eq!((wendy["user_id"].as_str(), wendy["email"].as_str(), wendy["ip_address"].as_str()), (Some("wendy"), Some("wendy@mail.example"), Some(WENDY_IP)));
    assert_eq!(wendy["hits"], 4);
    let echoed = echo(&b.url("/echo"), Some(&w), &[]);
    assert_eq!(seen(&echoed, "x-user-id"), Some("wendy"));
    let (code, out, _) = b.cli(&["erase", "--user", "victor"]);
    assert!(code == 0 && out.contains("0 key(s)"), "{out}");
}
