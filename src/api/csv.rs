//! `?format=csv`: any API answer as an RFC 4180 table (header row, CRLF line ends, quoted where
//! needed), safe to open in a spreadsheet: a text cell starting with `=`, `+`, `-`, `@`, a tab or
//! a carriage return gets a leading `'` so it is never taken for a formula. Pure.
//!
//! Which table: the answer's arrays of objects (one → its rows; several → their rows with a
//! first column `table` naming the array); an answer without one is a single row of its fields.
//! Nested objects become `parent.child` columns; nested arrays a JSON cell.

use serde_json::{Map, Value};

/// The content type of a CSV answer.
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// The answer `v` as CSV text.
pub fn from_json(v: &Value) -> String {
    let (columns, rows) = table(v);
    let mut out = String::new();
    push_row(&mut out, columns.iter().map(|c| Value::String(c.clone())).collect::<Vec<_>>().iter());
    for row in &rows {
        push_row(&mut out, columns.iter().map(|c| row.get(c).unwrap_or(&Value::Null)));
    }
    out
}

/// The header and the rows (flattened) of `v`.
pub fn table(v: &Value) -> (Vec<String>, Vec<Map<String, Value>>) {
    let Some(obj) = v.as_object() else { return (vec!["value".into()], vec![Map::from_iter([("value".to_owned(), v.clone())])]) };
    let tables: Vec<(&String, &Vec<Value>)> =
        obj.iter().filter_map(|(k, v)| v.as_array().map(|a| (k, a))).filter(|(_, a)| !a.is_empty() && a.iter().all(Value::is_object)).collect();
    let mut rows = Vec::new();
    let several = tables.len() > 1;
    if tables.is_empty() {
        let mut row = Map::new();
        flatten("", v, &mut row);
        rows.push(row);
    }
    for (name, items) in &tables {
        for item in items.iter() {
            let mut row = Map::new();
            if several {
                row.insert("table".into(), Value::String((*name).clone()));
            }
            flatten("", item, &mut row);
            rows.push(row);
        }
    }
    // `table` first; the rest in name order (JSON objects here keep their keys sorted).
    let mut columns: Vec<String> = if several { vec!["table".into()] } else { Vec::new() };
    for row in &rows {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    (columns, rows)
}

fn flatten(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match child {
                    Value::Object(_) => flatten(&name, child, out),
                    other => {
                        out.insert(name, other.clone());
                    }
                }
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

fn push_row<'a>(out: &mut String, cells: impl Iterator<Item = &'a Value>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// One cell: text is guarded against formulas and quoted when it holds `,`, `"`, CR or LF;
/// numbers and booleans as JSON writes them; null empty; arrays as JSON text.
fn push_cell(out: &mut String, v: &Value) {
    let text = match v {
        Value::Null => return,
        Value::String(s) => guard(s),
        Value::Number(n) => return out.push_str(&n.to_string()),
        Value::Bool(b) => return out.push_str(if *b { "true" } else { "false" }),
        other => guard(&other.to_string()),
    };
    if text.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

/// `'` before text a spreadsheet would take for a formula.
pub fn guard(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_with_a_header_crlf_and_quoting() {
        let v = serde_json::json!({"period": "day", "pages": [
            {"name": "/a,b", "count": 3, "unique_sessions": 2},
            {"name": "=HYPERLINK(\"x\")", "count": -1, "unique_sessions": null},
        ]});
        assert_eq!(from_json(&v), "count,name,unique_sessions\r\n3,\"/a,b\",2\r\n-1,\"'=HYPERLINK(\"\"x\"\")\",\r\n");
    }

    #[test]
    fn several_tables_nested_objects_and_plain_answers() {
        let v = serde_json::json!({"browsers": [{"name": "Chrome", "count": 2}], "os": [{"name": "+Linux", "count": 1}], "bots": 0});
        assert_eq!(from_json(&v), "table,count,name\r\nbrowsers,2,Chrome\r\nos,1,'+Linux\r\n");
        let v = serde_json::json!({"sessions": [{"session_id": "s", "location": {"country": "GB", "city": "@x"}}]});
        assert_eq!(from_json(&v), "location.city,location.country,session_id\r\n'@x,GB,s\r\n");
        let v = serde_json::json!({"active_sessions": 3, "timestamp": "t", "tags": ["a"]});
        assert_eq!(from_json(&v), "active_sessions,tags,timestamp\r\n3,\"[\"\"a\"\"]\",t\r\n");
        for (s, want) in [("-1", "'-1"), ("@a", "'@a"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("a=b", "a=b")] {
            assert_eq!(guard(s), want);
        }
    }
}
