//! Plain proxying: bodies stream both ways, the app's cookies pass untouched, forwarding headers
//! follow the trusted-proxy setting.

mod common;

use std::io::Read;

use common::*;
use sha2::{Digest, Sha256};

/// A 20 MiB upload and a 20 MiB download pass through intact (checked by hash and length).
#[test]
fn large_bodies_stream_both_ways() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    let body: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let expected = hex::encode(Sha256::digest(&body));
    let up: serde_json::Value = client().post(proxy.url("/upload")).body(body.clone()).send().unwrap().json().unwrap();
    assert_eq!(up["bytes"], body.len());
    assert_eq!(up["sha256"], expected);

    let n = 20 * 1024 * 1024 + 3;
    let mut resp = client().get(proxy.url(&format!("/download?bytes={n}"))).send().unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    resp.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), n);
    assert!(got.chunks(10).all(|c| b"0123456789".starts_with(c)));
}

/// The app's `Set-Cookie` headers reach the client unchanged, each one separately.
#[test]
fn set_cookie_passes_through_untouched() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    let direct = client().get(format!("{}/set-cookie-test", app.url())).send().unwrap();
    let proxied = client().get(proxy.url("/set-cookie-test")).send().unwrap();
    let cookies =
        |r: &reqwest::blocking::Response| -> Vec<String> { r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect() };
    assert_eq!(cookies(&proxied), cookies(&direct));
    assert_eq!(cookies(&proxied).len(), 2);
}

/// `X-Forwarded-For` from the client is ignored unless the peer is a trusted proxy.
#[test]
fn forwarded_for_is_trusted_only_from_configured_proxies() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let untrusting = Proxy::start(ProxyOpts::new(&redis, app.url()));
    let got = echo(&untrusting.url("/echo"), None, &[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-proto", "https")]);
    assert_eq!(seen(&got, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen(&got, "x-forwarded-proto"), Some("http"));

    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.env = vec![("STING_TRUSTED_PROXIES", "127.0.0.0/8".into())];
    let trusting = Proxy::start(opts);
    let got = echo(&trusting.url("/echo"), None, &[("x-forwarded-for", "203.0.113.5"), ("x-forwarded-proto", "https")]);
    assert_eq!(seen(&got, "x-forwarded-for"), Some("203.0.113.5, 127.0.0.1"));
    assert_eq!(seen(&got, "x-forwarded-proto"), Some("https"));
}

/// A client-supplied request id is kept when it is plain, replaced when it is not.
#[test]
fn request_ids_are_kept_or_made() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    let kept = echo(&proxy.url("/echo"), None, &[("x-request-id", "abc-123")]);
    assert_eq!(seen(&kept, "x-request-id"), Some("abc-123"));
    let replaced = echo(&proxy.url("/echo"), None, &[("x-request-id", "<script>")]);
    assert_ne!(seen(&replaced, "x-request-id"), Some("<script>"));
}

/// Many requests over one keep-alive connection all succeed (the upstream pool is reused).
#[test]
fn keep_alive_connections_are_reused() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let proxy = Proxy::start(ProxyOpts::new(&redis, app.url()));
    let c = client();
    for i in 0..200 {
        let r = c.get(proxy.url(&format!("/echo/{i}"))).send().unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["path"], format!("/echo/{i}"));
    }
}

/// With `server.h2c = true`, HTTP/2 cleartext clients (prior knowledge) are served too.
#[test]
fn h2c_clients_are_served_when_enabled() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let h2 = reqwest::blocking::Client::builder().http2_prior_knowledge().build().unwrap();
    let plain = Proxy::start(ProxyOpts::new(&redis, app.url()));
    assert!(h2.get(plain.url("/echo")).send().is_err(), "h2c is off by default");

    let proxy = Proxy::start(ProxyOpts { server_toml: "h2c = true", ..ProxyOpts::new(&redis, app.url()) });
    let r = h2.get(proxy.url("/echo")).send().unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["path"], "/echo");
}
