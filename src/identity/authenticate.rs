//! Works out who is calling, cheapest layer first: the Flask-Session cookie (signature, memory,
//! Redis), then a Kratos credential (memory, Redis, whoami). I/O via the layers it calls.

use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::identity::cookies;
use crate::identity::headers;
use crate::identity::kratos::{AnswerSource, Credential, KratosClient, KratosOutcome, WhoamiAnswer};
use crate::identity::revocation::Revocations;
use crate::identity::session_lookup::{SessionLookup, SessionResolver};
use crate::identity::{AuthOutcome, Identity};
use crate::observe::log_limit::LogLimit;
use crate::store::RedisStore;

/// While Redis is down every request would warn; one line per 10 s says as much.
static STORE_DOWN_LOG: LogLimit = LogLimit::new(10_000);

/// The result of identification for one request.
#[derive(Debug, Default)]
pub struct Identification {
    pub identity: Option<Arc<Identity>>,
    /// The verified Flask sid, even for anonymous sessions (to notice logout on the response).
    pub flask_sid: Option<String>,
    /// The session store could not be asked, so "anonymous" is a guess.
    pub store_down: bool,
    /// Kratos says a second factor is needed; where to send the browser.
    pub aal2_required: Option<Option<String>>,
    /// A credential of a revoked session was presented (the gateway must not forward it).
    pub revoked: bool,
    pub outcome: AuthOutcome,
}

/// Where a request is going. A bearer token on a request for the proxy's own endpoints is an
/// analytics API token (right or mistyped), never a Kratos credential, so it is never sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    App,
    OwnEndpoint,
}

pub struct Authenticator {
    cookie_name: String,
    sessions: SessionResolver,
    kratos: Option<KratosClient>,
    /// `kratos.bearer_tokens`: `Authorization: Bearer` is a Kratos session token.
    bearer_tokens: bool,
    revocations: Arc<Revocations>,
}

impl Authenticator {
    pub fn new(cookie_name: String, sessions: SessionResolver, kratos: Option<KratosClient>, bearer_tokens: bool, revocations: Arc<Revocations>) -> Self {
        Self { cookie_name, sessions, kratos, bearer_tokens, revocations }
    }

    /// The authenticator `cfg` describes, on `store`, refusing `revocations`.
    pub fn from_config(cfg: &crate::config::Config, store: RedisStore, revocations: Arc<Revocations>) -> Result<Self, reqwest::Error> {
        let sessions = SessionResolver::new(&cfg.session, store.clone());
        let kratos = if cfg.kratos.public_url.is_empty() {
            None
        } else {
            Some(KratosClient::new(&cfg.kratos, store, std::time::Duration::from_secs(cfg.session.cache_ttl_seconds))?)
        };
        Ok(Self::new(cfg.session.cookie_name.clone(), sessions, kratos, cfg.kratos.bearer_tokens, revocations))
    }

    /// The sessions this instance refuses.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    pub fn sessions(&self) -> &SessionResolver {
        &self.sessions
    }

    pub fn kratos(&self) -> Option<&KratosClient> {
        self.kratos.as_ref()
    }

    /// `client` is the resolved client address, for the limit on uncached Kratos lookups.
    pub async fn identify(&self, req: &RequestHeader, client: Option<IpAddr>, audience: Audience) -> Identification {
        let mut id = Identification::default();
        if let Some(value) = cookies::find(req, &self.cookie_name) {
            match self.sessions.lookup(&value).await {
                SessionLookup::User { identity, .. } if self.revocations.contains(&identity.session_id) => {
                    id.flask_sid = Some(identity.session_id.clone());
                    id.outcome = AuthOutcome::Revoked;
                    id.revoked = true;
                }
                SessionLookup::User { identity, cached } => {
                    id.flask_sid = Some(identity.session_id.clone());
                    id.outcome = if cached { AuthOutcome::FlaskCacheHit } else { AuthOutcome::FlaskRedisHit };
                    id.identity = Some(identity);
                    return id;
                }
                SessionLookup::Anonymous { sid } => {
                    id.flask_sid = Some(sid);
                    id.outcome = AuthOutcome::FlaskAnonymousSession;
                }
                SessionLookup::Missing { sid } => {
                    id.flask_sid = Some(sid);
                    id.outcome = AuthOutcome::FlaskSessionMissing;
                }
                SessionLookup::BadCookie(_) => id.outcome = AuthOutcome::BadSignature,
                SessionLookup::Undecodable { sid, error } => {
                    tracing::warn!(%error, "stored session could not be decoded; treating as anonymous");
                    id.flask_sid = Some(sid);
                    id.outcome = AuthOutcome::UndecodableSession;
                }
                SessionLookup::StoreDown(e) => {
                    if let Some(left_out) = STORE_DOWN_LOG.admit() {
                        tracing::warn!(error = %e, left_out, "session store unavailable (logged at most every 10 s; left_out counts the requests since)");
                    }
                    id.store_down = true;
                    id.outcome = AuthOutcome::StoreDown;
                }
            }
        }
        // Fall back to Kratos only when the Flask session gave no user.
        if let (Some(kratos), Some(cred)) = (&self.kratos, self.kratos_credential(req, audience)) {
            match kratos.resolve(cred, client).await {
                KratosOutcome::Answer { answer, from } => match answer.as_ref() {
                    WhoamiAnswer::Authenticated { identity, .. } if self.revocations.contains(&identity.session_id) => {
                        id.outcome = AuthOutcome::Revoked;
                        id.revoked = true;
                    }
                    WhoamiAnswer::Authenticated { identity, .. } => {
                        id.identity = Some(Arc::new(identity.clone()));
                        id.outcome = if from == AnswerSource::Kratos { AuthOutcome::KratosCall } else { AuthOutcome::KratosCacheHit };
                    }
                    WhoamiAnswer::Unauthenticated => id.outcome = AuthOutcome::KratosUnauthenticated,
                    WhoamiAnswer::Aal2Required { redirect_browser_to } => {
                        id.aal2_required = Some(redirect_browser_to.clone());
                        id.outcome = AuthOutcome::KratosAal2Required;
                    }
                },
                KratosOutcome::Unavailable(_) => id.outcome = AuthOutcome::KratosUnavailable,
                KratosOutcome::RateLimited => id.outcome = AuthOutcome::KratosRateLimited,
            }
        }
        id
    }

    /// The Kratos credential on a request, in Kratos's order: `X-Session-Token`, the session
    /// cookie, `Authorization: Bearer` (only with `kratos.bearer_tokens`, and only for the app).
    pub fn kratos_credential<'a>(&self, req: &'a RequestHeader, audience: Audience) -> Option<Credential<'a>> {
        let kratos = self.kratos.as_ref()?;
        if let Some(t) = req.headers.get(headers::X_SESSION_TOKEN).and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty()) {
            return Some(Credential::SessionToken(t));
        }
        if let Some(c) = cookies::find(req, kratos.cookie_name()) {
            return Some(Credential::Cookie(c));
        }
        if !self.bearer_tokens || audience == Audience::OwnEndpoint {
            return None;
        }
        let auth = req.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = auth.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| Credential::Bearer(token.trim()))
    }
}
