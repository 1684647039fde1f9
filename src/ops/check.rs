//! `sting-proxy check`: one-stop diagnostics. Validates the configuration (already done by the
//! time this runs), pings Redis and reports the settings that matter for sessions and
//! analytics, and probes Kratos. Prints a report; I/O.

use std::time::Duration;

use crate::config::Config;
use crate::store::{connection, RedisStore};

/// Runs every check, printing one line each; returns whether all passed.
pub fn run(cfg: &Config) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: &Config) -> anyhow::Result<bool> {
    let mut ok = true;
    let source = cfg.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "defaults + environment".into());
    println!("ok    configuration ({source})");
    println!("      listen {} · admin {} · upstream {} · {} auth rule(s)", cfg.listen, cfg.admin_listen, cfg.upstream_addr, cfg.rules.len());
    for w in cfg.warnings() {
        println!("warn  {w}");
    }

    match redis_report(cfg).await {
        Ok(lines) => {
            println!("ok    redis reachable");
            for l in lines {
                println!("      {l}");
            }
        }
        Err(e) => {
            ok = false;
            println!("FAIL  redis: {e}");
        }
    }

    if cfg.kratos.public_url.is_empty() {
        println!("skip  kratos (kratos.public_url / KRATOS_PUBLIC_URL not set)");
    } else {
        match kratos_probe(cfg).await {
            Ok(status) => println!("ok    kratos whoami answered {status} without credentials"),
            Err(e) => {
                ok = false;
                println!("FAIL  kratos: {e}");
            }
        }
    }
    Ok(ok)
}

/// `PING` and the settings that matter, on every server holding keys (each cluster master).
async fn redis_report(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let timeout = Duration::from_millis(cfg.redis.connect_timeout_ms.max(1000));
    let store = RedisStore::new(&cfg.redis_target, timeout, timeout)?;
    tokio::time::timeout(timeout * 2, store.connect_once()).await.map_err(|_| anyhow::anyhow!("no connection within {timeout:?}"))??;
    store.ping().await?;
    let mut lines = vec![format!("redis: {}", cfg.redis_target.describe())];
    let clients = store.node_clients().await?;
    for client in &clients {
        let label = if clients.len() > 1 { format!("{}: ", connection::address_of(client)) } else { String::new() };
        let mut conn = tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| anyhow::anyhow!("{label}no connection within {timeout:?}"))??;
        let policy: Option<(String, String)> = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(&mut conn).await.ok();
        match policy.map(|p| p.1) {
            Some(p) => lines.push(format!("{label}maxmemory-policy = {p}: {}", advise_policy(&p))),
            None => lines.push(format!("{label}maxmemory-policy: unknown (CONFIG GET refused)")),
        }
        let events: Option<(String, String)> = redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query_async(&mut conn).await.ok();
        match events.map(|e| e.1) {
            Some(e) => lines.push(format!("{label}notify-keyspace-events = {e:?}: {}", advise_events(&e))),
            None => lines.push(format!("{label}notify-keyspace-events: unknown (CONFIG GET refused)")),
        }
    }
    Ok(lines)
}

/// Eviction that may pick session or analytics keys silently loses logins and counts.
pub fn advise_policy(policy: &str) -> &'static str {
    match policy {
        "noeviction" => "good: nothing is evicted silently (writes fail loudly when full)",
        "volatile-lru" | "volatile-lfu" | "volatile-ttl" | "volatile-random" => {
            "acceptable: only keys with a TTL are evicted, but sessions and analytics all carry TTLs; prefer noeviction with enough memory"
        }
        _ => "risky: any key, including live sessions and analytics counters, may be evicted; use noeviction",
    }
}

/// Keyspace notifications let the proxy see session expiry at once instead of by sweeping.
pub fn advise_events(events: &str) -> &'static str {
    // The listener subscribes to `__keyevent@…` channels, which only `E` enables.
    let has_keyspace = events.contains('E');
    let has_expired = events.contains('x') || events.contains('A');
    let has_generic = events.contains('g') || events.contains('A');
    if has_keyspace && has_expired && has_generic {
        "good: expiry and deletion of sessions are seen at once"
    } else {
        "expiry is found by the periodic sweep only; set notify-keyspace-events to \"Egx\" to see it at once"
    }
}

async fn kratos_probe(cfg: &Config) -> anyhow::Result<u16> {
    let http = reqwest::Client::builder().timeout(Duration::from_millis(cfg.kratos.timeout_ms.max(1000))).build()?;
    let resp = http.get(format!("{}/sessions/whoami", cfg.kratos.public_url)).send().await?;
    let status = resp.status().as_u16();
    if status == 401 || status == 200 {
        Ok(status)
    } else {
        anyhow::bail!("whoami answered {status}, expected 401 for a request without credentials")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice() {
        assert!(advise_policy("noeviction").starts_with("good"));
        assert!(advise_policy("allkeys-lru").starts_with("risky"));
        assert!(advise_events("").contains("sweep"));
        assert!(advise_events("Egx").starts_with("good"));
        assert!(advise_events("KEA").starts_with("good"));
        assert!(advise_events("Kgx").contains("sweep"), "K alone feeds no key-event channel");
    }
}
