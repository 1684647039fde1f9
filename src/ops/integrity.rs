//! `sting-proxy validate [--fix]`: data-integrity checks over the proxy's keys (the seed's
//! `validate_data_integrity` and `cleanup_orphaned_data`), each a `SCAN`/`SSCAN`/`ZSCAN` walk in
//! batches with one check per batch. Repairs only remove dangling references (re-checked and
//! removed atomically, in a script) and add missing TTLs; they never delete a session record or
//! a counter, so they are safe while proxies write. I/O.

use std::time::Duration;

use std::collections::BTreeSet;

use crate::observe::printable::sanitize;
use crate::ops::terminal::Progress;
use crate::store::keys;
use crate::store::{RedisStore, Scan, StoreError};

/// Keys or members examined per round trip.
pub const SCAN_BATCH: usize = 1000;

/// Problems found by one check, and how many were repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub description: &'static str,
    pub examined: u64,
    pub found: u64,
    pub fixed: u64,
    /// Up to a few offending keys or members, for the report.
    pub examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 5;

impl Finding {
    fn new(check: &'static str, description: &'static str) -> Self {
        Self { check, description, ..Self::default() }
    }

    fn note(&mut self, what: String) {
        self.found += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }
}

/// What the checks need to know about the deployment.
pub struct Settings {
    pub fix: bool,
    /// TTL (s) given to an analytics key found without one.
    pub retention_secs: u64,
    /// TTL (s) given to a cached Kratos answer found without one.
    pub kratos_cache_secs: u64,
    /// The app's session key prefix: those keys are the app's, never touched.
    pub flask_prefix: String,
    /// How long revocations and step-up marks are kept (may exceed the retention).
    pub revocation_keep_secs: u64,
}

/// Runs every check in order; returns one finding per check.
pub async fn validate(store: &RedisStore, s: &Settings, progress: &mut Progress) -> Result<Vec<Finding>, StoreError> {
    let mut out = Vec::new();
    out.push(
        check_members(
            store,
            s,
            progress,
            Finding::new("active_without_record", "active sessions whose record is missing or already ended"),
            false,
            vec![(keys::active_sessions().to_owned(), Rule::Live)],
        )
        .await?,
    );
    let user_sets: Vec<(String, Rule)> = key_names(store, &format!("{}*", keys::active_user_prefix()), progress)
        .await?
        .into_iter()
        .map(|k| {
            let user = k[keys::active_user_prefix().len()..].to_owned();
            (k, Rule::OwnedBy(user))
        })
        .collect();
    out.push(
        check_members(
            store,
            s,
            progress,
            Finding::new("user_active_dangling", "users' active-session entries that are missing, ended or another user's"),
            false,
            user_sets,
        )
        .await?,
    );
    let mut indexes = vec![(keys::recent_sessions().to_owned(), Rule::Exists)];
    indexes.extend(key_names(store, &keys::user_sessions("*"), progress).await?.into_iter().map(|k| (k, Rule::Exists)));
    out.push(
        check_members(
            store,
            s,
            progress,
            Finding::new("index_dangling", "session-index entries (user histories, recent sessions) pointing at no record"),
            true,
            indexes,
        )
        .await?,
    );
    out.push(
        check_members(
            store,
            s,
            progress,
            Finding::new("online_dangling", "who-is-online entries whose session record is missing or already ended"),
            true,
            vec![(keys::online_sessions().to_owned(), Rule::Live)],
        )
        .await?,
    );
    let (no_ttl, too_long) = ttl_checks(store, s, progress).await?;
    out.push(no_ttl);
    out.push(too_long);
    progress.done();
    Ok(out)
}

/// What a member of a collection must point at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// A session record that exists.
    Exists,
    /// A session record that exists and has not ended.
    Live,
    /// A live session record of this user.
    OwnedBy(String),
}

/// Checks a batch of members against their session records and, when fixing, removes the
/// dangling ones in the same step, so a session that a proxy touches meanwhile is never
/// removed on a stale reading.
///
/// KEYS: 1 the collection, 2.. the members' session records (in ARGV order).
/// ARGV: 1 `set`/`zset`, 2 rule `exists`/`live`/`owned`, 3 user id for `owned`, 4 `1` to fix,
///       5.. the members. Returns the dangling members.
const CHECK_MEMBERS: &str = r#"
local bad = {}
for i = 5, #ARGV do
  local rec = KEYS[i - 3]
  local ok = redis.call('EXISTS', rec) == 1
  if ok and ARGV[2] ~= 'exists' then
    ok = redis.call('HEXISTS', rec, 'end_time') == 0
    if ok and ARGV[2] == 'owned' then ok = redis.call('HGET', rec, 'user_id') == ARGV[3] end
  end
  if not ok then
    bad[#bad + 1] = ARGV[i]
    if ARGV[4] == '1' then
      if ARGV[1] == 'zset' then redis.call('ZREM', KEYS[1], ARGV[i]) else redis.call('SREM', KEYS[1], ARGV[i]) end
    end
  end
end
return bad
"#;

/// The distinct keys matching `pattern` (SCAN may repeat a key).
async fn key_names(store: &RedisStore, pattern: &str, progress: &mut Progress) -> Result<BTreeSet<String>, StoreError> {
    let mut names = BTreeSet::new();
    let mut scan = store.scanner(Scan::Keys(pattern), SCAN_BATCH);
    while let Some(batch) = scan.next_batch().await? {
        names.extend(batch);
        progress.update(&format!("{}: {} keys found", sanitize(pattern), names.len()));
    }
    Ok(names)
}

/// Checks every member of `collections` (sets, or sorted sets when `sorted`) against `Rule`.
async fn check_members(
    store: &RedisStore,
    s: &Settings,
    progress: &mut Progress,
    mut f: Finding,
    sorted: bool,
    collections: Vec<(String, Rule)>,
) -> Result<Finding, StoreError> {
    for (key, rule) in collections {
        let what = if sorted { Scan::SortedSet(&key) } else { Scan::Set(&key) };
        let (rule_name, user) = match &rule {
            Rule::Exists => ("exists", ""),
            Rule::Live => ("live", ""),
            Rule::OwnedBy(u) => ("owned", u.as_str()),
        };
        let mut scan = store.scanner(what, SCAN_BATCH);
        while let Some(sids) = scan.next_batch().await? {
            f.examined += sids.len() as u64;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(CHECK_MEMBERS).arg(1 + sids.len()).arg(&key);
            for sid in &sids {
                cmd.arg(keys::analytics_session(sid));
            }
            cmd.arg(if sorted { "zset" } else { "set" }).arg(rule_name).arg(user).arg(if s.fix { "1" } else { "0" }).arg(&sids);
            let bad: Vec<String> = store.query(&cmd).await?;
            for sid in bad {
                f.note(format!("{key} {sid}"));
                if s.fix {
                    f.fixed += 1;
                }
            }
            progress.update(&format!("{}: {} members checked", sanitize(&key), f.examined));
        }
    }
    Ok(f)
}

/// Every key the proxy writes expires (see `docs/redis-schema.md`); one without a TTL would
/// live forever, and one whose TTL is longer than its family's would outlive the retention
/// (after `analytics.retention_days` was lowered, say). Only the proxy's own key families are
/// examined: other `sting:*` keys, and the app's session keys, are never touched. Fixing gives
/// the first their TTL and shortens the second to it.
async fn ttl_checks(store: &RedisStore, s: &Settings, progress: &mut Progress) -> Result<(Finding, Finding), StoreError> {
    let mut none = Finding::new("no_ttl", "proxy keys without a TTL (they would never expire)");
    let mut long = Finding::new("ttl_over_retention", "proxy keys set to live longer than their retention (shortened with --fix)");
    for prefix in keys::owned_prefixes() {
        let pattern = format!("{prefix}*");
        let mut scan = store.scanner(Scan::Keys(&pattern), SCAN_BATCH);
        while let Some(batch) = scan.next_batch().await? {
            let ours: Vec<String> = batch.into_iter().filter(|k| s.flask_prefix.is_empty() || !k.starts_with(&s.flask_prefix)).collect();
            if ours.is_empty() {
                continue;
            }
            none.examined += ours.len() as u64;
            long.examined += ours.len() as u64;
            // Key by key: the Kratos cache spreads over a cluster's slots.
            let ttl_cmds: Vec<redis::Cmd> = ours.iter().map(|k| redis::cmd("TTL").arg(k).clone()).collect();
            let ttls: Vec<i64> = store.query_each(&ttl_cmds, Duration::from_secs(10)).await?;
            let (mut give, mut shorten) = (Vec::new(), Vec::new());
            for (k, t) in ours.iter().zip(ttls) {
                let want = ttl_for(k, s);
                if t == -1 && keys::configuration_keys().contains(&k.as_str()) {
                    // Configuration (alert rules, funnel definitions): kept without a TTL on purpose.
                    continue;
                }
                if t == -1 {
                    none.note(k.clone());
                    give.push(redis::cmd("EXPIRE").arg(k).arg(want).clone());
                } else if t > (want + ttl_slack(k)) as i64 {
                    long.note(format!("{k} ({} days)", t / 86_400));
                    shorten.push(redis::cmd("EXPIRE").arg(k).arg(want).clone());
                }
            }
            if s.fix {
                for (cmds, f) in [(give, &mut none), (shorten, &mut long)] {
                    if !cmds.is_empty() {
                        let set: Vec<i64> = store.query_each(&cmds, Duration::from_secs(10)).await?;
                        f.fixed += set.iter().filter(|r| **r == 1).count() as u64;
                    }
                }
            }
            progress.update(&format!("{prefix}*: {} keys checked", none.examined));
        }
    }
    Ok((none, long))
}

/// How much longer than [`ttl_for`] a key may live without being over its retention: keys that
/// expire at the end of a UTC day (light-record buckets, per-period sets) get that day.
fn ttl_slack(key: &str) -> u64 {
    if key.starts_with(keys::analytics_prefix()) {
        86_400
    } else {
        60
    }
}

/// The TTL a key of the proxy's should carry, by its documented pattern.
pub fn ttl_for(key: &str, s: &Settings) -> u64 {
    if key.starts_with(keys::aal2_prefix()) {
        keys::AAL2_EVENT_TTL_SECS
    } else if key.starts_with(keys::analytics_writer_prefix()) || key.starts_with(keys::legacy_analytics_batch_prefix()) {
        keys::ANALYTICS_WRITER_TTL_SECS
    } else if key.starts_with(keys::KRATOS_CACHE_PREFIX) {
        s.kratos_cache_secs
    } else if key == keys::revoked_sessions() || key == keys::step_up_sessions() {
        s.revocation_keep_secs
    } else {
        s.retention_secs
    }
}
