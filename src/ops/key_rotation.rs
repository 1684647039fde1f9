//! `sting-proxy rotate-keys`: re-encrypts every stored personal field under the first key of
//! `analytics.encryption_keys` (opening it with any), and seals plaintext stored before
//! encryption was turned on. I/O (Redis), in batches, with progress; safe while proxies write:
//! each value is replaced only if it is still the one that was read (compare-and-set in Lua).
//!
//! What it walks: session records (`ip`, `first_ip`, `email`), light records (their address),
//! and the Redis copies of Kratos answers (sealed whole). A value no key opens is left as it is
//! and counted as unreadable.

use crate::store::field_cipher::FieldCipher;
use crate::store::keys;
use crate::store::{RedisStore, Scan, StoreError};

/// The personal fields of a session record.
pub const SESSION_FIELDS: &[&str] = &["ip", "first_ip", "email"];

/// Where the light records' address is in their JSON array (see `session_scripts::light_record`).
const LIGHT_ADDRESS: usize = 2;

/// Replaces hash fields still holding their old value. ARGV: field, old, new, ...
const HASH_CAS: &str = r#"
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n
"#;

/// Replaces a string still holding its old value, keeping its TTL. ARGV: old, new.
const STRING_CAS: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"#;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    pub keys_scanned: u64,
    pub fields_resealed: u64,
    /// Fields no key opens (left as they are).
    pub unreadable: u64,
}

/// Walks the stored personal fields, `batch` keys per round trip; `progress` is told after each.
pub async fn rotate(store: &RedisStore, cipher: &FieldCipher, batch: usize, mut progress: impl FnMut(&Rotation)) -> Result<Rotation, StoreError> {
    let mut r = Rotation::default();
    let session_prefix = keys::analytics_session("");
    for pattern in [format!("{session_prefix}*"), format!("{}*", keys::light_sessions("")), format!("{}*", keys::KRATOS_CACHE_PREFIX)] {
        let mut scan = store.scanner(Scan::Keys(&pattern), batch);
        while let Some(found) = scan.next_batch().await? {
            for key in found {
                r.keys_scanned += 1;
                if let Some(sid) = key.strip_prefix(&session_prefix) {
                    // The session hash, not its `:actions`, `:replay`, `:pages:*` companions.
                    if !sid.contains(':') {
                        reseal_hash(store, cipher, &key, SESSION_FIELDS, &mut r).await?;
                    }
                } else if key.starts_with(keys::KRATOS_CACHE_PREFIX) {
                    reseal_string(store, cipher, &key, &mut r).await?;
                } else {
                    reseal_light(store, cipher, &key, &mut r).await?;
                }
            }
            progress(&r);
        }
    }
    Ok(r)
}

fn resealed(cipher: &FieldCipher, stored: &str, r: &mut Rotation) -> Option<String> {
    if stored.is_empty() {
        return None;
    }
    match cipher.reseal(stored) {
        Ok(new) => new,
        Err(_) => {
            r.unreadable += 1;
            None
        }
    }
}

async fn reseal_hash(store: &RedisStore, cipher: &FieldCipher, key: &str, fields: &[&str], r: &mut Rotation) -> Result<(), StoreError> {
    let values: Vec<Option<String>> = store.query(redis::cmd("HMGET").arg(key).arg(fields)).await?;
    let mut cas = redis::cmd("EVAL");
    cas.arg(HASH_CAS).arg(1).arg(key);
    let mut any = false;
    for (field, value) in fields.iter().zip(values) {
        if let Some(new) = value.as_deref().and_then(|v| resealed(cipher, v, r)) {
            cas.arg(field).arg(value).arg(new);
            any = true;
        }
    }
    if any {
        let n: u64 = store.query(&cas).await?;
        r.fields_resealed += n;
    }
    Ok(())
}

async fn reseal_string(store: &RedisStore, cipher: &FieldCipher, key: &str, r: &mut Rotation) -> Result<(), StoreError> {
    let Some(value): Option<String> = store.query(redis::cmd("GET").arg(key)).await? else { return Ok(()) };
    if let Some(new) = resealed(cipher, &value, r) {
        let n: u64 = store.query(redis::cmd("EVAL").arg(STRING_CAS).arg(1).arg(key).arg(&value).arg(new)).await?;
        r.fields_resealed += n;
    }
    Ok(())
}

async fn reseal_light(store: &RedisStore, cipher: &FieldCipher, key: &str, r: &mut Rotation) -> Result<(), StoreError> {
    let mut scan = store.scanner(Scan::Hash(key), 500);
    while let Some(flat) = scan.next_batch().await? {
        // One compare-and-set per scanned batch: a bucket can hold many records.
        let mut cas = redis::cmd("EVAL");
        cas.arg(HASH_CAS).arg(1).arg(key);
        let mut any = false;
        for pair in flat.chunks_exact(2) {
            let (sid, json) = (&pair[0], &pair[1]);
            let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else { continue };
            let Some(address) = v.get(LIGHT_ADDRESS).and_then(|a| a.as_str()).map(str::to_owned) else { continue };
            if let Some(new) = resealed(cipher, &address, r) {
                v[LIGHT_ADDRESS] = serde_json::json!(new);
                cas.arg(sid).arg(json).arg(v.to_string());
                any = true;
            }
        }
        if any {
            let n: u64 = store.query(&cas).await?;
            r.fields_resealed += n;
        }
    }
    Ok(())
}
