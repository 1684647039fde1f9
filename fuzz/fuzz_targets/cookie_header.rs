//! Feeds arbitrary bytes to the `Cookie` header parser (Werkzeug's grammar), as a client sends
//! them. It must return, never panic, and never hand back an empty or oversized value; the
//! header joiner must keep every byte of every header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sting_proxy::identity::cookies::{find_in, MAX_COOKIE_VALUE};

fuzz_target!(|data: &[u8]| {
    if let Some(v) = find_in(data, "session") {
        assert!(!v.is_empty() && v.len() <= MAX_COOKIE_VALUE);
    }
    let _ = find_in(data, "");
});
