//! The failure policy (docs/operations.md), one fault at a time.

mod common;

use std::time::Duration;

use common::*;

/// With Redis stopped: public paths still serve, protected paths answer 503 (not a login
/// redirect: the session may be valid), `/readyz` says why; when Redis returns, all recovers.
#[test]
fn redis_down_keeps_public_paths_and_fails_protected_ones_safely() {
    let mut redis = RedisServer::start();
    let app_redis = RedisServer::start(); // the app keeps its own Redis so only the proxy loses one
    let app = FlaskApp::start(&app_redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { cache_ttl_seconds: 0, extra_toml: DEFAULT_RULES, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let c = client();
    assert_eq!(c.get(proxy.admin_url("/healthz")).send().unwrap().status(), 200);

    redis.stop();
    assert_eq!(c.get(proxy.url("/")).send().unwrap().status(), 200, "public path during outage");
    let ready = c.get(proxy.admin_url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().unwrap();
    assert!(body["reason"].as_str().unwrap().starts_with("redis"), "{body}");
    let cookie = sting_proxy::identity::flask_cookie::CookieSigner::signed(SECRET, &[]).sign("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
    let protected = c.get(proxy.url("/dashboard")).header("cookie", format!("session={cookie}")).send().unwrap();
    assert_eq!(protected.status(), 503);
    assert!(protected.headers().get("retry-after").is_some());
    assert_eq!(c.get(proxy.admin_url("/healthz")).send().unwrap().status(), 200, "alive even when not ready");

    redis.restart();
    proxy.wait_ready();
    let after = c.get(proxy.url("/dashboard")).header("cookie", format!("session={cookie}")).header("accept", "application/json").send().unwrap();
    assert_eq!(after.status(), 401, "Redis answers again: the unknown session is simply unauthenticated");
}

/// The proxy starts and serves public paths even when Redis is down at boot.
#[test]
fn starts_without_redis() {
    let app_redis = RedisServer::start();
    let app = FlaskApp::start(&app_redis, FlaskSession::V08);
    let dead_redis = format!("redis://127.0.0.1:{}/0", free_port());
    let proxy = Proxy::start(ProxyOpts { redis_url: dead_redis, ..ProxyOpts::new(&app_redis, app.url()) });
    assert_eq!(client().get(proxy.url("/")).send().unwrap().status(), 200);
    assert_eq!(client().get(proxy.admin_url("/readyz")).send().unwrap().status(), 503);
}

/// The app being down gives a 502 from the proxy, not a hang or a crash.
#[test]
fn app_down_is_a_502() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(ProxyOpts::new(&redis, format!("http://127.0.0.1:{}", free_port())));
    let r = client().get(proxy.url("/")).send().unwrap();
    assert_eq!(r.status(), 502);
    // And the proxy is still alive afterwards.
    assert_eq!(client().get(proxy.admin_url("/healthz")).send().unwrap().status(), 200);
}

/// Huge, garbled or hostile cookies and session bytes give an anonymous request, never a 500.
#[test]
fn garbage_input_is_anonymous_never_an_error() {
    let redis = RedisServer::start();
    // The app gets its own Redis: the garbage below would make Flask-Session itself fail.
    let app_redis = RedisServer::start();
    let app = FlaskApp::start(&app_redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { cache_ttl_seconds: 0, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let signer = sting_proxy::identity::flask_cookie::CookieSigner::signed(SECRET, &[]);
    let mut conn = redis.conn();
    let values: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01\x02not a session".to_vec()),
        ("bad-pickle", vec![0x80, 0x04, 0x95, 0xff, 0xff]),
        ("bad-msgpack", vec![0x84, 0xa7]),
        ("json-list", b"[1,2,3]".to_vec()),
        ("too-big", vec![b'{'; 200_000]),
    ];
    for (sid, bytes) in &values {
        let _: () = redis::cmd("SET").arg(format!("sting:session:{sid}")).arg(bytes.as_slice()).query(&mut conn).unwrap();
        let got = echo(&proxy.url("/echo"), Some(&signer.sign(sid)), &[]);
        assert_eq!(seen(&got, "x-user-id"), None, "{sid}");
    }
    let c = client();
    for cookie in ["a".repeat(8000), "session=;;;===;".into(), "ünïcødé.sig".into(), format!("{}.{}", "x".repeat(300), "y".repeat(27))] {
        let r = c.get(proxy.url("/echo")).header("cookie", format!("session={cookie}")).send().unwrap();
        assert!(r.status().is_success() || r.status().is_client_error(), "status {} for a garbled cookie", r.status());
    }
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
    assert_eq!(c.get(proxy.admin_url("/healthz")).send().unwrap().status(), 200);
}

/// SIGTERM stops the proxy gracefully within the configured grace period, exit code 0.
#[test]
fn sigterm_exits_cleanly() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    proxy.wait_ready();
    assert_eq!(client().get(proxy.url("/")).send().unwrap().status(), 200);
    // pingora installs its signal handlers only after the listeners are up; a SIGTERM in that
    // instant takes the default action. Give the main loop a moment to start listening.
    std::thread::sleep(Duration::from_millis(300));
    let status = proxy.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}:\n{}", proxy.log());
}
