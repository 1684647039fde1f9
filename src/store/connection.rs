//! Making connections for each kind of Redis deployment ([`RedisTarget`]): one server, a Redis
//! Cluster (slot routing, `MOVED`/`ASK`, topology refresh by redis-rs's cluster client), or the
//! master a Sentinel set names (found again after a failover). I/O.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::redis_target::RedisTarget;

/// One connection to whichever deployment the target names; cheap to clone (both kinds are
/// multiplexed handles that reconnect by themselves).
#[derive(Clone)]
pub enum StoreConnection {
    /// One server, or the Sentinel master of the moment.
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for StoreConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            StoreConnection::Single(c) => c.req_packed_command(cmd),
            StoreConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, cmd: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            StoreConnection::Single(c) => c.req_packed_commands(cmd, offset, count),
            StoreConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            StoreConnection::Single(c) => c.get_db(),
            StoreConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Timeouts every connection of a store shares.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
}

/// Connects to one server's `client` with the store's timeouts and reconnect policy.
pub async fn single(client: redis::Client, t: Timeouts) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new().set_connection_timeout(t.connect).set_response_timeout(t.command).set_number_of_retries(2).set_max_delay(500);
    ConnectionManager::new_with_config(client, config).await
}

/// Connects to a Redis Cluster through any of its `seeds`. `resend` lets the client send a
/// request again after a connection error (it also follows `MOVED`/`ASK` and refreshes its
/// slot map either way); without it the caller sees the error and decides: a transaction whose
/// reply was lost may have been applied, and only the caller can check (the analytics writer's
/// batch numbers), so exactly-once writers must not let the client resend.
pub async fn cluster(seeds: &[String], t: Timeouts, resend: bool) -> RedisResult<ClusterConnection> {
    // Few, short retries: the caller's own deadline bounds each call, and the circuit breaker
    // fails calls fast while a master is down and its replica not yet promoted.
    ClusterClientBuilder::new(seeds.iter().map(String::as_str).collect::<Vec<_>>())
        .connection_timeout(t.connect)
        .response_timeout(t.command)
        .retries(if resend { 3 } else { 0 })
        .min_retry_wait(20)
        .max_retry_wait(200)
        .build()?
        .get_async_connection()
        .await
}

/// A client for the master the sentinels of `target` name now. Asks the sentinels in turn.
pub async fn sentinel_master(target: &RedisTarget, t: Timeouts) -> RedisResult<redis::Client> {
    let RedisTarget::Sentinel { sentinels, master, db, username, password } = target else {
        return Err((redis::ErrorKind::InvalidClientConfig, "not a Sentinel target").into());
    };
    let info = SentinelNodeConnectionInfo {
        tls_mode: None,
        redis_connection_info: Some(redis::RedisConnectionInfo { db: *db, username: username.clone(), password: password.clone(), ..Default::default() }),
    };
    let mut client = SentinelClient::build(sentinels.clone(), master.clone(), Some(info), SentinelServerType::Master)?;
    match tokio::time::timeout(t.connect * 2, client.async_get_client()).await {
        Ok(r) => r,
        Err(_) => Err((redis::ErrorKind::IoError, "no sentinel named the master in time").into()),
    }
}

/// `host:port` of a client's server.
pub fn address_of(client: &redis::Client) -> String {
    client.get_connection_info().addr.to_string()
}

/// A master of a cluster: its address and one slot it serves (commands meant for that node are
/// routed by the slot, which survives the node being known by a hostname).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterMaster {
    pub host: String,
    pub port: u16,
    pub slot: u16,
}

/// The masters a cluster node lists in `CLUSTER NODES` (reachable, serving slots).
pub fn parse_cluster_masters(nodes: &str) -> Vec<ClusterMaster> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|x| matches!(*x, "fail" | "fail?" | "noaddr" | "handshake")) || f.len() < 9 {
            continue;
        }
        // `ip:port@cport[,hostname]`, then slots `a-b`, `n` or `[n->-id]` (migrating).
        let addr = f[1].split(['@', ',']).next().unwrap_or_default();
        let slot = f[8..].iter().find_map(|r| r.split('-').next().and_then(|n| n.parse::<u16>().ok()));
        if let (Some((host, port)), Some(slot)) = (addr.rsplit_once(':'), slot) {
            if let Ok(port) = port.parse() {
                if !host.is_empty() {
                    out.push(ClusterMaster { host: host.to_owned(), port, slot });
                }
            }
        }
    }
    out.sort();
    out
}

/// A client for `host:port` with the credentials of `seed` (cluster nodes share them).
pub fn node_client(seed: &str, host: &str, port: u16) -> RedisResult<redis::Client> {
    let mut info = seed.into_connection_info()?;
    info.addr = redis::ConnectionAddr::Tcp(host.to_owned(), port);
    redis::Client::open(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lists_live_masters_only() {
        let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@40005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001,host-a myself,master - 0 0 1 connected 0-5460
a1 127.0.0.1:30009@40009 master,fail - 0 0 9 disconnected 0-10
b2 127.0.0.1:30010@40010 master - 0 0 10 connected
";
        let m = |port, slot| ClusterMaster { host: "127.0.0.1".into(), port, slot };
        assert_eq!(parse_cluster_masters(nodes), [m(30001, 0), m(30002, 5461), m(30003, 10923)]);
    }

    #[test]
    fn node_clients_keep_the_seeds_credentials() {
        let c = node_client("redis://:pw@10.0.0.1:7000", "10.0.0.2", 7001).unwrap();
        let info = c.get_connection_info();
        assert_eq!(info.addr.to_string(), "10.0.0.2:7001");
        assert_eq!(info.redis.password.as_deref(), Some("pw"));
    }
}
