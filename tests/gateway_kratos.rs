//! The Kratos fallback against a stub that serves Kratos's real whoami bodies
//! (tests/fixtures/kratos, from Kratos v26 source). Kratos itself cannot run here.

mod common;

use std::time::Duration;

use common::*;

fn session(id: &str, role: Option<&str>) -> StubAnswer {
    StubAnswer::session(id, role, "aal1")
}

/// Each Kratos credential form is accepted and produces Kratos identity headers.
#[test]
fn kratos_credentials_identify_the_caller() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("tok-1", session("id-token", None));
    kratos.answer("cookie-1", session("id-cookie", Some("admin")));
    kratos.answer("bearer-1", session("id-bearer", None));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "bearer_tokens = true\n");
    let c = client();
    let via = |req: reqwest::blocking::RequestBuilder| -> serde_json::Value { req.send().unwrap().json().unwrap() };

    let t = via(c.get(proxy.url("/echo")).header("x-session-token", "tok-1"));
    assert_eq!(seen(&t, "x-user-id"), Some("id-token"));
    assert_eq!(seen(&t, "x-auth-source"), Some("kratos"));
    assert_eq!(seen(&t, "x-auth-aal"), Some("aal1"));
    assert_eq!(seen(&t, "x-session-id"), Some("7458af86-c1d8-401c-978a-8da89133f98b"));
    assert_eq!(seen(&t, "x-user-email"), Some("id-token@example.com"));

    let k = via(c.get(proxy.url("/echo")).header("cookie", "ory_kratos_session=cookie-1; other=1"));
    assert_eq!(seen(&k, "x-user-id"), Some("id-cookie"));
    assert_eq!(seen(&k, "x-user-role"), Some("admin"));

    let b = via(c.get(proxy.url("/echo")).header("authorization", "Bearer bearer-1"));
    assert_eq!(seen(&b, "x-user-id"), Some("id-bearer"));
}

/// N concurrent requests with one new credential cause exactly one whoami call, and the answer
/// is then served from cache.
#[test]
fn concurrent_misses_collapse_into_one_whoami_call() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("shared-token", session("id-shared", None));
    // Long enough that all 24 requests arrive while the first call is still in flight.
    kratos.set_delay(Duration::from_millis(1500));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "timeout_ms = 5000\n");
    let url = proxy.url("/echo");
    let threads: Vec<_> = (0..24)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || -> serde_json::Value { client().get(&url).header("x-session-token", "shared-token").send().unwrap().json().unwrap() })
        })
        .collect();
    for t in threads {
        assert_eq!(seen(&t.join().unwrap(), "x-user-id"), Some("id-shared"));
    }
    assert_eq!(kratos.calls(), 1, "24 concurrent misses, one whoami");
    let again = echo(&url, None, &[("x-session-token", "shared-token")]);
    assert_eq!(seen(&again, "x-user-id"), Some("id-shared"));
    assert_eq!(kratos.calls(), 1, "served from cache");
}

/// The whoami answer is shared through Redis: a second proxy instance does not ask Kratos again.
#[test]
fn whoami_answer_is_cached_in_redis_for_other_instances() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("tok-shared", session("id-x", None));
    let a = proxy_with_kratos(&redis, &app, &kratos, "");
    let b = proxy_with_kratos(&redis, &app, &kratos, "");
    assert_eq!(seen(&echo(&a.url("/echo"), None, &[("x-session-token", "tok-shared")]), "x-user-id"), Some("id-x"));
    let keys: Vec<String> = redis::cmd("KEYS").arg("sting:kratos:*").query(&mut redis.conn()).unwrap();
    assert_eq!(keys.len(), 1, "one cached answer, keyed by a hash");
    assert!(!keys[0].contains("tok-shared"), "the credential itself is never stored");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query(&mut redis.conn()).unwrap();
    assert!(ttl > 0 && ttl <= 300, "bounded by cache_ttl_seconds, got {ttl}");
    // Wait for the async SET to land, then ask the other instance.
    wait_until("cached answer in redis", Duration::from_secs(5), || redis::cmd("EXISTS").arg(&keys[0]).query::<i64>(&mut redis.conn()).unwrap() == 1);
    assert_eq!(seen(&echo(&b.url("/echo"), None, &[("x-session-token", "tok-shared")]), "x-user-id"), Some("id-x"));
    assert_eq!(kratos.calls(), 1);
}

/// "No session" (401) answers are cached briefly, so repeated bad credentials do not hammer Kratos.
#[test]
fn unauthenticated_answers_are_cached_briefly() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "");
    for _ in 0..5 {
        assert_eq!(seen(&echo(&proxy.url("/echo"), None, &[("x-session-token", "nobody")]), "x-user-id"), None);
    }
    assert_eq!(kratos.calls(), 1);
}

/// A session that needs a second factor is not "anonymous": browsers go to Kratos's
/// `redirect_browser_to`, APIs get 403 `session_aal2_required`.
#[test]
fn aal2_required_redirects_to_the_second_factor() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("needs-2fa", StubAnswer::Aal2Required);
    let proxy = proxy_with_kratos(&redis, &app, &kratos, DEFAULT_RULES);
    let c = client();
    let browser = c.get(proxy.url("/dashboard")).header("accept", "text/html").header("x-session-token", "needs-2fa").send().unwrap();
    assert_eq!(browser.status(), 302);
    assert_eq!(browser.headers()["location"], "https://kratos.example.com/self-service/login/browser?aal=aal2");
    let api = c.get(proxy.url("/api/data")).header("x-session-token", "needs-2fa").send().unwrap();
    assert_eq!(api.status(), 403);
    let body: serde_json::Value = api.json().unwrap();
    assert_eq!(body["error"], "session_aal2_required");
}

/// When Kratos fails repeatedly the circuit opens: later misses are anonymous without a call,
/// while public routes keep serving.
#[test]
fn failing_kratos_opens_the_circuit() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    for i in 0..20 {
        kratos.answer(&format!("t{i}"), StubAnswer::Status(500));
    }
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "circuit_failure_threshold = 3\ncircuit_open_seconds = 60\n");
    for i in 0..20 {
        let got = echo(&proxy.url("/echo"), None, &[("x-session-token", &format!("t{i}"))]);
        assert_eq!(seen(&got, "x-user-id"), None);
    }
    assert_eq!(kratos.calls(), 3, "calls stop once the circuit is open");
}

/// A slow Kratos is cut off by the timeout; the request still completes, anonymously.
#[test]
fn slow_kratos_times_out_to_anonymous() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("slow", session("id-slow", None));
    kratos.set_delay(Duration::from_secs(5));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "timeout_ms = 200\n");
    let start = std::time::Instant::now();
    let got = echo(&proxy.url("/echo"), None, &[("x-session-token", "slow")]);
    assert_eq!(seen(&got, "x-user-id"), None);
    assert!(start.elapsed() < Duration::from_secs(4), "the 200 ms timeout did not cut the 5 s call: {:?}", start.elapsed());
}

/// A flood of unknown tokens from one client costs Kratos only that client's lookup allowance;
/// another client's new credential is still looked up, and the flood opens no circuit.
#[test]
fn unknown_tokens_from_one_client_are_limited_per_client() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    kratos.answer("good", session("id-good", None));
    let p = Proxy::start(ProxyOpts {
        kratos: Some(kratos.url()),
        extra_toml: "lookups_per_client_per_minute = 5\ncircuit_failure_threshold = 3\n",
        // The test's clients are told apart by X-Forwarded-For from the trusted loopback.
        server_toml: "trusted_proxies = [\"127.0.0.1/32\"]",
        ..ProxyOpts::new(&redis, app.url())
    });
    p.wait_ready();
    let from = |client: &str, token: &str| echo(&p.url("/echo"), None, &[("x-forwarded-for", client), ("x-session-token", token)]);

    for i in 0..20 {
        assert_eq!(seen(&from("198.51.100.7", &format!("random-{i}")), "x-user-id"), None);
    }
    assert_eq!(kratos.calls(), 5, "one minute's allowance for the flooding client, then no calls");
    assert_eq!(seen(&from("198.51.100.7", "good"), "x-user-id"), None, "the flooding client's next new credential waits too");
    assert_eq!(kratos.calls(), 5);
    assert_eq!(seen(&from("198.51.100.8", "good"), "x-user-id"), Some("id-good"), "another client is looked up");
    assert_eq!(kratos.calls(), 6);
    assert_eq!(seen(&from("198.51.100.7", "good"), "x-user-id"), Some("id-good"), "a cached credential is never limited");
    assert_eq!(kratos.calls(), 6);

    let metrics = client().get(p.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("sting_auth_outcomes_total{outcome=\"kratos_rate_limited\"} 16\n"), "{metrics}");
    assert!(metrics.contains("sting_kratos_calls_total{result=\"client_rate_limited\"} 16\n"), "{metrics}");
    assert!(metrics.contains("sting_kratos_circuit_state 0\n"), "{metrics}");
}

/// Kratos's 429 is not an outage: the circuit stays closed, so the next credential is asked.
#[test]
fn kratos_throttling_does_not_open_the_circuit() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let kratos = KratosStub::start();
    for i in 0..10 {
        kratos.answer(&format!("t{i}"), StubAnswer::Status(429));
    }
    kratos.answer("good", session("id-good", None));
    let proxy = proxy_with_kratos(&redis, &app, &kratos, "circuit_failure_threshold = 3\ncircuit_open_seconds = 60\n");
    for i in 0..10 {
        let got = echo(&proxy.url("/echo"), None, &[("x-session-token", &format!("t{i}"))]);
        assert_eq!(seen(&got, "x-user-id"), None, "a throttled lookup is anonymous");
    }
    assert_eq!(kratos.calls(), 10, "throttled answers are not cached and do not open the circuit");
    assert_eq!(seen(&echo(&proxy.url("/echo"), None, &[("x-session-token", "good")]), "x-user-id"), Some("id-good"));
    assert_eq!(kratos.calls(), 11);
    let metrics = client().get(proxy.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("sting_kratos_calls_total{result=\"throttled\"} 10\n"), "{metrics}");
}
