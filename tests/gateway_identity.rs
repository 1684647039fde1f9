//! Identity through the proxy with a real Redis and a real Flask + Flask-Session app.

mod common;

use common::*;

/// A request without cookies reaches the app with no identity, but with our forwarding headers.
#[test]
fn anonymous_request_passes_through() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    let seen_by_app = echo(&proxy.url("/echo"), None, &[]);
    assert_eq!(seen(&seen_by_app, "x-user-id"), None);
    assert_eq!(seen(&seen_by_app, "x-auth-source"), None);
    assert_eq!(seen(&seen_by_app, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen(&seen_by_app, "x-forwarded-proto"), Some("http"));
    assert_eq!(seen(&seen_by_app, "x-request-id").map(str::len), Some(32));
    let home = client().get(proxy.url("/")).send().unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.headers().get("x-request-id").is_some());
}

/// Logging in through the proxy, the app then receives the identity of its own session.
#[test]
fn login_through_proxy_then_identity_headers_reach_app() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "u1", "admin");
    let sid = cookie.rsplit_once('.').unwrap().0;
    let got = echo(&proxy.url("/echo"), Some(&cookie), &[]);
    assert_eq!(seen(&got, "x-user-id"), Some("u1"));
    assert_eq!(seen(&got, "x-user-email"), Some("u1@example.com"));
    assert_eq!(seen(&got, "x-user-role"), Some("admin"));
    assert_eq!(seen(&got, "x-session-id"), Some(sid), "the bare sid, never the signed cookie");
    assert_eq!(seen(&got, "x-auth-source"), Some("flask-session"));
    // The app's own view agrees: the proxy read the same session.
    assert_eq!(got["session"]["user_id"], "u1");
}

/// Identity headers sent by a client never reach the app, logged in or not.
#[test]
fn forged_identity_headers_are_stripped() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    proxy.wait_ready();
    let forged = [
        ("X-User-Id", "admin"),
        ("X-User-Role", "admin"),
        ("X-User-Email", "root@evil"),
        ("X-User-Anything", "x"),
        ("X-Auth-Source", "kratos"),
        ("X-Auth-AAL", "aal2"),
        ("X-Session-Id", "stolen"),
    ];
    let anon = echo(&proxy.url("/echo"), None, &forged);
    for (h, _) in forged {
        assert_eq!(seen(&anon, &h.to_ascii_lowercase()), None, "{h} leaked through");
    }
    let cookie = login(&proxy.url(""), "u2", "user");
    let user = echo(&proxy.url("/echo"), Some(&cookie), &forged);
    assert_eq!(seen(&user, "x-user-id"), Some("u2"), "exactly our value, not 'admin, u2'");
    assert_eq!(seen(&user, "x-user-role"), Some("user"));
    assert_eq!(seen(&user, "x-user-anything"), None);
}

/// A cookie whose sid or signature was altered, or that was signed with another key, is anonymous.
#[test]
fn tampered_or_wrong_key_cookie_is_anonymous() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: DEFAULT_RULES, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "u1", "admin");
    let (sid, sig) = cookie.rsplit_once('.').unwrap();
    let flipped_sig = format!("{sid}.{}{}", if sig.starts_with('A') { 'B' } else { 'A' }, &sig[1..]);
    let flipped_sid = format!("{}{}.{sig}", if sid.starts_with('A') { 'B' } else { 'A' }, &sid[1..]);
    let other_key = sting_proxy::identity::flask_cookie::CookieSigner::signed("not-the-secret", &[]).sign(sid);
    for bad in [flipped_sig, flipped_sid, other_key, sid.to_owned(), format!("{cookie}x")] {
        let got = echo(&proxy.url("/echo"), Some(&bad), &[]);
        assert_eq!(seen(&got, "x-user-id"), None, "cookie {bad} was accepted");
        let r = client().get(proxy.url("/api/data")).header("cookie", format!("session={bad}")).send().unwrap();
        assert_eq!(r.status(), 401);
    }
    // The genuine cookie still works.
    assert_eq!(seen(&echo(&proxy.url("/echo"), Some(&cookie), &[]), "x-user-id"), Some("u1"));
}

/// After a secret rotation the proxy still accepts cookies signed with a fallback secret.
#[test]
fn key_rotation_accepts_the_fallback_secret() {
    let redis = RedisServer::start();
    let app = FlaskApp::start_with_secret(&redis, FlaskSession::V08, "old-secret");
    let cookie = login(&app.url(), "u3", "user");
    let rotated = Proxy::start(ProxyOpts { secret: "new-secret", fallbacks: &["old-secret"], ..ProxyOpts::new(&redis, app.url()) });
    rotated.wait_ready();
    assert_eq!(seen(&echo(&rotated.url("/echo"), Some(&cookie), &[]), "x-user-id"), Some("u3"));
    let strict = Proxy::start(ProxyOpts { secret: "new-secret", ..ProxyOpts::new(&redis, app.url()) });
    strict.wait_ready();
    assert_eq!(seen(&echo(&strict.url("/echo"), Some(&cookie), &[]), "x-user-id"), None);
}

/// Logging out through the proxy makes the very next request anonymous, despite the cache.
#[test]
fn logout_makes_the_next_request_anonymous() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { cache_ttl_seconds: 300, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "u4", "user");
    assert_eq!(seen(&echo(&proxy.url("/echo"), Some(&cookie), &[]), "x-user-id"), Some("u4"));
    let out = client().post(proxy.url("/logout")).header("cookie", format!("session={cookie}")).send().unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(set_cookie_value(&out, "session").as_deref(), Some(""), "the app clears its cookie");
    assert_eq!(seen(&echo(&proxy.url("/echo"), Some(&cookie), &[]), "x-user-id"), None);
}

/// Sessions written by Flask-Session 0.6 (pickle) and 0.8 (msgpack) are both recognised.
#[test]
fn pickle_and_msgpack_sessions_are_both_recognised() {
    let redis = RedisServer::start();
    let app08 = FlaskApp::start(&redis, FlaskSession::V08);
    let app06 = FlaskApp::start(&redis, FlaskSession::V06);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app08.url()));
    proxy.wait_ready();
    let msgpack_cookie = login(&app08.url(), "mp-user", "user");
    let pickle_cookie = login(&app06.url(), "pk-user", "admin");
    let mut conn = redis.conn();
    let mut first_byte = |cookie: &str| -> u8 {
        let sid = cookie.rsplit_once('.').unwrap().0;
        let raw: Vec<u8> = redis::cmd("GET").arg(format!("sting:session:{sid}")).query(&mut conn).unwrap();
        raw[0]
    };
    assert!((0x81..=0x8f).contains(&first_byte(&msgpack_cookie)), "0.8 stores msgpack");
    assert_eq!(first_byte(&pickle_cookie), 0x80, "0.6 stores pickle");
    let mp = echo(&proxy.url("/echo"), Some(&msgpack_cookie), &[]);
    assert_eq!(seen(&mp, "x-user-id"), Some("mp-user"));
    let pk = echo(&proxy.url("/echo"), Some(&pickle_cookie), &[]);
    assert_eq!(seen(&pk, "x-user-id"), Some("pk-user"));
    assert_eq!(seen(&pk, "x-user-role"), Some("admin"));
}

/// A session without a user id is anonymous; a session key that expired is anonymous too.
#[test]
fn anonymous_and_expired_sessions_carry_no_identity() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { cache_ttl_seconds: 0, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let anon = client().get(proxy.url("/anon")).send().unwrap();
    let anon_cookie = set_cookie_value(&anon, "session").expect("anonymous session cookie");
    assert_eq!(seen(&echo(&proxy.url("/echo"), Some(&anon_cookie), &[]), "x-user-id"), None);
    let cookie = login(&proxy.url(""), "u5", "user");
    let sid = cookie.rsplit_once('.').unwrap().0.to_owned();
    let _: () = redis::cmd("DEL").arg(format!("sting:session:{sid}")).query(&mut redis.conn()).unwrap();
    assert_eq!(seen(&echo(&proxy.url("/echo"), Some(&cookie), &[]), "x-user-id"), None);
}
