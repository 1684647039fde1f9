//! Revocation through the API (issue 13): a session revoked through one proxy instance is refused
//! by every instance at once, whatever they have cached; the app's session key goes, analytics
//! ends the session as `revoked`, Kratos's admin API is told, and the change is audited. Real
//! Redis, the real Flask app, two proxy binaries, the Kratos stub (serving Kratos's real
//! response shapes; Kratos itself cannot run here).

mod common;

use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "revocation-test-token-0123456789";

/// A proxy instance; with `kratos`, `admin` also gives it the stub as `kratos.admin_url`.
fn proxy_with(redis: &RedisServer, app: &FlaskApp, kratos: Option<&KratosStub>, admin: bool) -> Proxy {
    let mut opts = ProxyOpts::new(redis, app.url());
    // A long session cache: only the revocation, not a cache expiry, can stop a warm session.
    opts.cache_ttl_seconds = 300;
    opts.kratos = kratos.map(KratosStub::url);
    opts.extra_toml = Box::leak(format!("{DEFAULT_RULES}\n[analytics]\nbatch_max_delay_ms = 5\n").into_boxed_str());
    opts.env = vec![("STING_ANALYTICS_TOKEN", TOKEN.to_owned())];
    if let (Some(k), true) = (kratos, admin) {
        opts.env.push(("KRATOS_ADMIN_URL", k.url()));
    }
    let p = Proxy::start(opts);
    p.wait_ready();
    p
}

fn proxy(redis: &RedisServer, app: &FlaskApp) -> Proxy {
    proxy_with(redis, app, None, false)
}

fn api(proxy: &Proxy, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
    let r = client().request(method, proxy.url(&format!("/api/analytics/{path}"))).bearer_auth(TOKEN).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or_default())
}

fn user_seen(proxy: &Proxy, cookie: &str) -> Option<String> {
    seen(&echo(&proxy.url("/echo"), Some(cookie), &[]), "x-user-id").map(str::to_owned)
}

fn wait_recorded(proxy: &Proxy, sid: &str) {
    wait_until("the session's record", Duration::from_secs(15), || api(proxy, reqwest::Method::GET, &format!("sessions/{sid}")).0 == 200);
}

/// Revoked through A, refused by B on its next request although B has the identity cached;
/// the app's key is gone, analytics says `revoked`, and a proxy started afterwards refuses it
/// too. Revocation latency (API call on A to the first refusal on B) over 40 sessions is
/// printed: a measurement, not an assertion.
#[test]
fn a_session_revoked_through_one_instance_is_refused_by_another() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let (a, b) = (proxy(&redis, &app), proxy(&redis, &app));
    let cookie = login(&b.url(""), "alice", "user");
    let sid = sid_of(&cookie);
    assert_eq!(user_seen(&b, &cookie).as_deref(), Some("alice"));
    wait_recorded(&a, &sid);

    let (status, body) = api(&a, reqwest::Method::DELETE, &format!("sessions/{sid}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"session_id": sid, "revoked": true, "ended": true, "app_session_deleted": true}));
    assert_eq!(user_seen(&b, &cookie), None, "B refuses the revoked session at once");
    let seen_by_app = echo(&b.url("/echo"), Some(&cookie), &[("x-session-token", "t"), ("authorization", "Bearer t")]);
    assert_eq!(
        (seen(&seen_by_app, "cookie"), seen(&seen_by_app, "x-session-token"), seen(&seen_by_app, "authorization")),
        (None, None, None),
        "a revoked session's credentials never reach the app: {seen_by_app}"
    );
    assert_eq!(user_seen(&a, &cookie), None);
    let protected = client().get(b.url("/dashboard")).header("cookie", format!("session={cookie}")).header("accept", "text/html").send().unwrap();
    assert_eq!(protected.status(), 302, "a protected page sends the revoked session to log in");
    let exists: bool = redis::cmd("EXISTS").arg(format!("sting:session:{sid}")).query(&mut redis.conn()).unwrap();
    assert!(!exists, "the app's own session is deleted, so the app logs the user out too");
    let (_, rec) = api(&a, reqwest::Method::GET, &format!("sessions/{sid}"));
    assert_eq!(rec["end_reason"], "revoked");
    let (_, stats) = api(&a, reqwest::Method::GET, "sessions/stats");
    assert_eq!(stats["sessions_ended_today"], 1, "ended once, not again as a logout when its key went: {stats}");
    let (status, _) = api(&a, reqwest::Method::DELETE, "sessions/no-such-session");
    assert_eq!(status, 404);
    // The CLI revokes the same way: B refuses at once; audited as `cli`.
    let other = login(&b.url(""), "zoe", "user");
    assert_eq!(user_seen(&b, &other).as_deref(), Some("zoe"));
    wait_recorded(&a, &sid_of(&other));
    let (code, out, err) = a.cli(&["revoke", "session", &sid_of(&other)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Revoked session"), "{out}");
    assert_eq!(user_seen(&b, &other), None);
    let (_, audit) = api(&a, reqwest::Method::GET, "audit");
    assert_eq!(audit["entries"][0]["actor"], "cli");

    // Latency: revoke on A, poll B until it refuses.
    let mut samples = Vec::new();
    for i in 0..40 {
        let cookie = login(&b.url(""), &format!("user{i}"), "user");
        assert!(user_seen(&b, &cookie).is_some());
        let sid = sid_of(&cookie);
        wait_recorded(&a, &sid);
        let started = Instant::now();
        let (status, _) = api(&a, reqwest::Method::DELETE, &format!("sessions/{sid}"));
        assert_eq!(status, 200);
        while user_seen(&b, &cookie).is_some() {
            assert!(started.elapsed() < Duration::from_secs(10), "B never refused {sid}");
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "revocation latency (DELETE on A to first refusal on B), 40 sessions: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(samples[samples.len() / 2]),
        ms(samples[(samples.len() * 99).div_ceil(100) - 1]),
        ms(samples[samples.len() - 1])
    );
}

/// Kratos sessions: the proxy refuses a revoked one even though Kratos's whoami would still
/// accept it from a cache, tells Kratos's admin API, and an instance started after the
/// revocation refuses it too (it loads the revoked set).
#[test]
fn a_revoked_kratos_session_is_refused_and_revoked_in_kratos() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("tok-1", StubAnswer::session("identity-1", None, "aal1"));
    // A: no admin API configured, so Kratos keeps accepting the session; the proxy must not.
    let a = proxy_with(&redis, &app, Some(&kratos), false);
    let user = |p: &Proxy| seen(&echo(&p.url("/echo"), None, &[("x-session-token", "tok-1")]), "x-user-id").map(str::to_owned);
    assert_eq!(user(&a).as_deref(), Some("identity-1"));
    let kratos_sid = "7458af86-c1d8-401c-978a-8da89133f98b";
    wait_recorded(&a, kratos_sid);
    let (status, body) = api(&a, reqwest::Method::DELETE, &format!("sessions/{kratos_sid}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kratos"], "not_configured");
    assert_eq!(user(&a), None, "the cached whoami answer no longer lets it in");
    // An instance started now learns the revocation from Redis, not from the channel; Kratos
    // itself still says the session is fine.
    let c = proxy_with(&redis, &app, Some(&kratos), false);
    assert_eq!(user(&c), None);
    assert!(kratos.admin_calls().is_empty());
    // With `kratos.admin_url`, the revocation reaches Kratos too.
    let d = proxy_with(&redis, &app, Some(&kratos), true);
    let (status, body) = api(&d, reqwest::Method::DELETE, &format!("sessions/{kratos_sid}"));
    assert_eq!((status, body["kratos"].as_str()), (200, Some("revoked")), "{body}");
    assert_eq!(kratos.admin_calls(), [format!("DELETE /admin/sessions/{kratos_sid}")]);
    let (status, body) = api(&d, reqwest::Method::POST, "users/identity-1/revoke");
    assert_eq!((status, body["kratos"].as_str()), (200, Some("revoked")), "{body}");
    assert_eq!(kratos.admin_calls()[1], "DELETE /admin/identities/identity-1/sessions");
}

/// An admin's browser session may revoke only with the CSRF header; every change is in the
/// audit log with who made it; revoking a user ends all of their active sessions.
#[test]
fn changes_need_the_csrf_header_and_are_audited() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let a = proxy(&redis, &app);
    let admin = login(&a.url(""), "root", "admin");
    let bob = [login(&a.url(""), "bob", "user"), login(&a.url(""), "bob", "user")];
    for c in &bob {
        assert_eq!(user_seen(&a, c).as_deref(), Some("bob"));
        wait_recorded(&a, &sid_of(c));
    }
    let revoke_bob = || client().post(a.url("/api/analytics/users/bob/revoke")).header("cookie", format!("session={admin}"));
    let r = revoke_bob().send().unwrap();
    assert_eq!(r.status(), 403, "no CSRF header");
    assert!(bob.iter().all(|c| user_seen(&a, c).is_some()), "nothing was revoked");
    let r = revoke_bob().header("x-sting-csrf", "1").send().unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["revoked"], 2, "{body}");
    assert!(bob.iter().all(|c| user_seen(&a, c).is_none()), "both of bob's sessions are refused");
    let cross = client().post(a.url("/api/analytics/users/bob/revoke")).header("cookie", format!("session={admin}")).header("x-sting-csrf", "1");
    assert_eq!(cross.header("origin", "https://evil.example").send().unwrap().status(), 403, "another origin is refused first");

    let (_, audit) = api(&a, reqwest::Method::GET, "audit");
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (entries[0]["actor"].as_str(), entries[0]["action"].as_str(), entries[0]["target"].as_str()),
        (Some("user:root"), Some("revoke_user"), Some("bob"))
    );
    let (_, _) = api(&a, reqwest::Method::DELETE, &format!("sessions/{}", sid_of(&admin)));
    let (_, audit) = api(&a, reqwest::Method::GET, "audit");
    assert_eq!(audit["entries"][0]["actor"], "token", "bearer-token changes are audited as the token");
}
