//! Redis: the shared, cloneable [`RedisStore`] handle (timeouts, reconnects, batched scans; one
//! server, Redis Cluster or Sentinel, see [`connection`]) and
//! every key name the proxy reads or writes ([`keys`]), and the [`circuit_breaker`] its fail
//! fast shares with the Kratos client.
//!
//! May use: `config`, `observe`.

pub mod circuit_breaker;
pub mod connection;
pub mod field_cipher;
mod handle;
pub mod keys;
mod sentinel_watch;

pub use handle::*;
