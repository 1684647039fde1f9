//! Works out who is calling, cheapest layer first: the Flask-Session cookie (signature, memory,
//! Redis), then a Kratos credential (memory, Redis, whoami). I/O via the layers it calls.

use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::identity::cookies;
use crate::identity::headers;
use crate::identity::kratos::{AnswerSource, Credential, KratosClient, KratosOutcome, WhoamiAnswer};
use crate::identity::revocation::{self, Revocations};
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
    /// A credential of a refused session was presented, revoked or awaiting a step-up (the
    /// gateway must not forward it).
    pub refused: bool,
    /// An invalid credential (bad signature, refused by Kratos, revoked): the first 8 bytes of
    /// its SHA-256, so the analytics writer can count distinct ones per address
    /// (`auth_failure_burst`) without keeping the credential.
    pub failed_credential: Option<[u8; 8]>,
    pub outcome: AuthOutcome,
}

/// The first 8 bytes of a SHA-256 fingerprint.
fn short(fp: [u8; 32]) -> [u8; 8] {
    fp[..8].try_into().expect("32 > 8")
}

/// The fingerprint of a refused Flask cookie or session id (tagged apart from Kratos's).
fn flask_fingerprint(value: &str) -> [u8; 8] {
    use sha2::Digest;
    short(sha2::Sha256::new().chain_update(b"f:").chain_update(value.as_bytes()).finalize().into())
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
    /// Where a session held for a step-up is sent (Kratos's AAL2 login flow, refreshed).
    step_up_url: String,
}

impl Authenticator {
    pub fn new(cookie_name: String, sessions: SessionResolver, kratos: Option<KratosClient>, bearer_tokens: bool, revocations: Arc<Revocations>) -> Self {
        Self { cookie_name, sessions, kratos, bearer_tokens, revocations, step_up_url: String::new() }
    }

    /// Sends sessions held for a step-up to `url` (see [`step_up_url`]).
    pub fn with_step_up_url(mut self, url: String) -> Self {
        self.step_up_url = url;
        self
    }

    /// The authenticator `cfg` describes, on `store`, refusing `revocations`.
    pub fn from_config(cfg: &crate::config::Config, store: RedisStore, revocations: Arc<Revocations>) -> Result<Self, reqwest::Error> {
        let sessions = SessionResolver::new(&cfg.session, store.clone());
        let kratos = if cfg.kratos.public_url.is_empty() {
            None
        } else {
            Some(KratosClient::new(&cfg.kratos, store, std::time::Duration::from_secs(cfg.session.cache_ttl_seconds))?)
        };
        Ok(Self::new(cfg.session.cookie_name.clone(), sessions, kratos, cfg.kratos.bearer_tokens, revocations)
            .with_step_up_url(step_up_url(&cfg.kratos.public_url)))
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
                    id.refused = true;
                    id.failed_credential = Some(flask_fingerprint(&identity.session_id));
                }
                SessionLookup::User { identity, cached } => {
                    id.flask_sid = Some(identity.session_id.clone());
                    id.outcome = if cached { AuthOutcome::FlaskCacheHit } else { AuthOutcome::FlaskRedisHit };
                    if let Some(since) = self.revocations.step_up_since(&identity.session_id) {
                        if !self.stepped_up(req, client, audience, &identity, since).await {
                            self.hold_for_step_up(req, &mut id);
                            return id;
                        }
                    }
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
                SessionLookup::BadCookie(_) => {
                    id.outcome = AuthOutcome::BadSignature;
                    id.failed_credential = Some(flask_fingerprint(&value));
                }
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
                        id.refused = true;
                        id.failed_credential = self.kratos_credential(req, audience).map(|c| short(c.fingerprint()));
                    }
                    WhoamiAnswer::Authenticated { identity, .. } => {
                        if let Some(since) = self.revocations.step_up_since(&identity.session_id) {
                            if !self.stepped_up(req, client, audience, identity, since).await {
                                self.hold_for_step_up(req, &mut id);
                                return id;
                            }
                        }
                        id.identity = Some(Arc::new(identity.clone()));
                        id.outcome = if from == AnswerSource::Kratos { AuthOutcome::KratosCall } else { AuthOutcome::KratosCacheHit };
                    }
                    WhoamiAnswer::Unauthenticated => {
                        id.outcome = AuthOutcome::KratosUnauthenticated;
                        id.failed_credential = self.kratos_credential(req, audience).map(|c| short(c.fingerprint()));
                    }
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

    /// Whether the session `held` (held for a step-up since `since_ms`) has since authenticated
    /// again at AAL2: asked of Kratos itself (the cached answer predates the step-up), with the
    /// request's Kratos credential, which must be the same user's (and, for a Kratos session,
    /// the same session): a thief's own AAL2 account clears nothing. Clears the mark everywhere
    /// when it has.
    async fn stepped_up(&self, req: &RequestHeader, client: Option<IpAddr>, audience: Audience, held: &Identity, since_ms: i64) -> bool {
        let sid = held.session_id.as_str();
        let (Some(kratos), Some(cred)) = (&self.kratos, self.kratos_credential(req, audience)) else {
            return false;
        };
        kratos.forget(self.kratos_credential(req, audience).expect("found above")).await;
        let fresh = match kratos.resolve(cred, client).await {
            KratosOutcome::Answer { answer, .. } => match answer.as_ref() {
                WhoamiAnswer::Authenticated { identity, .. } => {
                    let same = identity.user_id == held.user_id && (held.source != crate::identity::AuthSource::Kratos || identity.session_id == sid);
                    same && identity.aal.as_deref() == Some("aal2") && identity.authenticated_at.is_some_and(|t| t * 1000 >= since_ms - STEP_UP_CLOCK_SLACK_MS)
                }
                _ => false,
            },
            _ => false,
        };
        if fresh {
            self.revocations.remove_step_up(sid);
            if let Err(e) = revocation::publish_stepped_up(self.sessions.store(), sid).await {
                tracing::warn!(error = %e, session_id = sid, "could not announce a completed step-up; other instances keep asking Kratos");
            }
            tracing::info!(session_id = sid, "session stepped up to AAL2");
        }
        fresh
    }

    /// Refuses a session held for a step-up: anonymous, its credentials not forwarded, and sent
    /// to Kratos's AAL2 flow where a login is required.
    fn hold_for_step_up(&self, req: &RequestHeader, id: &mut Identification) {
        id.outcome = AuthOutcome::StepUpRequired;
        id.refused = true;
        id.aal2_required = Some(Some(with_return_to(&self.step_up_url, "return_to", req)));
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

/// Kratos's clock and ours may differ by this much.
const STEP_UP_CLOCK_SLACK_MS: i64 = 5_000;

/// Kratos's browser login flow for AAL2, re-authenticating (`refresh=true`) even a session
/// already at AAL2; empty without Kratos.
pub fn step_up_url(kratos_public_url: &str) -> String {
    if kratos_public_url.is_empty() {
        return String::new();
    }
    format!("{kratos_public_url}/self-service/login/browser?aal=aal2&refresh=true")
}

/// `url` with `param` set to the request's path and query: where a login (or Kratos's step-up,
/// `return_to`, checked by Kratos against its allowed return URLs) sends the browser back.
pub fn with_return_to(url: &str, param: &str, req: &RequestHeader) -> String {
    let original = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let sep = if url.contains('?') { '&' } else { '?' };
    let query: String = form_urlencoded::Serializer::new(String::new()).append_pair(param, original).finish();
    format!("{url}{sep}{query}")
}
