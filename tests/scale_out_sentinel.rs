//! Scale out with Sentinel: one master, one replica, three sentinels (all local, real
//! `redis-server`s), the Flask app through redis-py's `Sentinel`, and two proxy instances. A
//! master killed with SIGKILL under load is replaced by its replica; the proxies find the new
//! master through the sentinels by themselves. Prints its figures (`--nocapture`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use redis::Commands;

fn proxy_on(s: &RedisSentinels, app: &FlaskApp) -> Proxy {
    let mut opts = ProxyOpts::on(s.url(), app.url());
    opts.extra_toml = "[analytics]\nbatch_max_delay_ms = 5";
    opts.env = vec![("REDIS_MODE", "sentinel".into())];
    let p = Proxy::start(opts);
    p.wait_ready();
    p
}

fn day(s: &RedisSentinels) -> HashMap<String, i64> {
    s.master_conn().hgetall(format!("sting:analytics:daily:{}", today())).unwrap_or_default()
}

/// How the master goes away.
#[derive(Debug, Clone, Copy)]
enum Failover {
    /// SIGKILL: the master is gone; calls to it are refused.
    Kill,
    /// `SENTINEL FAILOVER`: the old master stays up as a replica; writes to it answer `READONLY`.
    Forced,
}

/// Two proxies on the Sentinel set under load while the master changes `how`; checks and prints
/// the figures.
fn failover_under_load(how: Failover) {
    let mut s = RedisSentinels::start();
    let app = FlaskApp::start_on(&s.url(), "sentinel", FlaskSession::V08, &[]);
    let (a, b) = (proxy_on(&s, &app), proxy_on(&s, &app));
    let cookies: Vec<String> = (0..4).map(|i| login(&a.url(""), &format!("user{i}"), "user")).collect();
    let counted = Instant::now();
    while day(&s).get("sessions_started") != Some(&4) {
        assert!(counted.elapsed() < Duration::from_secs(15), "sessions not counted: {:?}\n{}", day(&s), a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let load = FailoverLoad::start(&[a.url(""), b.url("")], &cookies, "/dashboard", 8);

    std::thread::sleep(Duration::from_secs(2));
    let started_ms = now_ms();
    let started = Instant::now();
    let old = s.master_port();
    match how {
        Failover::Kill => {
            s.kill_master();
        }
        Failover::Forced => {
            s.sync_replica();
            s.failover();
        }
    }
    let new = s.wait_new_master(old, Duration::from_secs(30));
    let promoted_after = started.elapsed();
    load.wait_recovered(started_ms, Duration::from_secs(3), Duration::from_secs(60));
    let f = load.finish(started_ms);

    let recorded = settle_count(f.page_views_answered() as i64, || day(&s).get("page_views").copied().unwrap_or(0));
    let resent = a.metric("sting_analytics_batches_resent_total") + b.metric("sting_analytics_batches_resent_total");
    println!("batches the failover lost and the writers sent again: {resent}");
    f.check(&format!("sentinel {how:?} failover, master {old} -> {new} after {:.1} s", promoted_after.as_secs_f64()), recorded);
    assert_eq!(day(&s)["sessions_started"], 4, "the day's counters came over with the replica");
    for p in [&a, &b] {
        let c = login(&p.url(""), "after", "user");
        let r = client().get(p.url("/dashboard")).header("cookie", format!("session={c}")).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    // Each instance's writer has written since, so each has followed the new master.
    for p in [&a, &b] {
        wait_until("the instance follows the new master", Duration::from_secs(10), || p.log().contains("connection moved"));
    }
}

#[test]
fn a_killed_sentinel_master_fails_over_under_load() {
    failover_under_load(Failover::Kill);
}

#[test]
fn a_forced_sentinel_failover_is_followed_under_load() {
    failover_under_load(Failover::Forced);
}
