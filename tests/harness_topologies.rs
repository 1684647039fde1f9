//! The harness's Redis topologies themselves, with the example app and no proxy: a real Redis
//! Cluster keeps a session across a SIGKILLed master (its replica is promoted), and the app on a
//! Sentinel-managed master follows the sentinels to the promoted replica. Prints how long each
//! start and failover took (`--nocapture`).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Generous for loopback; a failover here takes a few seconds.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The Redis key Flask-Session keeps a session under: the default prefix and the session id,
/// which is the cookie value before the signature (`<sid>.<signature>`).
fn session_key(cookie: &str) -> String {
    let sid = cookie.rsplit_once('.').map_or(cookie, |(sid, _)| sid);
    format!("sting:session:{sid}")
}

/// The `user_id` in the session the app loads for `cookie`.
fn session_user(app: &FlaskApp, cookie: &str) -> serde_json::Value {
    echo(&format!("{}/echo", app.url()), Some(cookie), &[])["session"]["user_id"].clone()
}

fn get_bytes(c: &mut impl redis::ConnectionLike, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(c).unwrap_or_else(|e| panic!("GET {key}: {e}"))
}

#[test]
fn cluster_session_survives_a_killed_master() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(2000);
    eprintln!("cluster of 6 up in {:?}", started.elapsed());
    assert_eq!(cluster.masters().len(), 3, "three masters");

    // Both Flask-Session versions write through the cluster client: 0.8 would silently fall
    // back to a Redis on localhost:6379 if the app did not hand it the client itself.
    let apps = [FlaskSession::V08, FlaskSession::V06].map(|v| FlaskApp::start_on(&cluster.url_list(), "cluster", v, &[]));
    let cookies: Vec<String> = apps.iter().zip(["alice", "bob"]).map(|(app, user)| login(&app.url(), user, "user")).collect();
    let keys: Vec<String> = cookies.iter().map(|c| session_key(c)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(cluster.keys("sting:session:*"), sorted, "both sessions are on the cluster");
    assert!(cluster.dump_all().iter().any(|(k, v)| *k == keys[0] && v.contains("alice")), "dump_all shows alice's session");

    let key = &keys[0];
    let stored = get_bytes(&mut cluster.conn(), key).expect("the session is readable through a cluster connection");
    let old_master = cluster.master_port_for_key(key);
    cluster.sync_replica_of(key);
    cluster.kill_port(old_master);
    let killed = Instant::now();
    cluster.wait_healthy(FAILOVER_TIMEOUT);
    eprintln!("cluster healthy again {:?} after SIGKILL of master {old_master}", killed.elapsed());

    let new_master = cluster.master_port_for_key(key);
    assert_ne!(new_master, old_master, "a replica took over the slot");
    assert_eq!(cluster.masters().len(), 3, "three live masters again: {:?}", cluster.masters());
    assert!(cluster.masters().contains(&new_master));
    assert_eq!(get_bytes(&mut cluster.conn(), key).as_deref(), Some(&stored[..]), "the session survived the failover");
    assert_eq!(session_user(&apps[0], &cookies[0]), "alice", "the app reads the session from the promoted replica");
    assert_eq!(session_user(&apps[1], &cookies[1]), "bob");
}

#[test]
fn sentinel_app_follows_the_promoted_replica() {
    let started = Instant::now();
    let mut sentinels = RedisSentinels::start();
    eprintln!("master, replica and 3 sentinels up in {:?}", started.elapsed());
    assert_eq!(sentinels.master_name(), "mymaster");
    assert_eq!(sentinels.sentinel_urls().len(), 3);

    let app = FlaskApp::start_on(&sentinels.url(), "sentinel", FlaskSession::V08, &[]);
    let cookie = login(&app.url(), "carol", "user");
    let key = session_key(&cookie);
    assert!(get_bytes(&mut sentinels.master_conn(), &key).is_some(), "the session is on the master the sentinels name");

    sentinels.sync_replica();
    let old_master = sentinels.kill_master();
    let killed = Instant::now();
    let new_master = sentinels.wait_new_master(old_master, FAILOVER_TIMEOUT);
    eprintln!("sentinels promoted {new_master} {:?} after SIGKILL of master {old_master}", killed.elapsed());
    assert_eq!(sentinels.master_port(), new_master);

    assert_eq!(session_user(&app, &cookie), "carol", "the app reads the old session from the new master");
    let again = login(&app.url(), "dave", "user");
    assert!(get_bytes(&mut sentinels.master_conn(), &session_key(&again)).is_some(), "a new login is written to the new master");
}
