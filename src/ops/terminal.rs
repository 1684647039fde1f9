//! Human output of the ops CLI: aligned text tables and a progress line for long scans. Pure
//! (tables) and stderr only (progress).

use std::io::{IsTerminal, Write};

use crate::observe::printable::sanitize;

/// A text table: a header row and data rows, columns padded to their widest cell. Columns whose
/// cells are all numbers (or `-`) are right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let cell = |r: &Vec<String>, i: usize| r.get(i).map(|c| sanitize(c)).unwrap_or_default();
        let widths: Vec<usize> =
            (0..cols).map(|i| self.rows.iter().map(|r| cell(r, i).chars().count()).chain([self.header[i].chars().count()]).max().unwrap_or(0)).collect();
        let numeric: Vec<bool> = (0..cols)
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        let c = cell(r, i);
                        c == "-" || c.parse::<f64>().is_ok()
                    })
            })
            .collect();
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = (0..cols)
                .map(|i| if numeric[i] { format!("{:>w$}", cell(r, i), w = widths[i]) } else { format!("{:<w$}", cell(r, i), w = widths[i]) })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines, keys padded to the longest.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{:<w$}  {}\n", format!("{k}:"), sanitize(v), w = w + 1)).collect()
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A progress line on stderr, shown only when stderr is a terminal (scripts and CI logs stay
/// clean), overwritten in place and cleared by [`Progress::done`].
pub struct Progress {
    enabled: bool,
    shown: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self { enabled: std::io::stderr().is_terminal(), shown: false }
    }

    pub fn update(&mut self, message: &str) {
        if self.enabled {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2K{}", sanitize(message));
            let _ = e.flush();
            self.shown = true;
        }
    }

    pub fn done(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.shown = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_neutralise_control_characters() {
        let mut t = Table::new(&["PAGE", "VIEWS"]);
        t.row(vec!["/".into(), "5".into()]);
        t.row(vec!["/users/:id\x1b[31m".into(), "12".into()]);
        let out = t.render();
        assert_eq!(out, "PAGE             VIEWS\n/                    5\n/users/:id?[31m     12\n");
        assert_eq!(key_values(&[("a", "1".into()), ("long", "x\ny".into())]), "a:     1\nlong:  x?y\n");
        assert_eq!(cell(&serde_json::Value::Null), "-");
        assert_eq!(cell(&serde_json::json!("s")), "s");
        assert_eq!(cell(&serde_json::json!(3)), "3");
    }
}
