//! Who is calling. The Flask-Session cookie (signer, stored-value decoders for pickle, msgpack
//! and JSON, the sid → identity resolver and its cache), then Kratos (`whoami` with single
//! flight, the store's circuit breaker and per-client lookup limits), combined by
//! [`authenticate`] into an [`Identity`] and an [`AuthOutcome`]; plus the cookie and
//! identity-header vocabulary.
//!
//! May use: `store`, `config`, `observe`.

pub mod authenticate;
mod caller;
pub mod client_limit;
pub mod cookies;
pub mod flask_cookie;
pub mod headers;
pub mod kratos;
pub mod pickle_fields;
pub mod revocation;
pub mod session_id;
pub mod session_lookup;
pub mod session_value;
pub mod single_flight;

pub use caller::*;
