//! Which Redis deployment the proxy talks to: one server, a Redis Cluster, or a master found
//! through Sentinel. Pure: parses `redis.mode` and `redis.url` into a [`RedisTarget`].
//!
//! URL forms (`redis.url` / `REDIS_URL`):
//! - `redis://[user:pass@]host:port[/db]` (or `unix://`, `rediss://`): one server;
//! - several of those, comma-separated, or `redis+cluster://[user:pass@]h1:p1,h2:p2`: seed
//!   nodes of a Redis Cluster (database 0 only, as Cluster has no others);
//! - `redis+sentinel://[user:pass@]s1:p1,s2:p2/master-name[/db]`: the sentinels and the master
//!   set's name; the credentials are the data nodes' (sentinels are asked without any).
//!
//! `redis.mode` (`REDIS_MODE`) `standalone`, `cluster` or `sentinel` says which is meant; left
//! empty it is inferred from the URL form, and when set it must agree with it.

use std::fmt;

/// `redis.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    Cluster,
    Sentinel,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// Where the proxy's Redis is. Its `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (with or without replicas the proxy does not use).
    Standalone { url: String },
    /// A Redis Cluster, found from any of its seed nodes (`redis://host:port` each).
    Cluster { seeds: Vec<String> },
    /// A master set watched by Sentinel: the sentinels (`redis://host:port` each), the set's
    /// name, and the data nodes' database, user and password.
    Sentinel { sentinels: Vec<String>, master: String, db: i64, username: Option<String>, password: Option<String> },
}

impl RedisTarget {
    pub fn mode(&self) -> RedisMode {
        match self {
            RedisTarget::Standalone { .. } => RedisMode::Standalone,
            RedisTarget::Cluster { .. } => RedisMode::Cluster,
            RedisTarget::Sentinel { .. } => RedisMode::Sentinel,
        }
    }

    /// The addresses, without credentials: for logs and `check`.
    pub fn describe(&self) -> String {
        match self {
            RedisTarget::Standalone { url } => format!("standalone {}", redact(url)),
            RedisTarget::Cluster { seeds } => format!("cluster seeds {}", seeds.iter().map(|s| redact(s)).collect::<Vec<_>>().join(",")),
            RedisTarget::Sentinel { sentinels, master, db, .. } => {
                format!("sentinel master {master:?} db {db} via {}", sentinels.iter().map(|s| redact(s)).collect::<Vec<_>>().join(","))
            }
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `url` with any `user:password@` replaced by `***@`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Parses `redis.mode` (empty: infer) and `redis.url`. The error says what is wrong with the
/// value; the caller names the key and where it came from.
pub fn parse(mode: &str, url: &str) -> Result<RedisTarget, (&'static str, String)> {
    let declared = match mode.trim() {
        "" => None,
        "standalone" => Some(RedisMode::Standalone),
        "cluster" => Some(RedisMode::Cluster),
        "sentinel" => Some(RedisMode::Sentinel),
        other => return Err(("redis.mode", format!("{other:?} is not one of standalone, cluster, sentinel"))),
    };
    let url = url.trim();
    let target = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        sentinel(rest)?
    } else if let Some(rest) = url.strip_prefix("redis+cluster://") {
        let (creds, hosts) = split_credentials(rest.trim_end_matches('/'));
        if hosts.contains('/') {
            return Err(("redis.url", "a Redis Cluster has only database 0: drop the /db part".into()));
        }
        RedisTarget::Cluster { seeds: hosts_to_urls(creds, hosts)? }
    } else if url.contains(',') || declared == Some(RedisMode::Cluster) {
        let seeds: Vec<String> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        for s in &seeds {
            single(s)?;
            if redis::IntoConnectionInfo::into_connection_info(s.as_str()).is_ok_and(|i| i.redis.db != 0) {
                return Err(("redis.url", format!("{}: a Redis Cluster has only database 0", redact(s))));
            }
        }
        RedisTarget::Cluster { seeds }
    } else {
        single(url)?;
        RedisTarget::Standalone { url: url.to_owned() }
    };
    match declared {
        Some(m) if m != target.mode() => {
            Err(("redis.mode", format!("is {} but redis.url has the form of {} ({})", m.as_str(), target.mode().as_str(), form_hint(m))))
        }
        _ => Ok(target),
    }
}

fn form_hint(m: RedisMode) -> &'static str {
    match m {
        RedisMode::Standalone => "one redis:// URL",
        RedisMode::Cluster => "seed URLs separated by commas, or redis+cluster://h1:p1,h2:p2",
        RedisMode::Sentinel => "redis+sentinel://s1:p1,s2:p2/master-name",
    }
}

/// One server's URL, checked.
fn single(url: &str) -> Result<(), (&'static str, String)> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
        return Err(("redis.url", format!("{}: must start with redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://", redact(url))));
    }
    redis::Client::open(url).map(|_| ()).map_err(|_| ("redis.url", format!("{} is not a valid Redis URL", redact(url))))
}

/// `user:pass@rest` → (`Some("user:pass")`, `rest`).
fn split_credentials(s: &str) -> (Option<&str>, &str) {
    match s.rfind('@') {
        Some(at) => (Some(&s[..at]), &s[at + 1..]),
        None => (None, s),
    }
}

/// `h1:p1,h2:p2` → `redis://[creds@]h1:p1`, ...
fn hosts_to_urls(creds: Option<&str>, hosts: &str) -> Result<Vec<String>, (&'static str, String)> {
    let out: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| match creds {
            Some(c) => format!("redis://{c}@{h}"),
            None => format!("redis://{h}"),
        })
        .collect();
    if out.is_empty() {
        return Err(("redis.url", "names no host".into()));
    }
    for u in &out {
        single(u)?;
    }
    Ok(out)
}

/// `[user:pass@]s1:p1,s2:p2/master[/db]`.
fn sentinel(rest: &str) -> Result<RedisTarget, (&'static str, String)> {
    let (creds, tail) = split_credentials(rest);
    let (hosts, path) =
        tail.split_once('/').ok_or(("redis.url", "redis+sentinel:// needs the master set's name: redis+sentinel://s1:26379,s2:26379/mymaster".to_owned()))?;
    let mut parts = path.trim_end_matches('/').splitn(2, '/');
    let master = parts.next().unwrap_or_default();
    if master.is_empty() {
        return Err(("redis.url", "redis+sentinel:// needs the master set's name after the hosts: .../mymaster".into()));
    }
    let db = match parts.next() {
        Some(d) => d.parse::<i64>().map_err(|_| ("redis.url", format!("database {d:?} is not a number")))?,
        None => 0,
    };
    // A sentinel named without a port listens on Sentinel's own, 26379.
    let hosts: Vec<String> =
        hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(|h| if h.contains(':') { h.to_owned() } else { format!("{h}:26379") }).collect();
    let sentinels = hosts_to_urls(None, &hosts.join(","))?;
    let (username, password) = match creds {
        None => (None, None),
        Some(c) => match c.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| decode(u)), Some(decode(p))),
            None => (Some(decode(c)), None),
        },
    };
    Ok(RedisTarget::Sentinel { sentinels, master: decode(master), db, username, password })
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_inference() {
        assert_eq!(parse("", "redis://127.0.0.1:6379/2").unwrap(), RedisTarget::Standalone { url: "redis://127.0.0.1:6379/2".into() });
        let c = parse("", "redis://a:7000, redis://b:7001").unwrap();
        assert_eq!(c, RedisTarget::Cluster { seeds: vec!["redis://a:7000".into(), "redis://b:7001".into()] });
        assert_eq!(parse("cluster", "redis://a:7000").unwrap(), RedisTarget::Cluster { seeds: vec!["redis://a:7000".into()] });
        assert_eq!(
            parse("", "redis+cluster://:pw@a:7000,b:7001").unwrap(),
            RedisTarget::Cluster { seeds: vec!["redis://:pw@a:7000".into(), "redis://:pw@b:7001".into()] }
        );
        let s = parse("sentinel", "redis+sentinel://u:p%40ss@s1:26379,s2:26380/my%20set/3").unwrap();
        assert_eq!(
            s,
            RedisTarget::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26380".into()],
                master: "my set".into(),
                db: 3,
                username: Some("u".into()),
                password: Some("p@ss".into())
            }
        );
        assert!(!format!("{s:?}").contains("p@ss") && !format!("{c:?}{s:?}").contains("pw"));
        assert!(format!("{:?}", parse("", "redis+cluster://:pw@a:7000").unwrap()).contains("***@a:7000"));
        let RedisTarget::Sentinel { sentinels, .. } = parse("", "redis+sentinel://s1,s2:5000/m").unwrap() else { panic!() };
        assert_eq!(sentinels, ["redis://s1:26379", "redis://s2:5000"], "Sentinel's port unless given");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let err = |m: &str, u: &str| parse(m, u).unwrap_err();
        assert_eq!(err("clustr", "redis://a").0, "redis.mode");
        let (key, msg) = err("standalone", "redis://a:1,redis://b:2");
        assert_eq!(key, "redis.mode");
        assert!(msg.contains("form of cluster"), "{msg}");
        assert!(err("sentinel", "redis://a:1").1.contains("redis+sentinel://"));
        assert!(err("", "redis+sentinel://s1:26379").1.contains("master"));
        assert!(err("", "redis+sentinel://s1:26379/").1.contains("master"));
        assert!(err("", "redis://a:1/0,redis://b:2/3").1.contains("database 0"));
        assert!(err("", "redis+cluster://a:1/2").1.contains("database 0"));
        assert!(err("", "http://a:1").1.contains("must start with"));
        assert!(err("", "redis+sentinel://s1:1/m/x").1.contains("not a number"));
        let (_, msg) = err("", "redis://:secret@a:1,http://:secret@b:2");
        assert!(!msg.contains("secret"), "{msg}");
    }
}
