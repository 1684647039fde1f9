//! The module tree keeps its layers (issue 11): every `crate::` path in `src/` is read, folder by
//! folder and file by file, and checked against the layer order that `src/lib.rs` states. Pure
//! file reading; no process is started.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders from the top layer down; each may use only folders after it, except `observe`,
/// which all may use and which uses none. `config` may use `observe` only.
const LAYERS: &[&str] = &["gateway", "ops", "api", "capture", "identity", "store", "config"];

/// `gateway` and `ops` are side by side at the top: neither uses the other.
fn allowed(from: &str, to: &str) -> bool {
    if from == to || to == "observe" {
        return true;
    }
    if from == "observe" {
        return false;
    }
    if (from, to) == ("gateway", "ops") || (from, to) == ("ops", "gateway") {
        return false;
    }
    let pos = |f: &str| LAYERS.iter().position(|l| *l == f);
    match (pos(from), pos(to)) {
        (Some(a), Some(b)) => b > a,
        _ => false,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/identity/kratos.rs` → `identity::kratos`; `src/identity/mod.rs` → `identity`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).filter(|p| p != "mod").collect();
    parts.join("::")
}

/// Every `crate::a::b` path a file names (code and doc links alike), as `a::b` (or `a` for a
/// re-export from a folder's `mod.rs`). Lines of `//` comments that are not doc links are skipped.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") && !code.contains("[`crate::") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let path: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            if let Some(first) = segs.first() {
                // A module is lower-case; `crate::identity::Identity` names the folder.
                let second = segs.get(1).filter(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
                out.insert(match second {
                    Some(s) => format!("{first}::{s}"),
                    None => (*first).to_owned(),
                });
            }
        }
    }
    out
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut map = BTreeMap::new();
    for f in files {
        let m = module_of(&src, &f);
        if m == "lib" || m == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let deps: BTreeSet<String> = crate_paths(&text).into_iter().filter(|d| *d != m).collect();
        map.insert(m, deps);
    }
    map
}

fn folder(m: &str) -> &str {
    m.split("::").next().unwrap()
}

/// Every use of another folder points down the layer order.
#[test]
fn folders_only_point_down() {
    let mut bad = Vec::new();
    for (m, deps) in edges() {
        for d in deps {
            if !allowed(folder(&m), folder(&d)) {
                bad.push(format!("{m} uses {d}"));
            }
        }
    }
    assert!(bad.is_empty(), "uses that point up or sideways:\n{}", bad.join("\n"));
}

/// The files a folder's `mod.rs` re-exports with `pub use file::*`: a path such as
/// `crate::identity::Identity` is a use of those.
fn reexports() -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for dir in std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(dir.join("mod.rs")).unwrap_or_default();
        let files =
            text.lines().filter_map(|l| l.trim().strip_prefix("pub use ").and_then(|r| r.strip_suffix("::*;"))).map(|f| format!("{name}::{f}")).collect();
        out.insert(name, files);
    }
    out
}

/// No two files use each other, directly or through others.
#[test]
fn no_circles_between_files() {
    let g = edges();
    let re = reexports();
    let targets = |d: &str| -> Vec<String> { re.get(d).cloned().unwrap_or_else(|| vec![d.to_owned()]) };
    // 1: on the walk's stack, 2: done.
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, t: &dyn Fn(&str) -> Vec<String>, st: &mut BTreeMap<String, u8>, path: &mut Vec<String>) {
        match st.get(n) {
            Some(2) => return,
            Some(_) => {
                let start = path.iter().position(|p| p == n).unwrap();
                panic!("a circle of uses: {} -> {n}", path[start..].join(" -> "));
            }
            None => {}
        }
        st.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            for target in t(d) {
                if target != n {
                    visit(&target, g, t, st, path);
                }
            }
        }
        path.pop();
        st.insert(n.to_owned(), 2);
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        visit(n, &g, &targets, &mut state, &mut Vec::new());
    }
    assert!(state.len() >= 40, "the walk saw every file: {}", state.len());
}

/// The checker itself catches what it must: an upward use, a sideways use, `observe` using
/// anything, and a path inside a doc link.
#[test]
fn the_checker_sees_bad_uses() {
    assert!(!allowed("store", "identity") && !allowed("ops", "gateway") && !allowed("observe", "config") && !allowed("config", "store"));
    assert!(allowed("gateway", "api") && allowed("store", "observe") && allowed("capture", "identity") && allowed("config", "observe"));
    let paths =
        crate_paths("use crate::identity::{AuthOutcome, Identity};\n//! see [`crate::api::queries`]\n// crate::gateway::proxy\nlet x = crate::store::keys::X;");
    assert_eq!(paths.into_iter().collect::<Vec<_>>(), vec!["api::queries", "identity", "store::keys"]);
}
