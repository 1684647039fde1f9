//! Feeds arbitrary request paths to the normalisation that authorisation rules match on. It
//! must return, never panic; what it returns starts with `/`, has no empty, `.` or `..`
//! segment, and is stable (normalising it again changes nothing a rule could see).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sting_proxy::config::rules::route_path;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Some(p) = route_path(path) {
        assert!(p.starts_with('/'));
        assert!(!p.split('/').any(|s| s == "." || s == ".."));
        assert!(!p.contains("//"));
    }
});
