//! Authorisation rules: browsers are redirected to log in, APIs get JSON 401/403.

mod common;

use common::*;

/// An unauthenticated browser is sent to the login page with a return-to parameter; an API
/// client gets a 401 JSON body; a wrong role gets 403; the right role passes.
#[test]
fn protected_paths_redirect_browsers_and_reject_apis() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: DEFAULT_RULES, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let c = client();

    let browser = c.get(proxy.url("/dashboard?tab=1")).header("accept", "text/html,application/xhtml+xml").send().unwrap();
    assert_eq!(browser.status(), 302);
    assert_eq!(browser.headers()["location"], "/login?next=%2Fdashboard%3Ftab%3D1");

    let api = c.get(proxy.url("/api/data")).header("accept", "application/json").send().unwrap();
    assert_eq!(api.status(), 401);
    let body: serde_json::Value = api.json().unwrap();
    assert_eq!(body["error"], "unauthenticated");

    let user = login(&proxy.url(""), "plain", "user");
    let ok = c.get(proxy.url("/dashboard")).header("cookie", format!("session={user}")).send().unwrap();
    assert_eq!(ok.status(), 200);
    let forbidden = c.get(proxy.url("/admin/panel")).header("cookie", format!("session={user}")).send().unwrap();
    assert_eq!(forbidden.status(), 403);
    assert_eq!(forbidden.json::<serde_json::Value>().unwrap()["error"], "forbidden");

    let admin = login(&proxy.url(""), "boss", "admin");
    let allowed = c.get(proxy.url("/admin/panel")).header("cookie", format!("session={admin}")).send().unwrap();
    assert_eq!(allowed.status(), 200);

    // Public paths stay public, and look-alike prefixes are not caught by a rule.
    assert_eq!(c.get(proxy.url("/")).send().unwrap().status(), 200);
    assert_eq!(c.get(proxy.url("/dashboardx")).send().unwrap().status(), 404);
}

/// `STING_REQUIRE_AUTH` and `STING_LOGIN_URL` configure protection from the environment.
#[test]
fn require_auth_and_login_url_from_environment() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.env = vec![("STING_REQUIRE_AUTH", "/echo".into()), ("STING_LOGIN_URL", "https://login.example.com/in?x=1".into())];
    let proxy = Proxy::start(opts);
    proxy.wait_ready();
    let r = client().get(proxy.url("/echo/a")).header("accept", "text/html").send().unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://login.example.com/in?x=1&next=%2Fecho%2Fa");
}

/// Encoded or doubled paths that Flask routes to a protected page are protected too; dot
/// segments and targets without a leading slash are refused.
#[test]
fn path_tricks_do_not_bypass_rules() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts { extra_toml: DEFAULT_RULES, ..ProxyOpts::new(&redis, app.url()) });
    proxy.wait_ready();
    let user = login(&proxy.url(""), "plain", "user");
    // Raw socket: HTTP clients would normalise these paths before sending them.
    let status_of = |path: &str| {
        let resp = raw_request(
            proxy.port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nCookie: session={user}\r\nConnection: close\r\n\r\n"),
        );
        resp.lines().next().unwrap_or("").to_owned()
    };
    for path in ["/%61dmin/panel", "//admin/panel", "/%2Fadmin/panel"] {
        assert!(status_of(path).starts_with("HTTP/1.1 403"), "{path}: {}", status_of(path));
    }
    for path in ["/x/../admin/panel", "/admin/x/../../echo", "/%2e%2e/admin/panel", "admin/panel"] {
        assert!(status_of(path).starts_with("HTTP/1.1 400"), "{path}: {}", status_of(path));
    }
    assert!(status_of("/echo/ok").starts_with("HTTP/1.1 200"));
}
