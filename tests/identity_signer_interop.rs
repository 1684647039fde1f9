//! Our signer agrees with the real Flask-Session signer (installed from PyPI), on random
//! secrets and sids of both shapes, generated fresh on every run.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use sting_proxy::identity::flask_cookie::CookieSigner;

fn real_cookies(version: FlaskSession, cases: &[(String, String)]) -> Vec<String> {
    let input = serde_json::to_vec(&cases.iter().map(|(secret, sid)| serde_json::json!({"secret": secret, "sid": sid})).collect::<Vec<_>>()).unwrap();
    let mut child = Command::new(venv_python(version))
        .arg(repo_root().join("tests/python/sign_cookies.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cases() -> Vec<(String, String)> {
    (0..200)
        .map(|i| {
            let secret = format!("secret-{}-{}", i, uuid::Uuid::new_v4());
            let sid = if i % 2 == 0 {
                uuid::Uuid::new_v4().to_string()
            } else {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
            };
            (secret, sid)
        })
        .collect()
}

/// 200 random (secret, sid) pairs: identical cookies from Flask-Session 0.8 and from us, and we
/// verify every one of theirs.
#[test]
fn signer_matches_flask_session_08() {
    let cases = cases();
    for ((secret, sid), theirs) in cases.iter().zip(real_cookies(FlaskSession::V08, &cases)) {
        let ours = CookieSigner::signed(secret.as_str(), &[]);
        assert_eq!(ours.sign(sid), theirs);
        assert_eq!(ours.verify(&theirs), Ok(sid.as_str()));
    }
}

/// The same against Flask-Session 0.6 (the pickle-era releases sign identically).
#[test]
fn signer_matches_flask_session_06() {
    let cases = cases();
    for ((secret, sid), theirs) in cases.iter().zip(real_cookies(FlaskSession::V06, &cases)) {
        assert_eq!(CookieSigner::signed(secret.as_str(), &[]).sign(sid), theirs);
    }
}
