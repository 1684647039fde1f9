//! Resolves a Flask-Session cookie to an identity: signature check, in-process cache, then one
//! Redis `GET`. I/O (Redis).
//!
//! Only sessions that carry a user are cached. Anonymous sessions are not, because Flask-Session
//! keeps the sid across login (the app writes `user_id` into the same session): a cached
//! "anonymous" would hide a fresh login. Every sid it returns is the published form
//! ([`SessionIds`]): a keyed hash when cookies are unsigned. A logout is seen by the proxy itself (the app clears the
//! cookie) and evicts the entry at once; other changes show up within `cache_ttl_seconds`.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::config::SessionSection;
use crate::identity::flask_cookie::{CookieError, CookieSigner};
use crate::identity::session_id::SessionIds;
use crate::identity::session_value::{self, DecodeError, FieldNames};
use crate::identity::{AuthSource, Identity};
use crate::store::keys;
use crate::store::{RedisStore, StoreError};

/// What a session cookie told us.
#[derive(Debug, Clone)]
pub enum SessionLookup {
    /// A session with a user; `cached` says whether Redis was skipped.
    User {
        identity: Arc<Identity>,
        cached: bool,
    },
    /// A live session without a user id.
    Anonymous {
        sid: String,
    },
    /// Signed correctly, but the key is gone (expired or logged out).
    Missing {
        sid: String,
    },
    BadCookie(CookieError),
    /// The stored value could not be decoded: anonymous, and counted.
    Undecodable {
        sid: String,
        error: DecodeError,
    },
    /// Redis could not be asked: we do not know.
    StoreDown(Arc<StoreError>),
}

pub struct SessionResolver {
    signer: CookieSigner,
    ids: SessionIds,
    prefix: String,
    names: FieldNames,
    max_value_bytes: usize,
    cache: Option<Cache<String, Arc<Identity>>>,
    store: RedisStore,
}

impl SessionResolver {
    /// The Redis the sessions are read from.
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    pub fn new(cfg: &SessionSection, store: RedisStore) -> Self {
        let signer = if cfg.use_signer {
            let fallbacks: Vec<&str> = cfg.secret_key_fallbacks.iter().map(|s| s.expose()).collect();
            CookieSigner::signed(cfg.secret_key.expose(), &fallbacks)
        } else {
            CookieSigner::unsigned()
        };
        let cache = (cfg.cache_ttl_seconds > 0)
            .then(|| Cache::builder().max_capacity(cfg.cache_capacity).time_to_live(Duration::from_secs(cfg.cache_ttl_seconds)).build());
        Self {
            signer,
            ids: SessionIds::for_session(cfg),
            prefix: cfg.key_prefix.clone(),
            names: FieldNames { user_id: cfg.user_id_field.clone(), email: cfg.email_field.clone(), role: cfg.role_field.clone() },
            max_value_bytes: cfg.max_value_bytes,
            cache,
            store,
        }
    }

    /// The published sid of a cookie value, if its signature is good.
    pub fn published_sid<'a>(&self, cookie_value: &'a str) -> Result<std::borrow::Cow<'a, str>, CookieError> {
        self.signer.verify(cookie_value).map(|sid| self.ids.publish(sid))
    }

    /// How sids are published (shared with the expiry listener).
    pub fn ids(&self) -> &SessionIds {
        &self.ids
    }

    pub async fn lookup(&self, cookie_value: &str) -> SessionLookup {
        let raw = match self.signer.verify(cookie_value) {
            Ok(sid) => sid,
            Err(e) => return SessionLookup::BadCookie(e),
        };
        let sid = self.ids.publish(raw);
        let sid = sid.as_ref();
        if let Some(identity) = self.cache.as_ref().and_then(|c| c.get(sid)) {
            return SessionLookup::User { identity, cached: true };
        }
        let key = keys::flask_session(&self.prefix, raw);
        let raw: Option<Vec<u8>> = match self.store.query(redis::cmd("GET").arg(&key)).await {
            Ok(v) => v,
            Err(e) => return SessionLookup::StoreDown(Arc::new(e)),
        };
        let Some(raw) = raw else {
            return SessionLookup::Missing { sid: sid.to_owned() };
        };
        match session_value::decode(&raw, &self.names, self.max_value_bytes) {
            Err(error) => SessionLookup::Undecodable { sid: sid.to_owned(), error },
            Ok(fields) => match fields.user_id {
                None => SessionLookup::Anonymous { sid: sid.to_owned() },
                Some(user_id) => {
                    let identity = Arc::new(Identity {
                        user_id,
                        email: fields.email,
                        role: fields.role,
                        session_id: sid.to_owned(),
                        source: AuthSource::FlaskSession,
                        aal: None,
                        methods: Vec::new(),
                        authenticated_at: None,
                    });
                    if let Some(c) = &self.cache {
                        c.insert(sid.to_owned(), identity.clone());
                    }
                    SessionLookup::User { identity, cached: false }
                }
            },
        }
    }

    /// Forgets a (published) sid at once (the app cleared its cookie: logout).
    pub fn evict(&self, sid: &str) {
        if let Some(c) = &self.cache {
            c.invalidate(sid);
        }
    }
}
