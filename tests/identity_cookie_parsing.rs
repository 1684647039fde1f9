//! The proxy picks the session cookie the app will use: its parser gives the same answer as
//! Werkzeug's `parse_cookie` (run in the Flask test venv) on a generated corpus of tricky
//! `Cookie` headers (issue 12, item 4). Pure parsing plus one Python process.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{venv_python, FlaskSession};
use sting_proxy::identity::cookies::find_in;

/// A small deterministic generator (xorshift), so every run checks the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Headers built from pieces that trip lenient parsers: repeated and empty names, quotes that
/// span `;`, escapes, stray spaces, tabs, `=` and `"` in odd places.
fn corpus() -> Vec<String> {
    let mut headers: Vec<String> = [
        "session=; session=AAA.sig",
        "session=AAA.sig; session=BBB.sig",
        "session=\"AAA;BBB\"; session=CCC",
        "x=\"a;session=EVIL\"; session=GOOD",
        "session=\"\\101\\102C\"",
        "session=a b; session=C",
        "session = A ; b=1",
        "session=\"A\"x; session=C",
        "session",
        "session;session=X",
        "=session=X; session=Y",
        "session=\"unterminated; session=Z",
        "session=\"a\\\"b\"; session=Q",
        "\tsession\t=\tT\t;",
        "a=1,session=COMMA",
        "session=\"\"; session=E",
        "session==X",
        "session=X=Y",
        ";;;session=S;;;",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let names = ["session", "session", "Session", "sessionx", "x", "", " session", "session "];
    let seps = ["=", " = ", "", "=\t", "=="];
    let values = ["AAA.sig", "", "\"q;r\"", "\"\\141b\"", "a b", "\"x\"y", "\"", "\\", "v\"w", "-wbIh.x", "=", "\"\\\"\""];
    let joins = ["; ", ";", " ;", ";;", ", ", "\t;\t", "; ; "];
    let mut rng = Rng(0x5eed_cafe_f00d);
    for _ in 0..3000 {
        let n = 1 + rng.next() % 4;
        let mut h = String::new();
        for i in 0..n {
            if i > 0 {
                h.push_str(rng.pick(&joins));
            }
            h.push_str(rng.pick(&names));
            h.push_str(rng.pick(&seps));
            h.push_str(rng.pick(&values));
        }
        headers.push(h);
    }
    headers
}

/// Werkzeug and the proxy name the same session (or none) for every header of the corpus.
#[test]
fn proxy_and_werkzeug_pick_the_same_session_cookie() {
    let headers = corpus();
    let mut child = Command::new(venv_python(FlaskSession::V08))
        .arg(common::repo_root().join("tests/python/werkzeug_cookie.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run Werkzeug");
    let spec = serde_json::json!({"name": "session", "headers": headers});
    child.stdin.take().unwrap().write_all(spec.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "werkzeug_cookie.py failed");
    let werkzeug: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(werkzeug.len(), headers.len());
    let mut differ = Vec::new();
    for (h, w) in headers.iter().zip(&werkzeug) {
        let ours = find_in(h.as_bytes(), "session").map(|v| v.into_owned());
        if &ours != w {
            differ.push(format!("{h:?}: werkzeug {w:?}, proxy {ours:?}"));
        }
    }
    assert!(differ.is_empty(), "{} of {} headers differ:\n{}", differ.len(), headers.len(), differ.join("\n"));
    // The corpus exercises the cases that matter: several answers each way.
    assert!(werkzeug.iter().filter(|w| w.is_none()).count() > 100 && werkzeug.iter().filter(|w| w.is_some()).count() > 100);
}
