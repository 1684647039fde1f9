//! Scale out: a real local Redis Cluster (3 masters + 3 replicas), the real Flask app on it
//! (redis-py's `RedisCluster`), and two proxy instances. The exact-count scenario holds as on
//! one Redis; a master killed with SIGKILL under load is replaced by its replica and the
//! proxies recover by themselves. The failover test prints its figures (run it with
//! `--nocapture` to read them); docs/operations.md quotes them.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use redis::Commands;

const TOKEN: &str = "integration-analytics-token";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";

/// A proxy on the cluster, in front of `app`, with the analytics API token.
fn proxy_on(cluster: &RedisCluster, app: &FlaskApp) -> Proxy {
    let mut opts = ProxyOpts::on(cluster.url_list(), app.url());
    // No sweep during a test: sessions end by keyspace notifications only.
    opts.extra_toml = "[analytics]\nbatch_max_delay_ms = 5\nsweep_interval_seconds = 3600";
    opts.env = vec![("REDIS_MODE", "cluster".into()), ("STING_ANALYTICS_TOKEN", TOKEN.into())];
    let p = Proxy::start(opts);
    p.wait_ready();
    p
}

fn api(proxy: &Proxy, path: &str) -> serde_json::Value {
    client().get(proxy.url(path)).header("authorization", format!("Bearer {TOKEN}")).send().unwrap().json().unwrap()
}

fn page_views_recorded(cluster: &RedisCluster) -> i64 {
    cluster.conn().hget::<_, _, Option<i64>>(format!("{{sting}}:analytics:daily:{}", today()), "page_views").unwrap().unwrap_or(0)
}

/// The exact-count scenario on the cluster: two instances, 16 clients × 250 page views
/// on one session, devices, a second session's lifecycle, and the API's and CLI's numbers.
#[test]
fn counts_are_exact_on_a_cluster_with_two_instances() {
    // A node timeout long enough that a loaded machine does not fail a node over by mistake.
    let cluster = RedisCluster::start(5_000);
    let app = FlaskApp::start_on(&cluster.url_list(), "cluster", FlaskSession::V08, &[]);
    let (a, b) = (proxy_on(&cluster, &app), proxy_on(&cluster, &app));

    let cookie = login(&a.url(""), "eve", "user");
    let sid = sid_of(&cookie);
    browse_concurrently(&[a.url("/"), b.url("/")], &cookie, 16, 250, |t| if t % 4 == 0 { IPHONE } else { FIREFOX });
    // A second session, through the other instance, that logs out: one start, one end.
    let other = login(&b.url(""), "mallory", "user");
    let r = client().post(b.url("/logout")).header("cookie", format!("session={other}")).send().unwrap();
    assert!(r.status().is_success() || r.status().is_redirection(), "{}", r.status());

    let record_key = format!("{{sting}}:analytics:session:{sid}");
    wait_until("4000 page views on the session", Duration::from_secs(20), || {
        cluster.conn().hget::<_, _, Option<i64>>(&record_key, "page_views").unwrap() == Some(4000)
    });
    // The end may be written first (the app's `del` notification), the logout request's
    // event (which carries mallory's user) a batch later: wait for both.
    wait_until("the logout counted", Duration::from_secs(20), || {
        let day: HashMap<String, i64> = cluster.conn().hgetall(format!("{{sting}}:analytics:daily:{}", today())).unwrap();
        day.get("sessions_ended") == Some(&1) && day.get("logins") == Some(&2)
    });
    let day: HashMap<String, i64> = cluster.conn().hgetall(format!("{{sting}}:analytics:daily:{}", today())).unwrap();
    assert_eq!(day["page_views"], 4000);
    assert_eq!(day["sessions_started"], 2);
    assert_eq!(day["logins"], 2, "the logout request carried mallory's user");
    let hourly: i64 = cluster
        .keys("{sting}:analytics:hourly:????-??-??T??")
        .iter()
        .map(|k| cluster.conn().hget::<_, _, Option<i64>>(k, "page_views").unwrap().unwrap_or(0))
        .sum();
    assert_eq!(hourly, 4000);
    let rec: HashMap<String, String> = cluster.conn().hgetall(&record_key).unwrap();
    assert_eq!(rec["hits"], "4001", "4000 page views + the login POST");
    assert_eq!(rec["user_id"], "eve");

    // Every owned key is in the `{sting}` slot; the app's sessions spread over the masters.
    let owned = cluster.keys("*sting*");
    let slots: std::collections::BTreeSet<u16> = owned
        .iter()
        .filter(|k| !k.starts_with("sting:session:") && !k.starts_with("sting:kratos:"))
        .map(|k| redis::cmd("CLUSTER").arg("KEYSLOT").arg(k).query(&mut cluster.conn()).unwrap())
        .collect();
    assert_eq!(slots.len(), 1, "owned keys in one slot: {owned:?}");
    assert!(owned.iter().all(|k| k.starts_with("{sting}:") || k.starts_with("sting:session:")), "{owned:?}");

    // Expiry of an app key on whichever master holds it ends its session (the listener
    // subscribes on every master).
    let trent = login(&b.url(""), "trent", "user");
    let r = client().get(b.url("/")).header("cookie", format!("session={trent}")).header("accept", "text/html").send().unwrap();
    assert_eq!(r.status(), 200);
    let trent_record = format!("{{sting}}:analytics:session:{}", sid_of(&trent));
    wait_until("trent's record", Duration::from_secs(20), || cluster.conn().hget::<_, _, Option<String>>(&trent_record, "user_id").unwrap().is_some());
    let _: () = cluster.conn().pexpire(format!("sting:session:{}", sid_of(&trent)), 1).unwrap();
    wait_until("trent's session ended as expired", Duration::from_secs(20), || {
        cluster.conn().hget::<_, _, Option<String>>(&trent_record, "end_reason").unwrap().as_deref() == Some("expired")
    });

    // The API and the CLI (which scans every master) agree with Redis.
    let stats = api(&a, "/api/analytics/sessions/stats");
    assert_eq!(stats["page_views_today"], 4001, "eve's 4000 and trent's one: {stats}");
    assert_eq!(stats["active_sessions"], 1, "eve's session is active, mallory's and trent's ended: {stats}");
    assert_eq!(stats["sessions_ended_today"], 2, "{stats}");
    let devices = api(&b, "/api/analytics/devices");
    assert!(devices["device_types"].as_array().unwrap().iter().any(|d| d["name"] == "mobile" && d["count"] == 1000), "{devices}");
    assert!(devices["device_types"].as_array().unwrap().iter().any(|d| d["name"] == "desktop" && d["count"] == 3000), "{devices}");
    let (code, out, err) = a.cli(&["sessions", "active", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&sid), "{out}");
    let (code, out, err) = b.cli(&["validate", "--json"]);
    assert_eq!(code, 0, "validate found problems on the cluster: {out} {err}");
    let (code, out, err) = a.cli(&["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4001"), "{out}");
    // A user's export (which scans every master for the keys named by their sessions) and the
    // day's aggregates.
    let (code, out, err) = b.cli(&["export", "--user", "eve"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&sid) && out.contains("4000"), "{out}");
    let (code, out, err) = a.cli(&["export", "--from", &today(), "--to", &today(), "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4001"), "{out}");
}

/// SIGKILL of the master holding the proxies' keys while clients browse public and protected
/// pages through both instances: the replica takes over and the proxies recover on their own.
/// Prints the figures the issue asks for.
#[test]
fn a_killed_master_fails_over_under_load() {
    let mut cluster = RedisCluster::start(1_000);
    let app = FlaskApp::start_on(&cluster.url_list(), "cluster", FlaskSession::V08, &[]);
    let (a, b) = (proxy_on(&cluster, &app), proxy_on(&cluster, &app));
    let cookies: Vec<String> = (0..4).map(|i| login(&a.url(""), &format!("user{i}"), "user")).collect();
    let load = FailoverLoad::start(&[a.url(""), b.url("")], &cookies, "/dashboard", 8);

    std::thread::sleep(Duration::from_secs(2));
    let victim = cluster.master_port_for_key("{sting}");
    let killed_ms = now_ms();
    let killed = Instant::now();
    cluster.kill_port(victim);
    cluster.wait_healthy(Duration::from_secs(30));
    let promoted_after = killed.elapsed();
    load.wait_recovered(killed_ms, Duration::from_secs(3), Duration::from_secs(60));
    let f = load.finish(killed_ms);

    // Every answered page view is either recorded or was in flight on the killed master.
    let recorded = settle_count(f.page_views_answered() as i64, || page_views_recorded(&cluster));
    f.check(&format!("cluster failover, replica promoted after {:.1} s", promoted_after.as_secs_f64()), recorded);
    // New sessions work after the failover, through both instances.
    for p in [&a, &b] {
        let c = login(&p.url(""), "after", "user");
        let r = client().get(p.url("/dashboard")).header("cookie", format!("session={c}")).send().unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// A master that holds none of the proxy's own keys goes down: readiness stays (any master
/// answers), and afterwards a user's erase walks every master and removes their Kratos answer
/// wherever its slot put it.
#[test]
fn a_master_without_the_proxys_keys_leaves_it_ready_and_erase_finds_every_slot() {
    let mut cluster = RedisCluster::start(1_000);
    let app = FlaskApp::start_on(&cluster.url_list(), "cluster", FlaskSession::V08, &[]);
    let kratos = KratosStub::start();
    let mut opts = ProxyOpts::on(cluster.url_list(), app.url());
    opts.kratos = Some(kratos.url());
    opts.extra_toml = "[analytics]\nbatch_max_delay_ms = 5\nsweep_interval_seconds = 3600";
    opts.env = vec![("REDIS_MODE", "cluster".into())];
    let p = Proxy::start(opts);
    p.wait_ready();
    for i in 0..8 {
        kratos.answer(&format!("tok-{i}"), StubAnswer::session(&format!("kid-{i}"), None, "aal1"));
        let r = client().get(p.url("/")).header("cookie", format!("ory_kratos_session=tok-{i}")).header("accept", "text/html").send().unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_until("eight cached Kratos answers", Duration::from_secs(15), || cluster.keys("sting:kratos:*").len() == 8);

    let sting_master = cluster.master_port_for_key("{sting}");
    let victim = cluster.masters().into_iter().find(|m| *m != sting_master).unwrap();
    cluster.kill_port(victim);
    let until = Instant::now() + Duration::from_secs(30);
    let mut unready = 0;
    let mut polls = 0;
    loop {
        polls += 1;
        if client().get(p.admin_url("/readyz")).send().map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
            unready += 1;
        }
        if cluster.masters().len() == 3 && cluster.masters().iter().all(|m| *m != victim) {
            break;
        }
        assert!(Instant::now() < until, "no failover within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(unready, 0, "unready {unready} times of {polls} while one master without the proxy's keys was down");
    cluster.wait_healthy(Duration::from_secs(30));

    let (code, out, err) = p.cli(&["erase", "--user", "kid-3", "--json"]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(cluster.keys("sting:kratos:*").len(), 7, "kid-3's cached answer erased, wherever it was: {out}");
}
