//! Personal data at rest (issue 14): Fernet-encrypted fields that Python's own `cryptography`
//! reads and writes (real package from PyPI, tests/python/fernet_tool.py), key rotation, a
//! tampered token refused and counted, no plaintext email, address or User-Agent anywhere in
//! Redis, the address modes, and Global Privacy Control. Real Redis, Flask-Session app, proxy
//! binary and Kratos stub.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;

const TOKEN: &str = "privacy-test-token-0123456789";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0 PrivacyProbe/7.7";
const ADDRESS: &str = "81.2.69.77";

fn fernet(args: &[&str]) -> Result<String, String> {
    let out = Command::new(venv_python(FlaskSession::V08)).arg(repo_root().join("tests/python/fernet_tool.py")).args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn new_key() -> String {
    fernet(&["genkey"]).unwrap()
}

fn proxy(redis: &RedisServer, app: &FlaskApp, kratos: Option<&KratosStub>, analytics_toml: &str) -> Proxy {
    let mut opts = ProxyOpts::new(redis, app.url());
    opts.kratos = kratos.map(KratosStub::url);
    opts.extra_toml = Box::leak(format!("[analytics]\nbatch_max_delay_ms = 5\n{analytics_toml}\n").into_boxed_str());
    opts.env = vec![("STING_TRUSTED_PROXIES", "127.0.0.0/8".into()), ("STING_ANALYTICS_TOKEN", TOKEN.to_owned())];
    let p = Proxy::start(opts);
    p.wait_ready();
    p
}

fn browse(p: &Proxy, cookie: &str, extra: &[(&str, &str)]) {
    let mut req = client().get(p.url("/echo")).header("cookie", format!("session={cookie}")).header("user-agent", UA).header("x-forwarded-for", ADDRESS);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    assert_eq!(req.send().unwrap().status(), 200);
}

fn login_with_email(p: &Proxy, user: &str) -> String {
    login_from(&p.url(""), user, &format!("{user}@private.example"), UA, ADDRESS)
}

fn record(redis: &RedisServer, sid: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(format!("sting:analytics:session:{sid}")).query(&mut redis.conn()).unwrap()
}

fn wait_hits(redis: &RedisServer, sid: &str, hits: i64) {
    wait_until("the session written", Duration::from_secs(15), || record(redis, sid).get("hits").and_then(|h| h.parse().ok()) == Some(hits));
}

fn api(p: &Proxy, path: &str) -> serde_json::Value {
    let r = client().get(p.url(&format!("/api/analytics/{path}"))).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().unwrap()
}

/// The proxy writes real Fernet tokens that Python decrypts, reads tokens Python wrote, keeps
/// reading old tokens after a new key is put in front, `rotate-keys` moves everything to the new
/// key, and a tampered token is shown as null and counted, never as its text.
#[test]
fn python_and_the_proxy_read_each_others_fernet_tokens() {
    let (k1, k2) = (new_key(), new_key());
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut p = proxy(&redis, &app, None, &format!("encryption_keys = [{k1:?}]"));
    let cookie = login_with_email(&p, "nina");
    browse(&p, &cookie, &[]);
    let sid = sid_of(&cookie);
    wait_hits(&redis, &sid, 2);
    let rec = record(&redis, &sid);
    for field in ["ip", "first_ip", "email"] {
        assert!(rec[field].starts_with("gAAAAA"), "{field} is a Fernet token: {}", rec[field]);
    }
    // Python's cryptography opens what the proxy wrote.
    assert_eq!(fernet(&["decrypt", &k1, &rec["ip"]]).unwrap(), ADDRESS);
    assert_eq!(fernet(&["decrypt", &k1, &rec["email"]]).unwrap(), "nina@private.example");
    // The API shows the values.
    let s = api(&p, &format!("sessions/{sid}"));
    assert_eq!((s["ip_address"].as_str(), s["email"].as_str()), (Some(ADDRESS), Some("nina@private.example")));
    // The proxy opens what Python wrote.
    let from_python = fernet(&["encrypt", &k1, "written-by@python.example"]).unwrap();
    let _: () = redis::cmd("HSET").arg(format!("sting:analytics:session:{sid}")).arg("email").arg(&from_python).query(&mut redis.conn()).unwrap();
    assert_eq!(api(&p, &format!("sessions/{sid}"))["email"], "written-by@python.example");

    // Rotation: a new key in front; old tokens still read, new ones are under the new key.
    p.terminate(Duration::from_secs(5));
    let p = proxy(&redis, &app, None, &format!("encryption_keys = [{k2:?}, {k1:?}]"));
    assert_eq!(api(&p, &format!("sessions/{sid}"))["email"], "written-by@python.example");
    let cookie2 = login_with_email(&p, "omar");
    browse(&p, &cookie2, &[]);
    let sid2 = sid_of(&cookie2);
    wait_hits(&redis, &sid2, 2);
    assert_eq!(fernet(&["decrypt", &k2, &record(&redis, &sid2)["email"]]).unwrap(), "omar@private.example");
    assert!(fernet(&["decrypt", &k2, &record(&redis, &sid)["ip"]]).is_err(), "not yet rotated");
    let (code, out, err) = p.cli(&["rotate-keys"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fields re-encrypted"), "{out}");
    let rec = record(&redis, &sid);
    assert_eq!(fernet(&["decrypt", &k2, &rec["ip"]]).unwrap(), ADDRESS);
    assert_eq!(fernet(&["decrypt", &k2, &rec["email"]]).unwrap(), "written-by@python.example");
    let (code, out, _) = p.cli(&["rotate-keys", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["fields_resealed"], 0, "nothing left under the old key");

    // Tampering: refused by Python and by the proxy, which counts it.
    let mut bytes = rec["ip"].clone().into_bytes();
    let i = bytes.len() - 12;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(fernet(&["decrypt", &k2, &tampered]).unwrap_err(), "InvalidToken");
    let _: () = redis::cmd("HSET").arg(format!("sting:analytics:session:{sid}")).arg("ip").arg(&tampered).query(&mut redis.conn()).unwrap();
    let s = api(&p, &format!("sessions/{sid}"));
    assert!(s["ip_address"].is_null(), "{s}");
    let metrics = client().get(p.admin_url("/metrics")).send().unwrap().text().unwrap();
    let line = metrics.lines().find(|l| l.starts_with("sting_field_decrypt_errors_total")).unwrap();
    assert!(line.split_whitespace().last().unwrap().parse::<f64>().unwrap() >= 1.0, "{line}");
    // rotate-keys leaves it as it is and says so (exit 1).
    let (code, out, _) = p.cli(&["rotate-keys"]);
    assert!(code == 1 && out.contains("1 unreadable"), "{code} {out}");
}

/// Every key and value in Redis (the app's own session keys aside) after signed-in and
/// anonymous traffic, a Kratos login, a failed login and anomalies: no email, address or
/// User-Agent in the clear anywhere. The same scenario without keys finds them (the scan works).
#[test]
fn with_encryption_on_redis_holds_no_plaintext_personal_data() {
    let secrets = [
        "paula@private.example",
        "kira@example.com",
        ADDRESS,
        "203.0.113.99",
        "89.160.20.33",
        "198.51.100.10",
        "198.51.100.66",
        "81.2.69.0/24",
        "203.0.113.0/24",
        "PrivacyProbe",
        "Gecko/20100101",
    ];
    let found =
        |dump: &[(String, String)]| -> Vec<&str> { secrets.iter().copied().filter(|s| dump.iter().any(|(k, t)| k.contains(s) || t.contains(s))).collect() };
    let clear = scenario(None);
    let seen = found(&clear);
    for s in ["paula@private.example", "kira@example.com", ADDRESS, "81.2.69.0/24"] {
        assert!(seen.contains(&s), "without keys {s:?} is stored in the clear (the scan must see it): {seen:?}");
    }
    let sealed = scenario(Some(new_key()));
    assert!(sealed.len() > 20, "a scenario's worth of keys: {}", sealed.len());
    for (key, text) in &sealed {
        for s in secrets {
            assert!(!text.contains(s) && !key.contains(s), "{s:?} in the clear in {key}: {text}");
        }
    }
}

/// The traffic of the scan test; returns the dump of our keys.
fn scenario(key: Option<String>) -> Vec<(String, String)> {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("ktok", StubAnswer::session("kira", None, "aal1"));
    let keys = key.as_ref().map(|k| format!("encryption_keys = [{k:?}]")).unwrap_or_default();
    let p = proxy(&redis, &app, Some(&kratos), &keys);
    let cookie = login_with_email(&p, "paula");
    for i in 0..5 {
        browse(&p, &cookie, &[]);
        // A second browser and network for the same session: anomalies with evidence.
        if i == 3 {
            browse_from(
                &p,
                &cookie,
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "203.0.113.99",
            );
        }
    }
    let r = client().get(p.url("/echo")).header("x-session-token", "ktok").header("user-agent", UA).header("x-forwarded-for", "89.160.20.33").send().unwrap();
    assert_eq!(r.status(), 200);
    for i in 0..3 {
        let r = client().get(p.url("/echo")).header("user-agent", UA).header("x-forwarded-for", format!("198.51.100.{}", 10 + i)).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client().get(p.url("/echo")).header("cookie", "session=forged.AAAA.bad").header("x-forwarded-for", "198.51.100.66").send().unwrap();
    assert_eq!(r.status(), 200);
    let sid = sid_of(&cookie);
    wait_hits(&redis, &sid, 7);
    wait_until("the Kratos session written", Duration::from_secs(15), || {
        redis::cmd("EXISTS").arg("sting:analytics:session:7458af86-c1d8-401c-978a-8da89133f98b").query::<i64>(&mut redis.conn()).unwrap() == 1
    });
    assert!(api(&p, "sessions/anomalies")["total"].as_i64().unwrap() >= 1, "anomalies were recorded");
    // The API shows the values, opened.
    let s = api(&p, &format!("sessions/{sid}"));
    assert_eq!((s["ip_address"].as_str(), s["email"].as_str()), (Some(ADDRESS), Some("paula@private.example")));
    dump_redis(&redis)
}

fn browse_from(p: &Proxy, cookie: &str, ua: &str, ip: &str) {
    let r = client().get(p.url("/echo")).header("cookie", format!("session={cookie}")).header("user-agent", ua).header("x-forwarded-for", ip).send().unwrap();
    assert_eq!(r.status(), 200);
}

/// The app's own Flask-Session keys (the test app's `SESSION_KEY_PREFIX`): its data, not ours.
const APP_KEYS: &str = "sting:session:";

/// Every key of ours with its whole content as text; any other key must be the app's.
fn dump_redis(redis: &RedisServer) -> Vec<(String, String)> {
    redis_dump(redis)
        .into_iter()
        .filter(|(key, _)| {
            assert!(key.starts_with("sting:"), "a key that is neither ours nor the app's: {key}");
            !key.starts_with(APP_KEYS)
        })
        .collect()
}

/// `ip_mode`: truncated keeps /24 in analytics and (following it) the access log; hashed keeps
/// a keyed hash; none keeps nothing.
#[test]
fn address_modes_reduce_what_is_kept() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut kept = Vec::new();
    for mode in ["truncated", "hashed", "none"] {
        let mut opts = ProxyOpts::new(&redis, app.url());
        opts.extra_toml = Box::leak(format!("[analytics]\nbatch_max_delay_ms = 5\nip_mode = \"{mode}\"\n").into_boxed_str());
        let log = tempfile::NamedTempFile::new().unwrap();
        opts.server_toml = Box::leak(format!("access_log_path = {:?}", log.path().display().to_string()).into_boxed_str());
        opts.env = vec![("STING_TRUSTED_PROXIES", "127.0.0.0/8".into())];
        let mut p = Proxy::start(opts);
        p.wait_ready();
        let cookie = login(&p.url(""), &format!("user-{mode}"), "user");
        browse(&p, &cookie, &[]);
        let sid = sid_of(&cookie);
        wait_hits(&redis, &sid, 2);
        let rec = record(&redis, &sid);
        let logged = std::fs::read_to_string(log.path()).unwrap();
        let line: serde_json::Value = serde_json::from_str(logged.lines().last().unwrap()).unwrap();
        match mode {
            "truncated" => {
                assert_eq!(rec["ip"], "81.2.69.0");
                assert_eq!(line["client_ip"], "81.2.69.0");
            }
            "hashed" => {
                assert!(rec["ip"].starts_with("h:") && rec["ip"].len() == 18, "{:?}", rec["ip"]);
                assert_eq!(line["client_ip"], rec["ip"].as_str(), "the log hashes alike");
            }
            _ => {
                assert!(["ip", "first_ip"].iter().all(|f| rec.get(*f).is_none_or(|v| v.is_empty())), "{rec:?}");
                assert!(line.get("client_ip").is_none(), "{line}");
            }
        }
        assert!(!logged.contains(ADDRESS), "{mode}: the address in the log: {logged}");
        kept.push(rec.get("ip").cloned());
        p.terminate(Duration::from_secs(5));
    }
    assert_eq!(kept.len(), 3);
}

/// `Sec-GPC: 1` (honoured by default): the request counts in the day's totals, but its session
/// keeps no address, device, timeline or replay.
#[test]
fn global_privacy_control_leaves_no_session_detail() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let p = proxy(&redis, &app, None, "");
    let r = client()
        .post(p.url("/login"))
        .header("sec-gpc", "1")
        .header("user-agent", UA)
        .header("x-forwarded-for", ADDRESS)
        .json(&serde_json::json!({"user_id": "quinn", "role": "user"}))
        .send()
        .unwrap();
    let cookie = set_cookie_value(&r, "session").unwrap();
    let sid = sid_of(&cookie);
    for _ in 0..4 {
        browse(&p, &cookie, &[("sec-gpc", "1")]);
    }
    wait_hits(&redis, &sid, 5);
    let rec = record(&redis, &sid);
    for field in ["ip", "first_ip", "browser", "os", "device", "fp_ua", "fp_prefix"] {
        assert!(rec.get(field).is_none_or(|v| v.is_empty()), "{field} kept: {rec:?}");
    }
    assert_eq!(rec["user_id"], "quinn", "the session itself is counted");
    let replay: i64 = redis::cmd("LLEN").arg(format!("sting:analytics:session:{sid}:replay")).query(&mut redis.conn()).unwrap();
    assert_eq!(replay, 0);
    let actions: Vec<String> = redis::cmd("LRANGE").arg(format!("sting:analytics:session:{sid}:actions")).arg(0).arg(-1).query(&mut redis.conn()).unwrap();
    assert!(actions.iter().all(|a| !a.contains("page_view")), "{actions:?}");
    let stats = api(&p, "sessions/stats");
    assert!(stats["hits_today"].as_i64().unwrap() >= 5, "{stats}");
}
