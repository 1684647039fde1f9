//! Hostile input against identity and access (issue 12, items 1-7), each as the attack a client
//! would send through the real binary: real Redis, the real Flask-Session app, and a Kratos stub
//! serving Kratos's real whoami bodies (Kratos itself cannot run here).

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "hostile-analytics-token-0123456789";

/// A user who writes `role = "admin"` into their own Kratos traits is not an admin: the API
/// answers 403 and the app gets no `X-User-Role: admin`.
#[test]
fn a_role_in_traits_makes_no_admin() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    let mut body = whoami_body("self-made-admin");
    body["identity"]["traits"]["role"] = serde_json::json!("admin");
    body["identity"]["metadata_public"] = serde_json::Value::Null;
    kratos.answer("trait-admin", StubAnswer::Json(200, body));
    let mut real = whoami_body("real-admin");
    real["identity"]["metadata_public"] = serde_json::json!({"role": "admin"});
    kratos.answer("meta-admin", StubAnswer::Json(200, real));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "");
    let c = client();

    let api = c.get(proxy.url("/api/analytics/sessions/active")).header("x-session-token", "trait-admin").send().unwrap();
    assert_eq!(api.status(), 403);
    let e: serde_json::Value = c.get(proxy.url("/echo")).header("x-session-token", "trait-admin").send().unwrap().json().unwrap();
    assert_eq!(seen(&e, "x-user-id"), Some("self-made-admin"));
    assert_eq!(seen(&e, "x-user-role"), None);

    // The admin-written metadata role still works.
    let api = c.get(proxy.url("/api/analytics/sessions/active")).header("x-session-token", "meta-admin").send().unwrap();
    assert_eq!(api.status(), 200);
}

/// With `kratos.role_from_traits = true` the trait counts, and `check` warns about it.
#[test]
fn role_from_traits_is_explicit_and_warned() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    let mut body = whoami_body("trait-user");
    body["identity"]["traits"]["role"] = serde_json::json!("admin");
    kratos.answer("t", StubAnswer::Json(200, body));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "role_from_traits = true\n");
    let e: serde_json::Value = client().get(proxy.url("/echo")).header("x-session-token", "t").send().unwrap().json().unwrap();
    assert_eq!(seen(&e, "x-user-role"), Some("admin"));
    let (_, out, _) = proxy.cli(&["check"]);
    assert!(out.contains("warn  kratos.role_from_traits = true"), "{out}");
    assert!(proxy.log().contains("role_from_traits"), "start-up warns too");
}

/// Unsigned Flask-Session cookies are the login credential itself: the proxy refuses to run
/// unsigned without `session.allow_unsigned`, and with it no raw sid appears in any key or value
/// it writes, in its logs, in the headers the app gets, or in the API.
#[test]
fn unsigned_mode_never_publishes_the_raw_sid() {
    let redis = RedisServer::start();
    let app = FlaskApp::start_with(&redis, FlaskSession::V08, SECRET, &[("SESSION_USE_SIGNER", "0")]);

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("unsigned.toml");
    std::fs::write(&conf, format!("[session]\nsecret_key = \"k\"\nuse_signer = false\n[redis]\nurl = \"{}\"\n", redis.url())).unwrap();
    let out = std::process::Command::new(proxy_binary()).args(["check", "--config"]).arg(&conf).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("session.use_signer") && err.contains("allow_unsigned") && err.contains("unsigned.toml"), "{err}");

    let access_log = dir.path().join("access.log");
    let server = format!("access_log_path = \"{}\"\n", access_log.display());
    let mut opts = ProxyOpts { session_toml: "use_signer = false\nallow_unsigned = true\n", server_toml: &server, ..ProxyOpts::new(&redis, app.url()) };
    opts.env = vec![("STING_ANALYTICS_TOKEN", TOKEN.to_owned())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();

    let sid = login(&proxy.url(""), "unsigned-user", "user");
    assert!(!sid.contains('.'), "unsigned: the cookie is the bare sid ({sid})");
    for i in 0..5 {
        let r = client().get(proxy.url(&format!("/page/{i}"))).header("cookie", format!("session={sid}")).header("accept", "text/html").send().unwrap();
        assert!(r.status().as_u16() < 500);
    }
    let e = echo(&proxy.url("/echo"), Some(&sid), &[]);
    assert_eq!(seen(&e, "x-user-id"), Some("unsigned-user"), "unsigned sessions still identify their user");
    let published = seen(&e, "x-session-id").unwrap().to_owned();
    assert!(published.len() == 32 && published != sid, "{published}");

    // The analytics writer has recorded the session under the published id.
    wait_until("analytics record", Duration::from_secs(10), || {
        redis::cmd("EXISTS").arg(format!("sting:analytics:session:{published}")).query::<bool>(&mut redis.conn()).unwrap()
    });
    let api = client().get(proxy.url("/api/analytics/sessions")).header("authorization", format!("Bearer {TOKEN}")).send().unwrap().text().unwrap();
    let user = client()
        .get(proxy.url("/api/analytics/users/unsigned-user/sessions"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(api.contains(&published) && user.contains(&published), "the API shows the published id: {api}");
    std::thread::sleep(Duration::from_millis(500)); // the access log's writer

    let app_key = format!("sting:session:{sid}");
    let leaks: Vec<String> = redis.dump_all().into_iter().filter(|(k, v)| *k != app_key && (k.contains(&sid) || v.contains(&sid))).map(|(k, _)| k).collect();
    assert!(leaks.is_empty(), "raw sid in Redis under {leaks:?}");
    let log = std::fs::read_to_string(&access_log).unwrap();
    assert!(log.contains(&published) && !log.contains(&sid), "access log:\n{log}");
    assert!(!proxy.log().contains(&sid), "proxy log holds the raw sid");
    assert!(!api.contains(&sid) && !user.contains(&sid));
}

/// A client's forwarding headers do not reach the app (Werkzeug's ProxyFix would build
/// password-reset links on `X-Forwarded-Host: evil.example`); the app gets the Host it asked
/// for. A trusted proxy's headers pass.
#[test]
fn client_forwarding_headers_are_stripped() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let forged = [
        ("forwarded", "for=1.2.3.4;host=evil.example;proto=https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/evil"),
        ("x-forwarded-server", "evil.example"),
        ("x-real-ip", "1.2.3.4"),
        ("x-client-ip", "1.2.3.4"),
        ("true-client-ip", "1.2.3.4"),
        ("cf-connecting-ip", "1.2.3.4"),
    ];
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    proxy.wait_ready();
    let e = echo(&proxy.url("/echo"), None, &forged);
    for (h, _) in forged.iter().filter(|(h, _)| *h != "x-forwarded-host") {
        assert_eq!(seen(&e, h), None, "{h} reached the app: {e}");
    }
    assert_eq!(seen(&e, "x-forwarded-host"), Some(format!("127.0.0.1:{}", proxy.port).as_str()));

    let trusted = Proxy::start(ProxyOpts { server_toml: "trusted_proxies = [\"127.0.0.1/32\"]\n", ..ProxyOpts::new(&redis, app.url()) });
    trusted.wait_ready();
    let e = echo(&trusted.url("/echo"), None, &forged);
    assert_eq!(seen(&e, "x-forwarded-host"), Some("evil.example"), "a trusted proxy's header passes");
    assert_eq!(seen(&e, "x-real-ip"), Some("1.2.3.4"));
}

/// The proxy and the app pick the same session from tricky `Cookie` headers: an empty first
/// `session=` is no session on both sides, and two `Cookie` lines reach the app joined.
#[test]
fn proxy_and_app_agree_on_the_session_cookie() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "cookie-user", "user");
    let sid = cookie.split('.').next().unwrap();

    let via = |headers: &[(&str, &str)]| -> serde_json::Value {
        let mut r = client().get(proxy.url("/echo"));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().unwrap().json().unwrap()
    };
    let e = via(&[("cookie", &format!("session=; session={cookie}"))]);
    assert_eq!(seen(&e, "x-user-id"), None, "the proxy must not see a user the app does not: {e}");
    assert_ne!(e["sid"].as_str(), Some(sid), "the app ignores the second cookie too");

    let e = via(&[("cookie", "a=1"), ("cookie", &format!("session={cookie}"))]);
    assert_eq!(seen(&e, "cookie"), Some(format!("a=1; session={cookie}").as_str()), "{e}");
    assert_eq!(seen(&e, "x-user-id"), Some("cookie-user"));
    assert_eq!(e["sid"].as_str(), Some(sid));
    assert_eq!(seen(&e, "x-session-id"), Some(sid));

    let e = via(&[("cookie", &format!("session=\"{cookie}\"; session=other"))]);
    assert_eq!((seen(&e, "x-user-id"), e["sid"].as_str()), (Some("cookie-user"), Some(sid)), "quoted values: both unquote");
}

/// `Authorization: Bearer` goes to Kratos only with `kratos.bearer_tokens = true`, and never on
/// a request for the proxy's own API (a mistyped analytics token).
#[test]
fn bearer_tokens_reach_kratos_only_when_asked() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("kb-1", StubAnswer::session("bearer-user", None, "aal1"));
    let off = proxy_with_kratos(&redis, &app, &kratos, "");
    let e = echo(&off.url("/echo"), None, &[("authorization", "Bearer kb-1")]);
    assert_eq!((seen(&e, "x-user-id"), kratos.calls()), (None, 0), "the app's own API tokens stay away from Kratos");

    let on = proxy_with_kratos(&redis, &app, &kratos, "bearer_tokens = true\n");
    let e = echo(&on.url("/echo"), None, &[("authorization", "Bearer kb-1")]);
    assert_eq!(seen(&e, "x-user-id"), Some("bearer-user"));
    let before = kratos.calls();
    let r = client().get(on.url("/api/analytics/sessions/active")).header("authorization", "Bearer mistyped-analytics-token").send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(kratos.calls(), before, "a request for the proxy's API never asks Kratos about its bearer");
}

/// Kratos answering 400 to client-made garbage does not open the circuit for everyone.
#[test]
fn client_provoked_kratos_400s_keep_the_circuit_closed() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    for i in 0..20 {
        kratos.answer(&format!("garbage-{i}"), StubAnswer::Status(400));
    }
    kratos.answer("good", StubAnswer::session("good-user", None, "aal1"));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "circuit_failure_threshold = 3\n");
    for i in 0..20 {
        let e = echo(&proxy.url("/echo"), None, &[("x-session-token", &format!("garbage-{i}"))]);
        assert_eq!(seen(&e, "x-user-id"), None);
    }
    let e = echo(&proxy.url("/echo"), None, &[("x-session-token", "good")]);
    assert_eq!(seen(&e, "x-user-id"), Some("good-user"), "the circuit stayed closed");
    let metrics = client().get(proxy.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("sting_kratos_circuit_state 0"), "{metrics}");
    assert!(metrics.contains(r#"sting_kratos_calls_total{result="refused"} 20"#), "{metrics}");
}

/// A link from another site opens the dashboard (a top-level navigation); scripts and frames
/// from another site still get 403, and the API never takes cross-site requests.
#[test]
fn dashboard_links_from_other_sites_open() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    proxy.wait_ready();
    let c = client();
    let nav = |path: &str, dest: &str| {
        c.get(proxy.url(path))
            .header("accept", "text/html")
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", dest)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(nav("/analytics/", "document"), 302, "to the login page, not 403");
    assert_eq!(nav("/analytics/", "iframe"), 403);
    assert_eq!(nav("/api/analytics/sessions/active", "document"), 403);
}

/// A Flask logout on a request whose user came from Kratos ends the Flask session in analytics,
/// not the Kratos one.
#[test]
fn flask_logout_on_a_kratos_request_ends_the_flask_session() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("kt", StubAnswer::session("kratos-user", None, "aal1"));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "");
    // An anonymous Flask session first (the app gives one to every visitor of /anon).
    let r = client().get(proxy.url("/anon")).send().unwrap();
    let flask_cookie = set_cookie_value(&r, "session").expect("anonymous Flask session");
    let kratos_sid = "7458af86-c1d8-401c-978a-8da89133f98b";
    let get = |path: &str| client().get(proxy.url(path)).header("cookie", format!("session={flask_cookie}")).header("x-session-token", "kt").send().unwrap();
    assert_eq!(get("/echo").status(), 200);
    let active = |sid: &str| redis::cmd("SISMEMBER").arg("sting:active:sessions").arg(sid).query::<bool>(&mut redis.conn()).unwrap();
    wait_until("the Kratos session is active", Duration::from_secs(10), || active(kratos_sid));
    assert!(get("/logout").status().as_u16() < 400);
    std::thread::sleep(Duration::from_millis(800));
    assert!(active(kratos_sid), "the Kratos session did not end with the Flask logout");
}

/// While Redis is down, a protected route's 503 and the API's 503 say nothing of Redis's error,
/// and the proxy's log warns once, not once per request.
#[test]
fn redis_down_answers_are_plain_and_logged_once() {
    let mut redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts { extra_toml: DEFAULT_RULES, ..ProxyOpts::new(&redis, app.url()) };
    opts.env = vec![("STING_ANALYTICS_TOKEN", TOKEN.to_owned())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    let cookie = login(&proxy.url(""), "down-user", "user");
    redis.stop();
    let mut bodies = String::new();
    for _ in 0..40 {
        let r = client().get(proxy.url("/dashboard")).header("cookie", format!("session={cookie}")).send().unwrap();
        assert_eq!(r.status(), 503);
        bodies.push_str(&r.text().unwrap());
    }
    let r = client().get(proxy.url("/api/analytics/sessions/stats")).header("authorization", format!("Bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), 503);
    bodies.push_str(&r.text().unwrap());
    let ready = client().get(proxy.admin_url("/readyz")).send().unwrap().text().unwrap();
    for leak in ["refused", "os error", "127.0.0.1", "Connection", "timed out"] {
        assert!(!bodies.contains(leak) && !ready.contains(leak), "{leak} in {bodies} {ready}");
    }
    let warnings = proxy.log().matches("session store unavailable").count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings for 40 requests");
}
