//! Redis: the shared, cloneable [`RedisStore`] handle (timeouts, reconnects, batched scans) and
//! every key name the proxy reads or writes ([`keys`]).
//!
//! May use: `config`, `observe`.

mod handle;
pub mod keys;

pub use handle::*;
