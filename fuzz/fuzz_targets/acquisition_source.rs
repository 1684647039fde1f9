//! Feeds arbitrary `Referer`, `Host` and query strings to the acquisition parser. It must
//! return, never panic; what it keeps is a bare lowercase domain (or `(direct)`) and UTM values
//! that are short and printable, so nothing a client sends can put a URL, a path or control
//! characters into the analytics keys.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sting_proxy::capture::acquisition::{source, MAX_DOMAIN, MAX_TAG};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let (referrer, host, query) = (parts.next(), parts.next(), parts.next());
    let s = source(referrer, host, query);
    let r = &s.referrer;
    assert!(r == "(direct)" || (r.len() <= MAX_DOMAIN && !r.contains(['/', '?', '#', '@', ' ']) && *r == r.to_ascii_lowercase()));
    for tag in [&s.utm_source, &s.utm_medium, &s.utm_campaign] {
        assert!(tag.chars().count() <= MAX_TAG);
        assert!(!tag.chars().any(char::is_control));
    }
});
