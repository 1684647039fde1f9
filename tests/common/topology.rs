//! Real Redis topologies on free ports: a six-node Redis Cluster (three masters with one
//! replica each) and a Sentinel deployment (a master, a replica, three sentinels). Failures are
//! real: a node is SIGKILLed and the cluster or the sentinels promote its replica. Every process
//! is killed when its handle drops; each process logs to a file in the handle's temporary
//! directory, and a start that times out shows the tail of those logs.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{claim_port, free_port, kill};

/// Applies to every connection the harness itself opens to a node, so that a dead or wedged
/// node makes a poll fail (and retry) instead of hanging the test.
const NODE_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a freshly spawned node or sentinel may take to answer PING.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `f` until it returns `Ok`, and returns that value; panics on timeout with `what` and
/// the last error `f` gave (plus `context()`, e.g. the processes' logs).
fn poll<T>(what: &str, timeout: Duration, context: impl Fn() -> String, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}\n{}", context())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A connection to the Redis (or sentinel) on `port`, with [`NODE_IO_TIMEOUT`] on connect,
/// reads and writes.
fn node_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection_with_timeout(NODE_IO_TIMEOUT)?;
    c.set_read_timeout(Some(NODE_IO_TIMEOUT))?;
    c.set_write_timeout(Some(NODE_IO_TIMEOUT))?;
    Ok(c)
}

/// Runs `cmd` on the node on `port` over a fresh connection; any failure as text.
fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T, String> {
    node_connection(port).and_then(|mut c| cmd.query(&mut c)).map_err(|e| format!("127.0.0.1:{port}: {e}"))
}

/// One `field:value` line of an `INFO` or `CLUSTER INFO` reply.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
}

/// A `redis-server` (data node or sentinel) this harness started; logs to `log`.
struct Process {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `redis-server args...` with its output in `dir/<name>.log`, and waits until it
    /// answers PING.
    fn spawn(port: u16, name: &str, dir: &Path, args: &[String]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create a redis log file");
        let err = out.try_clone().expect("clone the log file handle");
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps installs it)");
        let p = Process { port, child: Some(child), log };
        poll(&format!("{name} to answer PING"), SPAWN_TIMEOUT, || p.log_tail(), || query::<String>(port, &redis::cmd("PING")));
        p
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and reaps the process.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// The last lines of this process's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- {} (last lines) ---\n{}", self.log.display(), lines[lines.len().saturating_sub(15)..].join("\n"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The tails of all the logs, for failure messages.
fn logs_of(processes: &[Process]) -> String {
    processes.iter().map(Process::log_tail).collect::<Vec<_>>().join("\n")
}

/// Every key on one Redis node and everything stored under it, as text (the same rendering
/// as [`super::RedisServer::dump_all`]).
fn dump_node(c: &mut redis::Connection) -> redis::RedisResult<Vec<(String, String)>> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c)?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(&k).query(c)?;
        let v: Vec<Vec<u8>> = match t.as_str() {
            "string" => vec![redis::cmd("GET").arg(&k).query(c)?],
            "hash" => redis::cmd("HGETALL").arg(&k).query(c)?,
            "list" => redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(c)?,
            "set" => redis::cmd("SMEMBERS").arg(&k).query(c)?,
            "zset" => redis::cmd("ZRANGE").arg(&k).arg(0).arg(-1).query(c)?,
            _ => vec![],
        };
        let text = v.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>().join("\n");
        out.push((k, text));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Redis Cluster
// ------------------------------------------------------------------------------------------

/// Every node of a cluster also listens on its port + this (the cluster bus).
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// Redis refuses a cluster port whose bus port would not fit in 16 bits.
const MAX_CLUSTER_PORT: u16 = u16::MAX - CLUSTER_BUS_OFFSET;

const CLUSTER_SLOTS: u32 = 16_384;

/// A port for a cluster node: free, as is its bus port (port + 10000), and both recorded as
/// handed out, so neither [`free_port`] nor another cluster in this process gets either later.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port > MAX_CLUSTER_PORT {
            continue;
        }
        let bus = port + CLUSTER_BUS_OFFSET;
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() && claim_port(bus) {
            return port;
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    /// Served slot ranges, inclusive (slots being migrated, `[...]`, are left out).
    slots: Vec<(u32, u32)>,
}

impl NodeLine {
    /// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
    fn parse(line: &str) -> Result<Self, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("unexpected CLUSTER NODES line {line:?}");
        if f.len() < 8 {
            return Err(bad());
        }
        let addr = f[1].split('@').next().ok_or_else(bad)?;
        let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).ok_or_else(bad)?;
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| {
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
            })
            .collect::<Result<_, String>>()?;
        Ok(NodeLine { port, flags: f[2].split(',').map(str::to_owned).collect(), slots })
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// A master that the node answering did not flag as failing (`fail` or `fail?`).
    fn is_healthy_master(&self) -> bool {
        self.has_flag("master") && !self.has_flag("fail") && !self.has_flag("fail?")
    }
}

/// Six `redis-server --cluster-enabled yes` on free ports, made into one cluster of three
/// masters with one replica each by `redis-cli --cluster create`. Keyspace notifications `Egx`
/// (generic and expired events) are on in every node.
pub struct RedisCluster {
    nodes: Vec<Process>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the six nodes with `cluster-node-timeout` = `node_timeout_ms` (how long a master
    /// must be unreachable before its replica takes over) and returns once the cluster is
    /// whole: every node says `cluster_state:ok`, all agree on who serves each of the 16384
    /// slots, three masters serve them, and each master's replica has finished its first sync
    /// (so `WAIT` and failover work).
    pub fn start(node_timeout_ms: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the cluster");
        let nodes: Vec<Process> = (0..6)
            .map(|_| {
                let port = free_cluster_port();
                Process::spawn(port, &format!("node-{port}"), dir.path(), &cluster_node_args(port, dir.path(), node_timeout_ms))
            })
            .collect();
        let cluster = RedisCluster { nodes, dir };
        cluster.create();
        poll("the new cluster to be whole", Duration::from_secs(30), || cluster.logs(), || cluster.check_formed());
        cluster
    }

    /// `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`: assigns the slots
    /// to three masters and a replica to each (which node gets which role is redis-cli's choice;
    /// read it back from `CLUSTER NODES`).
    fn create(&self) {
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// Ok once [`RedisCluster::check_healthy`] holds with all six nodes up and every replica
    /// in sync with its master.
    fn check_formed(&self) -> Result<(), String> {
        self.check_healthy()?;
        for n in &self.nodes {
            let view = self.nodes_view(n.port)?;
            let masters = view.iter().filter(|l| l.is_healthy_master() && !l.slots.is_empty()).count();
            let replicas = view.iter().filter(|l| l.has_flag("slave")).count();
            if (view.len(), masters, replicas) != (6, 3, 3) {
                return Err(format!("{} sees {} nodes, {masters} masters with slots, {replicas} replicas", n.port, view.len()));
            }
            let info: String = query(n.port, redis::cmd("INFO").arg("replication"))?;
            if info_field(&info, "role").as_deref() == Some("slave") && info_field(&info, "master_link_status").as_deref() != Some("up") {
                return Err(format!("replica {} not in sync yet", n.port));
            }
        }
        Ok(())
    }

    /// `redis://127.0.0.1:<port>` of all six nodes, killed ones included (a client given these
    /// seeds must cope with dead ones).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect()
    }

    /// [`RedisCluster::seed_urls`] joined with commas: the app's `REDIS_URL` in cluster mode.
    pub fn url_list(&self) -> String {
        self.seed_urls().join(",")
    }

    /// The ports of the nodes this harness has not killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.alive()).map(|n| n.port).collect()
    }

    /// A cluster connection (slot routing, MOVED handling) seeded with the live nodes.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self.live_ports().iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
        redis::cluster::ClusterClient::builder(seeds)
            .connection_timeout(NODE_IO_TIMEOUT)
            .response_timeout(NODE_IO_TIMEOUT)
            .build()
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("cluster connection: {e}\n{}", self.logs()))
    }

    /// A plain connection to one node (e.g. for `WAIT` on a master).
    pub fn node_conn(&self, port: u16) -> redis::Connection {
        node_connection(port).unwrap_or_else(|e| panic!("connect to cluster node {port}: {e}"))
    }

    /// `CLUSTER NODES` as the node on `port` sees the cluster.
    fn nodes_view(&self, port: u16) -> Result<Vec<NodeLine>, String> {
        let text: String = query(port, redis::cmd("CLUSTER").arg("NODES"))?;
        text.lines().filter(|l| !l.trim().is_empty()).map(NodeLine::parse).collect()
    }

    /// `CLUSTER NODES` from the first live node that answers.
    fn any_view(&self) -> Result<Vec<NodeLine>, String> {
        let mut last = "no live node".to_owned();
        for port in self.live_ports() {
            match self.nodes_view(port) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Ports of the nodes that are masters right now, as a live node sees it: not flagged
    /// failing and not killed by this harness (a killed master is still listed as a master
    /// until the others notice, `cluster-node-timeout` later). Sorted.
    pub fn masters(&self) -> Vec<u16> {
        let live = self.live_ports();
        let view = self.any_view().unwrap_or_else(|e| panic!("CLUSTER NODES: {e}\n{}", self.logs()));
        let mut ports: Vec<u16> = view.iter().filter(|n| n.is_healthy_master() && live.contains(&n.port)).map(|n| n.port).collect();
        ports.sort_unstable();
        ports
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    pub fn master_port_for_key(&self, key: &str) -> u16 {
        let port = *self.live_ports().first().expect("a live cluster node");
        let slot: u32 = query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).unwrap_or_else(|e| panic!("CLUSTER KEYSLOT: {e}"));
        let view = self.any_view().unwrap_or_else(|e| panic!("CLUSTER NODES: {e}\n{}", self.logs()));
        view.iter()
            .find(|n| n.has_flag("master") && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot} (of {key:?}): {view:?}"))
    }

    /// Blocks until the replica of the master serving `key` has acknowledged every write made
    /// to that master so far (`WAIT 1`), so killing the master next loses none of them.
    pub fn sync_replica_of(&self, key: &str) {
        let master = self.master_port_for_key(key);
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut self.node_conn(master)).unwrap_or_else(|e| panic!("WAIT on {master}: {e}"));
        assert!(acked >= 1, "no replica of {master} acknowledged the writes within 10 s\n{}", self.logs());
    }

    /// SIGKILLs the node on `port` (no shutdown, no goodbye to the cluster).
    pub fn kill_port(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap_or_else(|| panic!("{port} is not a node of this cluster"));
        assert!(node.alive(), "cluster node {port} was killed already");
        node.kill();
    }

    /// Waits until the cluster serves everything again (after [`RedisCluster::kill_port`], a
    /// replica is promoted once the others have flagged its master failing).
    pub fn wait_healthy(&self, timeout: Duration) {
        poll("the cluster to be healthy", timeout, || self.logs(), || self.check_healthy());
    }

    /// Ok when every live node says `cluster_state:ok` and sees the same slot map, which covers
    /// all 16384 slots with live, unflagged masters.
    fn check_healthy(&self) -> Result<(), String> {
        let live = self.live_ports();
        let mut agreed: Option<Vec<(u32, u32, u16)>> = None;
        for &port in &live {
            let info: String = query(port, redis::cmd("CLUSTER").arg("INFO"))?;
            if info_field(&info, "cluster_state").as_deref() != Some("ok") {
                return Err(format!("{port}: cluster_state is not ok"));
            }
            let view = self.nodes_view(port)?;
            let mut map: Vec<(u32, u32, u16)> = Vec::new();
            for n in view.iter().filter(|n| !n.slots.is_empty()) {
                if !n.is_healthy_master() || !live.contains(&n.port) {
                    return Err(format!("{port} sees slots {:?} on {} ({})", n.slots, n.port, n.flags.join(",")));
                }
                map.extend(n.slots.iter().map(|&(a, b)| (a, b, n.port)));
            }
            map.sort_unstable();
            let covered: u32 = map.iter().map(|&(a, b, _)| b - a + 1).sum();
            if covered != CLUSTER_SLOTS {
                return Err(format!("{port} sees {covered} of {CLUSTER_SLOTS} slots served"));
            }
            match &agreed {
                Some(m) if *m != map => return Err(format!("nodes disagree on the slot map: {m:?} vs {port}: {map:?}")),
                Some(_) => {}
                None => agreed = Some(map),
            }
        }
        agreed.map(|_| ()).ok_or_else(|| "no live node".to_owned())
    }

    /// Every key on every master, with its content as text (see
    /// [`super::RedisServer::dump_all`]), sorted by key.
    pub fn dump_all(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> =
            self.masters().into_iter().flat_map(|port| dump_node(&mut self.node_conn(port)).unwrap_or_else(|e| panic!("dump {port}: {e}"))).collect();
        all.sort();
        all
    }

    /// The keys matching `pattern` (`KEYS` syntax) on every master, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .masters()
            .into_iter()
            .flat_map(|port| query::<Vec<String>>(port, redis::cmd("KEYS").arg(pattern)).unwrap_or_else(|e| panic!("KEYS: {e}")))
            .collect();
        all.sort();
        all
    }

    /// The tails of all the nodes' logs.
    pub fn logs(&self) -> String {
        logs_of(&self.nodes)
    }

    /// Where the nodes keep their `nodes-<port>.conf` and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The command line of one cluster node: a data node's, in cluster mode.
fn cluster_node_args(port: u16, dir: &Path, node_timeout_ms: u64) -> Vec<String> {
    let conf = dir.join(format!("nodes-{port}.conf"));
    let mut args = data_node_args(port, dir, None);
    args.extend(
        ["--cluster-enabled", "yes", "--cluster-config-file", &conf.display().to_string(), "--cluster-node-timeout", &node_timeout_ms.to_string()]
            .map(str::to_owned),
    );
    args
}

// ------------------------------------------------------------------------------------------
// Redis Sentinel
// ------------------------------------------------------------------------------------------

const MASTER_NAME: &str = "mymaster";

/// A master and its replica (keyspace notifications `Egx` on both) watched by three
/// sentinels with quorum 2, `down-after-milliseconds` 1000 and `failover-timeout` 5000.
pub struct RedisSentinels {
    /// The two data nodes; which one is the master changes with failovers.
    data: Vec<Process>,
    sentinels: Vec<Process>,
    dir: tempfile::TempDir,
}

impl RedisSentinels {
    /// Starts the master, then the replica and waits for its first sync, then the sentinels,
    /// and returns once every sentinel reports the master, knows the replica and has found the
    /// two other sentinels (so a failover can be agreed on at once).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the sentinel setup");
        let master_port = free_port();
        let master = Process::spawn(master_port, "master", dir.path(), &data_node_args(master_port, dir.path(), None));
        let replica_port = free_port();
        let replica = Process::spawn(replica_port, "replica", dir.path(), &data_node_args(replica_port, dir.path(), Some(master_port)));
        let mut setup = RedisSentinels { data: vec![master, replica], sentinels: Vec::new(), dir };
        // A sentinel learns replicas from the master's INFO, asked every 10 s after the first
        // time: the replica must be connected before then.
        poll("the replica's first sync", Duration::from_secs(20), || setup.logs(), || replica_in_sync(replica_port));
        for _ in 0..3 {
            let port = free_port();
            let conf = write_sentinel_conf(setup.dir.path(), port, master_port);
            let args = vec![conf.display().to_string(), "--sentinel".to_owned()];
            setup.sentinels.push(Process::spawn(port, &format!("sentinel-{port}"), setup.dir.path(), &args));
        }
        poll(
            "the sentinels to see the master, the replica and each other",
            Duration::from_secs(30),
            || setup.logs(),
            || setup.sentinels.iter().try_for_each(|s| sentinel_ready(s.port, master_port, replica_port)),
        );
        setup
    }

    /// `redis://127.0.0.1:<port>` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| format!("redis://127.0.0.1:{}", s.port)).collect()
    }

    /// `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/mymaster`: the sentinels,
    /// then the master name as the path (the app's `REDIS_URL` in sentinel mode).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// The master's port as the first sentinel that answers reports it.
    pub fn master_port(&self) -> u16 {
        let mut last = String::from("no sentinel");
        for s in &self.sentinels {
            match reported_master(s.port) {
                Ok(port) => return port,
                Err(e) => last = e,
            }
        }
        panic!("no sentinel reports the master: {last}\n{}", self.logs())
    }

    /// A plain connection to the current master.
    pub fn master_conn(&self) -> redis::Connection {
        let port = self.master_port();
        node_connection(port).unwrap_or_else(|e| panic!("connect to the master {port}: {e}"))
    }

    /// Blocks until the replica has acknowledged every write made to the master so far
    /// (`WAIT 1`), so killing the master next loses none of them.
    pub fn sync_replica(&self) {
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut self.master_conn()).unwrap_or_else(|e| panic!("WAIT on the master: {e}"));
        assert!(acked >= 1, "the replica did not acknowledge the writes within 10 s\n{}", self.logs());
    }

    /// SIGKILLs the current master; returns its port (for [`RedisSentinels::wait_new_master`]).
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        let node = self.data.iter_mut().find(|n| n.port == port).unwrap_or_else(|| panic!("the master {port} is not one of ours"));
        assert!(node.alive(), "the master {port} was killed already");
        node.kill();
        port
    }

    /// Waits until every sentinel reports one master other than `old_port`, and that node
    /// says it is a master; returns its port.
    pub fn wait_new_master(&self, old_port: u16, timeout: Duration) -> u16 {
        poll(
            "the sentinels to promote a new master",
            timeout,
            || self.logs(),
            || {
                let reported = self.sentinels.iter().map(|s| reported_master(s.port)).collect::<Result<Vec<u16>, String>>()?;
                let port = reported[0];
                if port == old_port || reported.iter().any(|&p| p != port) {
                    return Err(format!("sentinels report {reported:?}"));
                }
                let role: Vec<redis::Value> = query(port, &redis::cmd("ROLE"))?;
                match role.first() {
                    Some(redis::Value::BulkString(r)) if r == b"master" => Ok(port),
                    other => Err(format!("{port} has role {other:?}")),
                }
            },
        )
    }

    /// `SENTINEL FAILOVER mymaster` on the first sentinel: promotes the replica without the
    /// master failing (then see [`RedisSentinels::wait_new_master`]).
    pub fn failover(&self) {
        let port = self.sentinels[0].port;
        let reply: String =
            query(port, redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME)).unwrap_or_else(|e| panic!("SENTINEL FAILOVER: {e}\n{}", self.logs()));
        assert_eq!(reply, "OK", "SENTINEL FAILOVER");
    }

    /// The tails of all the logs (data nodes and sentinels).
    pub fn logs(&self) -> String {
        format!("{}\n{}", logs_of(&self.data), logs_of(&self.sentinels))
    }

    /// Where the sentinels keep their (rewritten) configuration and everything logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The command line of a data node; `replica_of` makes it a replica of that port.
fn data_node_args(port: u16, dir: &Path, replica_of: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
        "--dbfilename",
        &format!("dump-{port}.rdb"),
        "--notify-keyspace-events",
        "Egx",
        // A master's first sync to a replica otherwise waits 5 s for more replicas to come.
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(master) = replica_of {
        args.extend(["--replicaof".to_owned(), "127.0.0.1".to_owned(), master.to_string()]);
    }
    args
}

/// Writes `sentinel-<port>.conf` (a file of its own: a sentinel rewrites its configuration with
/// what it learns) and returns its path.
fn write_sentinel_conf(dir: &Path, port: u16, master_port: u16) -> PathBuf {
    let path = dir.join(format!("sentinel-{port}.conf"));
    let conf = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         dir {dir}\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 5000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        dir = dir.display(),
    );
    std::fs::write(&path, conf).expect("write a sentinel configuration");
    path
}

/// Ok once the replica on `port` has a live link to its master.
fn replica_in_sync(port: u16) -> Result<(), String> {
    let info: String = query(port, redis::cmd("INFO").arg("replication"))?;
    match info_field(&info, "master_link_status").as_deref() {
        Some("up") => Ok(()),
        other => Err(format!("replica {port}: master_link_status {other:?}")),
    }
}

/// `SENTINEL get-master-addr-by-name mymaster` on the sentinel on `port`.
fn reported_master(port: u16) -> Result<u16, String> {
    let addr: Option<(String, String)> = query(port, redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(MASTER_NAME))?;
    let (_, p) = addr.ok_or_else(|| format!("sentinel {port} knows no {MASTER_NAME}"))?;
    p.parse().map_err(|_| format!("sentinel {port} reports master port {p:?}"))
}

/// Ok once the sentinel on `port` reports `master`, lists `replica` among the replicas and
/// knows two other sentinels.
fn sentinel_ready(port: u16, master: u16, replica: u16) -> Result<(), String> {
    let reported = reported_master(port)?;
    if reported != master {
        return Err(format!("sentinel {port} reports master {reported}"));
    }
    let replicas: Vec<HashMap<String, String>> = query(port, redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME))?;
    if !replicas.iter().any(|r| r.get("port").map(String::as_str) == Some(&replica.to_string())) {
        return Err(format!("sentinel {port} does not know the replica {replica} yet"));
    }
    let others: Vec<HashMap<String, String>> = query(port, redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME))?;
    if others.len() != 2 {
        return Err(format!("sentinel {port} knows {} other sentinels", others.len()));
    }
    Ok(())
}
