//! Test harness: real processes on free ports. A `redis-server`, the example Flask app (real
//! Flask-Session from PyPI, in the venvs `scripts/setup-python` makes), a Kratos stub serving
//! Kratos's real response shapes (Kratos itself cannot run here), and the `sting-proxy` binary.
//! Every process is killed when its handle drops.

#![allow(dead_code)]

mod failover_load;
mod topology;
// Only the tests that run a cluster or sentinels use these.
#[allow(unused_imports)]
pub use failover_load::*;
#[allow(unused_imports)]
pub use topology::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "integration-secret";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every port handed out in this process: by [`free_port`], and the cluster bus ports
/// (port + 10000) that [`RedisCluster`] nodes also listen on.
static GIVEN_PORTS: Mutex<std::collections::BTreeSet<u16>> = Mutex::new(std::collections::BTreeSet::new());

/// Records `port` as handed out; false if it already was.
fn claim_port(port: u16) -> bool {
    GIVEN_PORTS.lock().unwrap_or_else(|p| p.into_inner()).insert(port)
}

/// A port that was free a moment ago, and never handed out before in this process (two
/// calls in a row can get the same port from the kernel: a proxy's listener and admin port
/// once did, and it refused to start).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if claim_port(port) {
            return port;
        }
    }
}

/// Polls until `f` is true or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200)).is_ok()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ------------------------------------------------------------------------------------------
// Redis
// ------------------------------------------------------------------------------------------

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Every key and everything stored under it (strings, hash fields and values, list, set
    /// and sorted-set members), as text: what a scan for leaked data must search.
    pub fn dump_all(&self) -> Vec<(String, String)> {
        let mut c = self.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.into_iter()
            .map(|k| {
                let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
                let v: Vec<Vec<u8>> = match t.as_str() {
                    "string" => vec![redis::cmd("GET").arg(&k).query(&mut c).unwrap()],
                    "hash" => redis::cmd("HGETALL").arg(&k).query(&mut c).unwrap(),
                    "list" => redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(&mut c).unwrap(),
                    "set" => redis::cmd("SMEMBERS").arg(&k).query(&mut c).unwrap(),
                    "zset" => redis::cmd("ZRANGE").arg(&k).arg(0).arg(-1).query(&mut c).unwrap(),
                    _ => vec![],
                };
                let text = v.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>().join("\n");
                (k, text)
            })
            .collect()
    }

    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut s = RedisServer { port, child: None, _dir: dir };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/ci installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_until("redis-server", Duration::from_secs(10), || {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// Stops the server (to test Redis outages); `restart` brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------------------------------
// The example Flask app
// ------------------------------------------------------------------------------------------

/// Which Flask-Session the app runs with, hence which format it stores.
#[derive(Clone, Copy, Debug)]
pub enum FlaskSession {
    /// 0.8.0: msgpack.
    V08,
    /// 0.6.0: pickle.
    V06,
}

pub fn venv_python(v: FlaskSession) -> PathBuf {
    let name = match v {
        FlaskSession::V08 => "fs08",
        FlaskSession::V06 => "fs06",
    };
    let root = std::env::var_os("STING_TEST_VENVS").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv"));
    let py = root.join(name).join("bin/python");
    assert!(py.exists(), "{} missing: run scripts/setup-python first (scripts/test does)", py.display());
    py
}

/// Writes a small GeoLite2-City-shaped database (tests/python/make_mmdb.py, real mmdb-writer
/// from PyPI) into `dir`: 81.2.69.0/24 GB London, 89.160.20.0/24 SE Linköping, 203.0.113.0/24
/// DE Munich, 198.51.100.0/24 US (no city), 2001:db8::/32 JP Tokyo.
pub fn make_mmdb(dir: &Path) -> PathBuf {
    make_mmdbs(dir).0
}

/// [`make_mmdb`] and a GeoLite2-ASN-shaped database beside it: 81.2.69.0/24 and 81.2.70.0/23
/// AS64500 "Example Home Broadband", 203.0.113.0/24 AS64501 "Example Hosting GmbH".
pub fn make_mmdbs(dir: &Path) -> (PathBuf, PathBuf) {
    let (out, asn) = (dir.join("test.mmdb"), dir.join("test-asn.mmdb"));
    let result =
        Command::new(venv_python(FlaskSession::V08)).arg(repo_root().join("tests/python/make_mmdb.py")).arg(&out).arg(&asn).output().expect("run make_mmdb.py");
    assert!(result.status.success(), "make_mmdb.py failed ({}):\n{}", result.status, String::from_utf8_lossy(&result.stderr));
    (out, asn)
}

pub struct FlaskApp {
    pub port: u16,
    child: Child,
    /// Holds `app.log`: the app's stderr, where Werkzeug logs one line per request it serves.
    dir: tempfile::TempDir,
}

impl FlaskApp {
    pub fn start(redis: &RedisServer, version: FlaskSession) -> Self {
        Self::start_with_secret(redis, version, SECRET)
    }

    pub fn start_with_secret(redis: &RedisServer, version: FlaskSession, secret: &str) -> Self {
        Self::start_with(redis, version, secret, &[])
    }

    /// With extra environment for the app (e.g. `SESSION_USE_SIGNER=0`).
    pub fn start_with(redis: &RedisServer, version: FlaskSession, secret: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(&redis.url(), "standalone", version, secret, env)
    }

    /// The app (secret [`SECRET`]) on any Redis topology: `mode` is its `REDIS_MODE`
    /// (`standalone`, `cluster` or `sentinel`) and `redis_url` its `REDIS_URL` in that mode's
    /// form ([`RedisServer::url`], [`RedisCluster::url_list`], [`RedisSentinels::url`]); `env`
    /// as for [`FlaskApp::start_with`]. Returns once the app listens, so (in cluster mode,
    /// where the client reads the slot map at start) once it has reached Redis.
    pub fn start_on(redis_url: &str, mode: &str, version: FlaskSession, env: &[(&str, &str)]) -> Self {
        Self::launch(redis_url, mode, version, SECRET, env)
    }

    fn launch(redis_url: &str, mode: &str, version: FlaskSession, secret: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("app.log")).unwrap();
        let child = Command::new(venv_python(version))
            .arg(repo_root().join("examples/flask_app/app.py"))
            .env("SESSION_SECRET_KEY", secret)
            .env("REDIS_URL", redis_url)
            .env("REDIS_MODE", mode)
            .env("APP_PORT", port.to_string())
            .env("APP_HOST", "127.0.0.1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the Flask app");
        let mut app = FlaskApp { port, child, dir };
        wait_until("Flask app", Duration::from_secs(20), || {
            if let Ok(Some(status)) = app.child.try_wait() {
                panic!("the Flask app exited with {status}:\n{}", app.log());
            }
            accepts(port)
        });
        app
    }

    /// The app's stderr so far (tracebacks, Werkzeug's request lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("app.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines of the app's access log (Werkzeug's `"GET /path HTTP/1.1" 200 -`).
    pub fn requests_log(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("app.log")).unwrap_or_default();
        log.lines().filter_map(|l| l.split_once('"').and_then(|(_, rest)| rest.split_once('"')).map(|(req, _)| req.to_owned())).collect()
    }
}

impl Drop for FlaskApp {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

// ------------------------------------------------------------------------------------------
// Kratos stub: serves Kratos's real whoami shapes (tests/fixtures/kratos), counts calls
// ------------------------------------------------------------------------------------------

/// What the stub answers for one credential.
#[derive(Clone)]
pub enum StubAnswer {
    /// 200 with the fixture session, identity id and email replaced, `expires_at` = now + ttl,
    /// and `authenticated_at` the fixture's unless set.
    Session {
        identity_id: String,
        email: String,
        role: Option<String>,
        aal: String,
        expires_in: Duration,
        authenticated_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// 403 `session_aal2_required` (the fixture body).
    Aal2Required,
    /// Any status with an empty body (e.g. 500, 429).
    Status(u16),
    /// Any status with this JSON body (e.g. a whoami session whose traits say "admin").
    Json(u16, serde_json::Value),
}

impl StubAnswer {
    /// A live session (1 h) for identity `id` with email `{id}@example.com`.
    pub fn session(id: &str, role: Option<&str>, aal: &str) -> Self {
        StubAnswer::Session {
            identity_id: id.into(),
            email: format!("{id}@example.com"),
            role: role.map(str::to_owned),
            aal: aal.into(),
            expires_in: Duration::from_secs(3600),
            authenticated_at: None,
        }
    }

    /// The same session, authenticated just now (a completed login or step-up).
    pub fn authenticated_now(mut self) -> Self {
        if let StubAnswer::Session { authenticated_at, .. } = &mut self {
            *authenticated_at = Some(chrono::Utc::now());
        }
        self
    }
}

pub struct KratosStub {
    pub port: u16,
    calls: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    answers: Arc<Mutex<HashMap<String, StubAnswer>>>,
    /// Admin API calls (`DELETE /admin/...` request lines), in order.
    admin: Arc<Mutex<Vec<String>>>,
}

impl KratosStub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stub = KratosStub { port, calls: Arc::default(), delay_ms: Arc::default(), answers: Arc::default(), admin: Arc::default() };
        let (calls, delay, answers, admin) = (stub.calls.clone(), stub.delay_ms.clone(), stub.answers.clone(), stub.admin.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (calls, delay, answers, admin) = (calls.clone(), delay.clone(), answers.clone(), admin.clone());
                std::thread::spawn(move || serve_kratos(conn, &calls, &delay, &answers, &admin));
            }
        });
        stub
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin API calls received (`DELETE /admin/sessions/{id}` ...), as request lines
    /// without the HTTP version. A session revoked there is answered 401 by whoami afterwards,
    /// as Kratos does.
    pub fn admin_calls(&self) -> Vec<String> {
        self.admin.lock().unwrap().clone()
    }

    /// Registers the answer for a credential value (token, cookie value or bearer token).
    pub fn answer(&self, credential: &str, a: StubAnswer) {
        self.answers.lock().unwrap().insert(credential.to_owned(), a);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Kratos's real whoami 200 body (the fixture) for identity `id`, live for an hour.
pub fn whoami_body(id: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&fixture("kratos_whoami_200.json")).unwrap();
    v["expires_at"] = serde_json::json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    v["identity"]["id"] = serde_json::json!(id);
    v
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures/kratos").join(name)).unwrap()
}

fn serve_kratos(mut conn: TcpStream, calls: &AtomicUsize, delay: &AtomicU64, answers: &Mutex<HashMap<String, StubAnswer>>, admin: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
        let credential = headers
            .get("x-session-token")
            .cloned()
            .or_else(|| headers.get("cookie").and_then(|c| c.split(';').find_map(|p| p.trim().strip_prefix("ory_kratos_session=").map(str::to_owned))))
            .or_else(|| headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned)));
        let answer = credential.and_then(|c| answers.lock().unwrap().get(&c).cloned());
        let line = request_line.trim_end().trim_end_matches(" HTTP/1.1").to_owned();
        let fixture_session: serde_json::Value = serde_json::from_str(&fixture("kratos_whoami_200.json")).unwrap();
        let revoked = admin.lock().unwrap().iter().any(|l| l == &format!("DELETE /admin/sessions/{}", fixture_session["id"].as_str().unwrap()));
        let (status, body) = match (request_line.starts_with("GET /sessions/whoami"), answer) {
            // Kratos's admin API: 204 No Content for a revoked session or identity's sessions.
            (false, _) if line.starts_with("DELETE /admin/sessions/") || (line.starts_with("DELETE /admin/identities/") && line.ends_with("/sessions")) => {
                admin.lock().unwrap().push(line);
                (204, String::new())
            }
            (false, _) => (404, String::new()),
            (true, Some(StubAnswer::Session { .. })) if revoked => (401, fixture("kratos_whoami_401.json")),
            (true, None) => (401, fixture("kratos_whoami_401.json")),
            (true, Some(StubAnswer::Aal2Required)) => (403, fixture("kratos_whoami_403.json")),
            (true, Some(StubAnswer::Status(s))) => (s, String::new()),
            (true, Some(StubAnswer::Json(s, body))) => (s, body.to_string()),
            (true, Some(StubAnswer::Session { identity_id, email, role, aal, expires_in, authenticated_at })) => {
                let mut v: serde_json::Value = serde_json::from_str(&fixture("kratos_whoami_200.json")).unwrap();
                let expires = chrono::Utc::now() + chrono::Duration::from_std(expires_in).unwrap();
                v["expires_at"] = serde_json::json!(expires.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
                v["identity"]["id"] = serde_json::json!(identity_id);
                v["identity"]["traits"]["email"] = serde_json::json!(email);
                v["authenticator_assurance_level"] = serde_json::json!(aal);
                if let Some(t) = authenticated_at {
                    v["authenticated_at"] = serde_json::json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
                }
                if let Some(r) = role {
                    v["identity"]["metadata_public"] = serde_json::json!({"role": r});
                }
                (200, v.to_string())
            }
        };
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Error",
        };
        let resp =
            format!("HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------------------
// The proxy
// ------------------------------------------------------------------------------------------

/// Settings for one proxy run; `extra_toml` is appended to the generated config file.
pub struct ProxyOpts<'a> {
    pub redis_url: String,
    pub upstream: String,
    pub kratos: Option<String>,
    pub secret: &'a str,
    pub fallbacks: &'a [&'a str],
    pub cache_ttl_seconds: u64,
    pub extra_toml: &'a str,
    /// Lines added to the `[server]` table.
    pub server_toml: &'a str,
    /// Lines added to the `[session]` table.
    pub session_toml: &'a str,
    pub env: Vec<(&'a str, String)>,
}

impl<'a> ProxyOpts<'a> {
    pub fn new(redis: &RedisServer, upstream: String) -> Self {
        Self::on(redis.url(), upstream)
    }

    /// On any Redis: `redis_url` in the form of its mode (a cluster's seed list, a
    /// `redis+sentinel://` URL), `REDIS_MODE` given in `env` when it must be said.
    pub fn on(redis_url: String, upstream: String) -> Self {
        ProxyOpts {
            redis_url,
            upstream,
            kratos: None,
            secret: SECRET,
            fallbacks: &[],
            cache_ttl_seconds: 5,
            extra_toml: "",
            server_toml: "",
            session_toml: "",
            env: Vec::new(),
        }
    }
}

/// Rules used by most tests, mirroring the shipped config.
pub const DEFAULT_RULES: &str = r#"
[[auth.rules]]
prefix = "/admin"
require = "role"
roles = ["admin"]

[[auth.rules]]
prefix = "/dashboard"
require = "session"

[[auth.rules]]
prefix = "/api/"
require = "session"
"#;

pub struct Proxy {
    pub port: u16,
    pub admin_port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

/// Every variable the proxy reads, removed so the caller's environment cannot leak in.
const PROXY_ENV: &[&str] = &[
    "REDIS_URL",
    "REDIS_MODE",
    "SESSION_SECRET_KEY",
    "SESSION_SECRET_KEY_FALLBACKS",
    "SESSION_USE_SIGNER",
    "SESSION_KEY_PREFIX",
    "SESSION_COOKIE_NAME",
    "SESSION_LIFETIME_HOURS",
    "ANALYTICS_ENABLED",
    "ANALYTICS_RETENTION_DAYS",
    "STING_LISTEN",
    "STING_ADMIN_LISTEN",
    "STING_UPSTREAM",
    "KRATOS_PUBLIC_URL",
    "STING_TRUSTED_PROXIES",
    "STING_REQUIRE_AUTH",
    "STING_LOGIN_URL",
    "STING_THREADS",
    "STING_GRACE_PERIOD_SECONDS",
    "STING_SESSION_CACHE_TTL_SECONDS",
];

/// A ready proxy in front of `app` with the Kratos fallback on `kratos`; `extra` goes into the
/// `[kratos]` table (and may open later tables).
pub fn proxy_with_kratos(redis: &RedisServer, app: &FlaskApp, kratos: &KratosStub, extra: &str) -> Proxy {
    let p = Proxy::start(ProxyOpts { kratos: Some(kratos.url()), extra_toml: extra, ..ProxyOpts::new(redis, app.url()) });
    p.wait_ready();
    p
}

pub fn proxy_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sting-proxy")
}

impl Proxy {
    /// The value of the first `/metrics` line starting with `line_start` (0 when absent).
    pub fn metric(&self, line_start: &str) -> f64 {
        let text = client().get(self.admin_url("/metrics")).send().unwrap().text().unwrap();
        text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    pub fn start(opts: ProxyOpts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let fallbacks: Vec<String> = opts.fallbacks.iter().map(|f| format!("{f:?}")).collect();
        let kratos = opts.kratos.as_deref().map(|u| format!("public_url = {u:?}\n")).unwrap_or_default();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
threads = 2
grace_period_seconds = 1
graceful_shutdown_timeout_seconds = 1
upgrade_sock = "{sock}"
pid_file = "{pid}"
{server_extra}

[upstream]
url = "{upstream}"

[redis]
url = "{redis}"

[session]
secret_key = "{secret}"
secret_key_fallbacks = [{fallbacks}]
cache_ttl_seconds = {ttl}
{session_extra}

[kratos]
{kratos}
{extra}
"#,
            sock = dir.path().join("upgrade.sock").display(),
            pid = dir.path().join("proxy.pid").display(),
            upstream = opts.upstream,
            redis = opts.redis_url,
            secret = opts.secret,
            fallbacks = fallbacks.join(", "),
            ttl = opts.cache_ttl_seconds,
            extra = opts.extra_toml,
            server_extra = opts.server_toml,
            session_extra = opts.session_toml,
        );
        let conf = dir.path().join("sting-proxy.toml");
        std::fs::write(&conf, toml).unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let mut cmd = Command::new(proxy_binary());
        for v in PROXY_ENV {
            cmd.env_remove(v);
        }
        cmd.args(["serve", "--config"]).arg(&conf).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start sting-proxy");
        let mut proxy = Proxy { port, admin_port, child: Some(child), dir };
        let (p, a) = (port, admin_port);
        let started = Instant::now();
        while !(accepts(p) && accepts(a)) {
            if let Some(status) = proxy.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sting-proxy exited with {status}:\n{}", proxy.log());
            }
            assert!(started.elapsed() < Duration::from_secs(20), "sting-proxy did not listen:\n{}", proxy.log());
            std::thread::sleep(Duration::from_millis(25));
        }
        proxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Runs an ops command of the binary against this proxy's configuration:
    /// (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_with_config(args, &self.dir.path().join("sting-proxy.toml"))
    }

    /// Runs an ops command with another configuration file.
    pub fn cli_with_config(&self, args: &[&str], config: &Path) -> (i32, String, String) {
        let mut cmd = Command::new(proxy_binary());
        for v in PROXY_ENV {
            cmd.env_remove(v);
        }
        cmd.args(args).arg("--config").arg(config);
        let out = cmd.output().expect("run sting-proxy");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `SIG{name}` (e.g. "QUIT", "HUP") to this process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status();
    }

    /// Starts a second process on the same configuration with `serve --upgrade`: it waits on
    /// the upgrade socket for this one's listeners (handed over on SIGQUIT). Its log goes to
    /// `proxy-upgraded.log`.
    pub fn spawn_upgrade(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("proxy-upgraded.log")).unwrap();
        let mut cmd = Command::new(proxy_binary());
        for v in PROXY_ENV {
            cmd.env_remove(v);
        }
        cmd.args(["serve", "--upgrade", "--config"]).arg(self.dir.path().join("sting-proxy.toml")).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log);
        cmd.spawn().expect("start the upgraded sting-proxy")
    }

    /// Waits for this process to exit by itself (after SIGQUIT or SIGTERM).
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(start.elapsed() < within, "sting-proxy did not exit within {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until `/readyz` says Redis is connected.
    pub fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        wait_until("proxy /readyz", Duration::from_secs(10), || client().get(&url).send().is_ok_and(|r| r.status() == 200));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

// ------------------------------------------------------------------------------------------
// HTTP helpers
// ------------------------------------------------------------------------------------------

/// A client that follows no redirects and keeps no cookies: tests say exactly what they send.
/// `threads` clients at once, each GETting `per_thread` page views with `cookie` from
/// `urls[thread % urls.len()]` and the User-Agent `ua(thread)`; every answer must be 200.
pub fn browse_concurrently(urls: &[String], cookie: &str, threads: usize, per_thread: usize, ua: fn(usize) -> &'static str) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, cookie, ua) = (urls[t % urls.len()].clone(), cookie.to_owned(), ua(t));
            std::thread::spawn(move || {
                let c = client();
                for _ in 0..per_thread {
                    let r = c.get(&url).header("cookie", format!("session={cookie}")).header("accept", "text/html").header("user-agent", ua).send().unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Today's UTC date, `YYYY-MM-DD`, as the day keys name it.
pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// The sid of a signed cookie value (`{sid}.{signature}`).
pub fn sid_of(cookie: &str) -> String {
    cookie.rsplit_once('.').unwrap().0.to_owned()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(20)).build().unwrap()
}

/// The value of cookie `name` from a response's `Set-Cookie` headers.
pub fn set_cookie_value(resp: &reqwest::blocking::Response, name: &str) -> Option<String> {
    resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let first = v.split(';').next()?;
        let (k, val) = first.split_once('=')?;
        (k.trim() == name).then(|| val.trim().to_owned())
    })
}

/// Logs in through `base` (proxy or app) as the given user; returns the session cookie value.
pub fn login(base: &str, user_id: &str, role: &str) -> String {
    let resp = client()
        .post(format!("{base}/login"))
        .json(&serde_json::json!({"user_id": user_id, "email": format!("{user_id}@example.com"), "role": role}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "login failed");
    set_cookie_value(&resp, "session").expect("login sets the session cookie")
}

/// Logs `user_id` (with `email`) in through `base` from a browser `ua` at address `ip` (sent as
/// `X-Forwarded-For`: the proxy must trust loopback); returns the session cookie value.
pub fn login_from(base: &str, user_id: &str, email: &str, ua: &str, ip: &str) -> String {
    let r = client()
        .post(format!("{base}/login"))
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .json(&serde_json::json!({"user_id": user_id, "email": email, "role": "user"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "login failed");
    set_cookie_value(&r, "session").expect("login sets the session cookie")
}

/// Every key in Redis with its whole content as text (any type but HyperLogLog registers,
/// which are strings and read as such).
pub fn redis_dump(redis: &RedisServer) -> Vec<(String, String)> {
    let mut c = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut c).unwrap();
            let text = match kind.as_str() {
                "string" => String::from_utf8_lossy(&redis::cmd("GET").arg(&key).query::<Vec<u8>>(&mut c).unwrap()).into_owned(),
                "hash" => format!("{:?}", redis::cmd("HGETALL").arg(&key).query::<Vec<String>>(&mut c).unwrap()),
                "list" => format!("{:?}", redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query::<Vec<String>>(&mut c).unwrap()),
                "set" => format!("{:?}", redis::cmd("SMEMBERS").arg(&key).query::<Vec<String>>(&mut c).unwrap()),
                "zset" => format!("{:?}", redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query::<Vec<String>>(&mut c).unwrap()),
                "stream" => format!("{:?}", redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query::<redis::Value>(&mut c).unwrap()),
                other => panic!("{key}: unexpected type {other}"),
            };
            (key, text)
        })
        .collect()
}

/// GET `/echo` through `url` with a cookie; returns the JSON the app saw.
pub fn echo(url: &str, cookie: Option<&str>, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut req = client().get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("session={c}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200, "echo through {url}");
    resp.json().unwrap()
}

/// A header the app received, as `/echo` reports it.
pub fn seen<'a>(echo: &'a serde_json::Value, header: &str) -> Option<&'a str> {
    echo["headers"][header].as_str()
}

/// Reads a whole HTTP response from a raw socket (for tests that need exact bytes).
pub fn raw_request(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

impl Proxy {
    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > within {
                kill(&mut child);
                panic!("sting-proxy did not exit within {within:?} of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
