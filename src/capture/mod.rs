//! Analytics recording, off the request path: the [`request_event::RequestEvent`] the logging
//! phase hands over, the bounded queue and batching [`writer`], enrichment ([`device`],
//! [`geo`]), [`aggregate`]ion into one pipeline per batch, the Lua [`session_scripts`] that
//! start, touch and end sessions exactly once, the per-user [`user_behavior`] aggregates, and
//! the [`session_lifecycle`] (expiry listener, sweep). Also the access log's record and enrichment ([`log_record`]).
//!
//! May use: `identity` (the `Identity` an event carries), `store`, `config`, `observe`.

pub mod acquisition;
pub mod aggregate;
pub mod alerts;
pub mod daily_cap;
pub mod detect;
pub mod device;
pub mod enforce;
pub mod geo;
pub mod journey;
pub mod log_record;
pub mod privacy;
pub mod replay;
pub mod request_event;
pub mod retention;
pub mod session_lifecycle;
pub mod session_scripts;
pub mod user_behavior;
pub mod writer;
