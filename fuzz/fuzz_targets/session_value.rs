//! Feeds arbitrary bytes to the session-value decoder, as if read from Redis. The decoder must
//! return, never panic, overflow the stack or allocate without bound; libFuzzer reports any of
//! those (run with `-rss_limit_mb` and `-timeout` to catch the last two).
//!
//! Seed the corpus with real values (e.g. the pickle hex constants in `src/identity/pickle_fields.rs`)
//! to get past the format detection quickly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sting_proxy::identity::session_value::{decode, FieldNames};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, &FieldNames::default(), 1 << 20);
});
