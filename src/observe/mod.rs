//! What operators read about the running proxy: Prometheus metrics, the access log, and text
//! made safe to print.
//!
//! May use: nothing of this crate. Every other layer uses it; the types it needs from above
//! (auth outcomes, a request's line, its client's device and country) come in as a trait
//! ([`metrics::FixedLabel`]), plain data ([`access_log::Record`]) or a function
//! ([`access_log::Enrich`]).

pub mod access_log;
pub mod log_limit;
pub mod metrics;
pub mod printable;
