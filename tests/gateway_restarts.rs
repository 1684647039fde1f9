//! Restarts under load, counted by the load client: SIGTERM finishes every accepted request and
//! writes every analytics event; an upgrade (`serve --upgrade` + SIGQUIT, pingora's socket
//! hand-over) fails no request at all. Loopback only; the load stops by itself.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Connection refused: the request was never accepted (after the listener closed).
    refused: AtomicU64,
    /// Sent again after a connection-level error before any response (as browsers retry an
    /// idempotent request): a connection the old process accepted but had not read yet when its
    /// shutdown began is closed unanswered by pingora.
    retried: AtomicU64,
    /// Anything else: an error status, or a request that failed again when retried.
    failed: AtomicU64,
}

/// `threads` clients sending page views to `url` until `stop`; `fresh` opens a new connection
/// per request (no keep-alive reuse).
fn load(
    url: String,
    threads: usize,
    fresh: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|_| {
            let (url, stop, tally, errors) = (url.clone(), stop.clone(), tally.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20));
                if fresh {
                    b = b.pool_max_idle_per_host(0);
                }
                let c = b.build().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let mut res = c.get(&url).header("accept", "text/html").send();
                    if matches!(&res, Err(e) if !e.is_connect() && !e.is_timeout()) {
                        tally.retried.fetch_add(1, Ordering::Relaxed);
                        res = c.get(&url).header("accept", "text/html").send();
                    }
                    match res {
                        Ok(r) if r.status() == 200 => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push(format!("status {}", r.status()));
                        }
                        Err(e) if e.is_connect() => {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push(format!("{e:?}"));
                        }
                    }
                }
            })
        })
        .collect()
}

/// SIGTERM during load: requests in flight finish (none is cut), new ones are refused once the
/// listener closes, the process exits 0, and every answered page view is in Redis.
#[test]
fn sigterm_under_load_loses_no_request_and_no_event() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.server_toml = "access_log = \"off\"";
    opts.extra_toml = "[analytics]\nbatch_max_delay_ms = 50";
    let mut proxy = Proxy::start(opts);
    proxy.wait_ready();

    let (stop, tally, errors) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()), Arc::new(std::sync::Mutex::new(Vec::new())));
    // Each request spends 100 ms in the app, so several are in flight at the signal.
    let handles = load(proxy.url("/slow?ms=100"), 6, true, stop.clone(), tally.clone(), errors.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let status = proxy.terminate(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert!(status.success(), "exit status {status}");
    let (ok, failed) = (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "accepted requests were lost: {:?}", errors.lock().unwrap());
    assert!(ok > 20, "too little load: {ok}");
    eprintln!(
        "SIGTERM under load: {ok} answered, {} retried once, {} refused after the listener closed",
        tally.retried.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed)
    );
    let views: Option<i64> =
        redis::cmd("HGET").arg(format!("sting:analytics:daily:{}", chrono::Utc::now().format("%Y-%m-%d"))).arg("page_views").query(&mut redis.conn()).unwrap();
    assert_eq!(views, Some(ok as i64), "every answered page view is recorded");
}

/// A zero-downtime upgrade under steady load: the new process takes the listening sockets from
/// the old one, the old one drains and exits, and the load client sees no failure and no
/// refused connection. The client opens a connection per request: pingora closes *idle*
/// keep-alive connections when shutdown starts, so a client that reuses one at that instant
/// must retry (browsers do; see docs/operations.md). In-flight requests are never cut.
#[test]
fn upgrade_under_load_fails_no_request() {
    let redis = RedisServer::start();
    let app = FlaskApp::start(&redis, FlaskSession::V08);
    let mut opts = ProxyOpts::new(&redis, app.url());
    opts.server_toml = "access_log = \"off\"";
    let mut old = Proxy::start(opts);
    old.wait_ready();

    let (stop, tally, errors) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()), Arc::new(std::sync::Mutex::new(Vec::new())));
    let handles = load(old.url("/echo/upgrade"), 4, true, stop.clone(), tally.clone(), errors.clone());
    std::thread::sleep(Duration::from_millis(1000));
    let before = tally.ok.load(Ordering::Relaxed);

    let mut new = old.spawn_upgrade();
    // The new process waits on the upgrade socket; give it a moment to get there.
    let sock = old.dir.path().join("upgrade.sock");
    wait_until("the new process listens on the upgrade socket", Duration::from_secs(20), || path_exists(&sock));
    old.signal("QUIT");
    let exited = old.wait_exit(Duration::from_secs(30));
    let at_exit = tally.ok.load(Ordering::Relaxed);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let after = tally.ok.load(Ordering::Relaxed);
    let _ = new.kill();
    let _ = new.wait();
    let upgraded_log = std::fs::read_to_string(old.dir.path().join("proxy-upgraded.log")).unwrap_or_default();
    assert!(exited.success(), "old process exit {exited}:\n{}", old.log());
    let (failed, refused) = (tally.failed.load(Ordering::Relaxed), tally.refused.load(Ordering::Relaxed));
    assert_eq!((failed, refused), (0, 0), "requests failed during the upgrade: {:?}\nnew process:\n{upgraded_log}", errors.lock().unwrap());
    assert!(before > 20 && after > at_exit + 20, "load ran before ({before}) and after the old process exited ({at_exit} -> {after})");
    eprintln!("upgrade under load: {after} answered, {} retried once, 0 failed, 0 refused", tally.retried.load(Ordering::Relaxed));
}
