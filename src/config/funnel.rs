//! What a funnel is allowed to be, for `[[analytics.funnels]]` and `POST /api/analytics/funnels`
//! alike: a short name safe inside a Redis key, and 2 or more distinct steps, each a route
//! template (`/signup`) or an action name. Also the version a definition is counted under.
//! Pure.

use sha1::{Digest, Sha1};

/// Longest funnel name.
pub const MAX_NAME: usize = 64;

/// Longest step (a route template or an action name).
pub const MAX_STEP: usize = 200;

/// A funnel name: `[a-z0-9_-]`, 1 to [`MAX_NAME`] characters (it is part of Redis keys).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks one definition; the message names what is wrong.
pub fn check(name: &str, steps: &[String], max_steps: usize) -> Result<(), String> {
    if !valid_name(name) {
        return Err(format!("funnel name {name:?} must be 1 to {MAX_NAME} of a-z, 0-9, '_' and '-'"));
    }
    if steps.len() < 2 || steps.len() > max_steps {
        return Err(format!("funnel {name:?} must have from 2 to {max_steps} steps"));
    }
    for (i, step) in steps.iter().enumerate() {
        if step.is_empty() || step.len() > MAX_STEP || !step.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!("funnel {name:?}: step {} must be 1 to {MAX_STEP} printable ASCII characters without spaces", i + 1));
        }
        if steps[..i].contains(step) {
            return Err(format!("funnel {name:?}: step {step:?} appears twice"));
        }
    }
    Ok(())
}

/// The stored definition: a JSON array of the steps.
pub fn definition_json(steps: &[String]) -> String {
    serde_json::to_string(steps).unwrap_or_else(|_| "[]".into())
}

/// The version a definition's counts are kept under: the first 8 hex digits of the SHA-1 of its
/// stored JSON (the journey script computes the same with `redis.sha1hex`).
pub fn version(definition_json: &str) -> String {
    hex::encode(&Sha1::digest(definition_json.as_bytes())[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_checked() {
        let steps = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check("signup", &steps(&["/", "/signup", "login"]), 10).is_ok());
        assert!(check("Sign Up", &steps(&["/", "/signup"]), 10).is_err());
        assert!(check("a:b", &steps(&["/", "/signup"]), 10).is_err());
        assert!(check("x", &steps(&["/"]), 10).is_err());
        assert!(check("x", &steps(&["/", "/"]), 10).is_err());
        assert!(check("x", &steps(&["/", "a b"]), 10).is_err());
        assert!(check("x", &steps(&["/a", "/b", "/c"]), 2).is_err());
        assert_eq!(definition_json(&steps(&["/", "login"])), r#"["/","login"]"#);
        // sha1('["/","login"]') starts so (checked against Redis's redis.sha1hex in the tests).
        assert_eq!(version(r#"["/","login"]"#).len(), 8);
    }
}
