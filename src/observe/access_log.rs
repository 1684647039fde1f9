//! The access log: one line per request, `json` (default) or Apache/nginx `combined` with the
//! user id in `%u`, to stdout or a file reopened on SIGHUP (for logrotate). The request path
//! only copies a few fields into a bounded queue (`try_send`; a full queue drops the line and
//! counts it); a background thread enriches (User-Agent and GeoIP, through the [`Enrich`]
//! function the capture layer hands to [`start`]) and writes. Cookies, query strings, tokens and
//! secrets are never logged. I/O.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use crate::observe::printable::push_json_string;

/// Lines waiting for the writer thread; beyond this they are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 65_536;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Combined,
}

/// What one line needs, borrowed from the request's record (the capture layer's
/// `RequestEvent`, shared with the analytics writer: nothing is copied for the log).
pub struct Record<'a> {
    pub ts_ms: i64,
    pub request_id: &'a str,
    pub ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub latency_us: u64,
    pub upstream_latency_us: Option<u64>,
    pub user_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub auth: &'static str,
    pub user_agent: Option<&'a str>,
    pub referrer: Option<&'a str>,
}

/// Anything the log can take a line from: the request's own record, shared by reference count
/// between the log and the analytics writer.
pub trait LogSource: Send + Sync + 'static {
    fn log_record(&self) -> Record<'_>;
}

/// A queued line: the shared request record.
pub type Line = std::sync::Arc<dyn LogSource>;

/// What the JSON format adds about the client, derived from its User-Agent and address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTraits {
    /// The client address as the log shows it (`server.access_log_ip`: full, truncated,
    /// hashed, or none).
    pub client: Option<String>,
    /// Shared with the enricher's cache of parsed agents (no copy per line).
    pub ua_family: Option<Arc<str>>,
    pub os: Option<Arc<str>>,
    pub device: Option<&'static str>,
    pub country: Option<String>,
}

/// Derives [`ClientTraits`] for a line, on the writer thread (it may cache what it parses).
pub type Enrich = Box<dyn FnMut(Option<&str>, Option<IpAddr>) -> ClientTraits + Send>;

/// Hands lines to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct AccessLogHandle {
    tx: SyncSender<Line>,
}

impl AccessLogHandle {
    /// Queues the line without waiting. The writer thread is never woken for it: it comes
    /// round by itself within [`BATCH_INTERVAL`] while lines keep coming.
    pub fn record(&self, r: Line) {
        if self.tx.try_send(r).is_err() {
            crate::observe::metrics::metrics().access_log_dropped.inc();
        }
    }
}

/// Set by the SIGHUP handler; the writer reopens its file at the next line.
pub static REOPEN: AtomicBool = AtomicBool::new(false);

/// Starts the writer thread. `path` empty = stdout.
pub fn start(format: Format, path: &str, enrich: Enrich) -> std::io::Result<AccessLogHandle> {
    let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
    let path = (!path.is_empty()).then(|| PathBuf::from(path));
    let out = open(path.as_ref())?;
    std::thread::Builder::new().name("access-log".into()).spawn(move || write_loop(rx, format, path, out, enrich))?;
    Ok(AccessLogHandle { tx })
}

fn open(path: Option<&PathBuf>) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match path {
        Some(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?) as Box<dyn Write + Send>,
        None => Box::new(std::io::stdout()),
    })
}

/// While lines keep coming, the writer thread naps this long between drains, then writes
/// everything queued in one `write`: a busy proxy makes at most one log write (and no
/// cross-thread wake-up) per interval instead of one per request. A quiet proxy's first line
/// is written at once.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);

/// Lines buffered before a write, whatever the interval (the buffer's size).
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

fn write_loop(rx: Receiver<Line>, format: Format, path: Option<PathBuf>, out: Box<dyn Write + Send>, mut enrich: Enrich) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    // The lines' text, reused: no allocation per line.
    let mut text = String::with_capacity(WRITE_BUFFER_BYTES);
    loop {
        // Idle: block until a line comes (that one wake-up is the only one a quiet proxy pays).
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                reopen_if_asked(&mut out, path.as_ref());
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        // Busy: write what is queued, nap, and drain again until a nap brings nothing. The
        // senders find no one waiting on the channel and wake no one.
        while next.is_some() {
            reopen_if_asked(&mut out, path.as_ref());
            text.clear();
            while let Some(line) = next {
                let r = line.log_record();
                let traits = enrich(r.user_agent, r.ip);
                match format {
                    Format::Json => write_json_line(&mut text, &r, &traits),
                    Format::Combined => write_combined_line(&mut text, &r, &traits),
                }
                drop(line);
                if text.len() >= WRITE_BUFFER_BYTES - 4096 {
                    let _ = out.write_all(text.as_bytes());
                    text.clear();
                }
                next = rx.try_recv().ok();
            }
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            std::thread::sleep(BATCH_INTERVAL);
            next = rx.try_recv().ok();
        }
    }
    let _ = out.flush();
}

fn reopen_if_asked(out: &mut BufWriter<Box<dyn Write + Send>>, path: Option<&PathBuf>) {
    if path.is_some() && REOPEN.swap(false, Ordering::Relaxed) {
        let _ = out.flush();
        match open(path) {
            Ok(f) => *out = BufWriter::new(f),
            Err(e) => tracing::error!(error = %e, "cannot reopen the access log; keeping the old file"),
        }
    }
}

/// One JSON object per line.
pub fn json_line(r: &Record, traits: &ClientTraits) -> String {
    let mut out = String::with_capacity(512);
    write_json_line(&mut out, r, traits);
    out
}

/// Appends [`json_line`]'s line to `out` without building a JSON value or allocating (`out` is
/// reused line after line). Keys in sorted order and absent fields left out, byte for byte what
/// `serde_json` made of the same object before (a property test compares them).
pub fn write_json_line(out: &mut String, r: &Record, traits: &ClientTraits) {
    use std::fmt::Write;
    let mut first = true;
    let mut key = |out: &mut String, k: &str| {
        out.push_str(if first { "{\"" } else { ",\"" });
        first = false;
        out.push_str(k);
        out.push_str("\":");
    };
    let text = |out: &mut String, k: &str, v: Option<&str>, key: &mut dyn FnMut(&mut String, &str)| {
        if let Some(v) = v {
            key(out, k);
            push_json_string(out, v);
        }
    };
    text(out, "auth", Some(r.auth), &mut key);
    key(out, "bytes");
    let _ = write!(out, "{}", r.bytes_out);
    key(out, "bytes_in");
    let _ = write!(out, "{}", r.bytes_in);
    text(out, "client_ip", traits.client.as_deref(), &mut key);
    text(out, "country", traits.country.as_deref(), &mut key);
    text(out, "device", traits.device, &mut key);
    key(out, "latency_ms");
    json_f64(out, r.latency_us as f64 / 1000.0);
    text(out, "method", Some(r.method), &mut key);
    text(out, "os", traits.os.as_deref(), &mut key);
    text(out, "path", Some(r.path), &mut key);
    text(out, "referrer", r.referrer, &mut key);
    text(out, "request_id", Some(r.request_id), &mut key);
    text(out, "route", Some(r.route), &mut key);
    text(out, "session_id", r.session_id, &mut key);
    key(out, "status");
    let _ = write!(out, "{}", r.status);
    key(out, "time");
    write_iso(out, r.ts_ms);
    text(out, "ua_family", traits.ua_family.as_deref(), &mut key);
    if let Some(u) = r.upstream_latency_us {
        key(out, "upstream_latency_ms");
        json_f64(out, u as f64 / 1000.0);
    }
    text(out, "user_id", r.user_id, &mut key);
    out.push_str("}\n");
}

/// A float as `serde_json` writes it (shortest round-trip form, `1.0` not `1`).
fn json_f64(out: &mut String, v: f64) {
    use std::fmt::Write;
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// `"2026-11-30T13:05:00.000Z"` without allocating; the text up to the second is made once per
/// second (lines come in time order, many per second).
fn write_iso(out: &mut String, ts_ms: i64) {
    use chrono::{Datelike, Timelike};
    use std::cell::RefCell;
    use std::fmt::Write;
    thread_local! {
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let (second, millis) = (ts_ms.div_euclid(1000), ts_ms.rem_euclid(1000));
    SECOND.with_borrow_mut(|(at, text)| {
        if *at != second {
            let t = chrono::DateTime::from_timestamp(second, 0).unwrap_or_default();
            text.clear();
            let _ = write!(text, "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.", t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second());
            *at = second;
        }
        out.push_str(text);
    });
    out.push((b'0' + (millis / 100) as u8) as char);
    out.push((b'0' + (millis / 10 % 10) as u8) as char);
    out.push((b'0' + (millis % 10) as u8) as char);
    out.push_str("Z\"");
}

/// nginx-style escaping for a quoted or bare field, appended to `out`: `"`, `\\` and bytes
/// outside printable ASCII as `\\xHH`; with `bare`, spaces too (so `%u` stays one field). An
/// empty field is `-`.
fn push_escaped(out: &mut String, s: &str, bare: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if s.is_empty() {
        out.push('-');
        return;
    }
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {}
            b' ' if bare => {}
            0x20..=0x7e => {
                out.push(b as char);
                continue;
            }
            _ => {}
        }
        out.push_str("\\x");
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"` (Apache/nginx combined).
pub fn combined_line(r: &Record, traits: &ClientTraits) -> String {
    let mut out = String::with_capacity(256);
    write_combined_line(&mut out, r, traits);
    out
}

/// Appends [`combined_line`]'s line to `out` without allocating.
pub fn write_combined_line(out: &mut String, r: &Record, traits: &ClientTraits) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let t = chrono::DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default();
    out.push_str(traits.client.as_deref().unwrap_or("-"));
    out.push_str(" - ");
    push_escaped(out, r.user_id.unwrap_or(""), true);
    let _ = write!(out, " [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] \"", t.day(), MONTHS[t.month0() as usize], t.year(), t.hour(), t.minute(), t.second());
    push_escaped(out, r.method, true);
    out.push(' ');
    push_escaped(out, r.path, true);
    let _ = write!(out, " HTTP/1.1\" {} ", r.status);
    if r.bytes_out == 0 {
        out.push('-');
    } else {
        let _ = write!(out, "{}", r.bytes_out);
    }
    out.push_str(" \"");
    push_escaped(out, r.referrer.unwrap_or(""), false);
    out.push_str("\" \"");
    push_escaped(out, r.user_agent.unwrap_or(""), false);
    out.push_str("\"\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The line as `serde_json` made it before the hand-written writer: the oracle.
    fn serde_json_line(r: &Record, traits: &ClientTraits) -> String {
        let iso = chrono::DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut v = serde_json::json!({
            "time": iso,
            "request_id": r.request_id,
            "client_ip": traits.client,
            "method": r.method,
            "path": r.path,
            "route": r.route,
            "status": r.status,
            "bytes": r.bytes_out,
            "bytes_in": r.bytes_in,
            "latency_ms": r.latency_us as f64 / 1000.0,
            "upstream_latency_ms": r.upstream_latency_us.map(|u| u as f64 / 1000.0),
            "user_id": r.user_id,
            "session_id": r.session_id,
            "auth": r.auth,
            "ua_family": traits.ua_family.as_deref(),
            "os": traits.os.as_deref(),
            "device": traits.device,
            "country": traits.country,
            "referrer": r.referrer,
        });
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        let mut s = v.to_string();
        s.push('\n');
        s
    }

    proptest! {
        #[test]
        fn hand_written_json_lines_are_serde_jsons_bytes(
            ts in 0i64..4_102_444_800_000,
            path in "\\PC{0,40}|[\\x00-\\x1f\"\\\\]{0,8}",
            user in proptest::option::of("\\PC{0,12}"),
            referrer in proptest::option::of("[ -~\\x00-\\x1f]{0,20}"),
            client in proptest::option::of("[0-9.:a-f]{0,20}"),
            latency in 0u64..100_000_000,
            upstream in proptest::option::of(0u64..10_000_000),
            status in 100u16..600,
            bytes in 0u64..u64::MAX,
        ) {
            let r = Record {
                ts_ms: ts,
                request_id: "r-1",
                ip: None,
                method: "GET",
                path: &path,
                route: &path,
                status,
                bytes_out: bytes,
                bytes_in: 7,
                latency_us: latency,
                upstream_latency_us: upstream,
                user_id: user.as_deref(),
                session_id: user.as_deref(),
                auth: "flask_cache_hit",
                user_agent: None,
                referrer: referrer.as_deref(),
            };
            let traits = ClientTraits { client, ua_family: Some("Chrome".into()), os: None, device: Some("desktop"), country: Some("GB".into()) };
            prop_assert_eq!(json_line(&r, &traits), serde_json_line(&r, &traits));
        }
    }

    fn record() -> Record<'static> {
        Record {
            ts_ms: 1_796_043_900_000,
            request_id: "r1",
            ip: Some("81.2.69.1".parse().unwrap()),
            method: "GET",
            path: "/users/7",
            route: "/users/:id",
            status: 200,
            bytes_out: 512,
            bytes_in: 0,
            latency_us: 1500,
            upstream_latency_us: Some(1200),
            user_id: Some("al ice\""),
            session_id: Some("s1"),
            auth: "flask_cache_hit",
            user_agent: Some("Mozilla/5.0 \"x\""),
            referrer: None,
        }
    }

    /// The combined line as it was made before the writer into a reused buffer: the oracle.
    fn formatted_combined_line(r: &Record, traits: &ClientTraits) -> String {
        fn escape(s: &str, bare: bool) -> String {
            let mut out = String::new();
            for b in s.bytes() {
                match b {
                    b'"' | b'\\' => out.push_str(&format!("\\x{b:02X}")),
                    b' ' if bare => out.push_str("\\x20"),
                    0x20..=0x7e => out.push(b as char),
                    _ => out.push_str(&format!("\\x{b:02X}")),
                }
            }
            if out.is_empty() {
                out.push('-');
            }
            out
        }
        let t = chrono::DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default().format("%d/%b/%Y:%H:%M:%S %z");
        let opt = |v: Option<&str>, bare: bool| v.map(|s| escape(s, bare)).unwrap_or_else(|| "-".into());
        format!(
            "{} - {} [{t}] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\"\n",
            traits.client.as_deref().unwrap_or("-"),
            opt(r.user_id, true),
            escape(r.method, true),
            escape(r.path, true),
            r.status,
            if r.bytes_out == 0 { "-".to_owned() } else { r.bytes_out.to_string() },
            opt(r.referrer, false),
            opt(r.user_agent, false),
        )
    }

    proptest! {
        #[test]
        fn combined_lines_are_the_formatted_lines_bytes(
            ts in 0i64..4_102_444_800_000,
            path in "\\PC{0,40}|[\\x00-\\x1f\"\\\\ ]{0,8}",
            user in proptest::option::of("\\PC{0,12}"),
            ua in proptest::option::of("[ -~\\x00-\\x1f\\x7f-\\u{ff}]{0,20}"),
            bytes in 0u64..3,
        ) {
            let r = Record { ts_ms: ts, path: &path, user_id: user.as_deref(), user_agent: ua.as_deref(), referrer: ua.as_deref(), bytes_out: bytes, ..record() };
            let traits = ClientTraits { client: Some("81.2.69.1".into()), ..Default::default() };
            prop_assert_eq!(combined_line(&r, &traits), formatted_combined_line(&r, &traits));
        }
    }

    struct Owned(String);
    impl LogSource for Owned {
        fn log_record(&self) -> Record<'_> {
            Record { request_id: &self.0, ..record() }
        }
    }

    #[test]
    fn batched_writes_keep_every_line_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = start(Format::Json, path.to_str().unwrap(), Box::new(|_, _| ClientTraits::default())).unwrap();
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        log.record(std::sync::Arc::new(Owned(format!("t{t}-{i}"))));
                        if i % 1000 == 0 {
                            std::thread::sleep(BATCH_INTERVAL * 2);
                        }
                    }
                })
            })
            .collect();
        senders.into_iter().for_each(|s| s.join().unwrap());
        assert_eq!(crate::observe::metrics::metrics().access_log_dropped.get(), 0);
        drop(log);
        // The writer thread writes what is queued, sees the channel closed, flushes and ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() >= 20_000 || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let ids: Vec<String> =
            lines.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<usize> = ids.iter().filter_map(|id| id.strip_prefix(&format!("t{t}-"))).map(|n| n.parse().unwrap()).collect();
            assert_eq!(mine, (0..5_000).collect::<Vec<_>>(), "thread {t}'s lines, once each and in order");
        }
    }

    #[test]
    fn combined_lines_keep_one_field_per_slot() {
        let line = combined_line(&record(), &ClientTraits { client: Some("81.2.69.1".into()), ..Default::default() });
        assert_eq!(line, "81.2.69.1 - al\\x20ice\\x22 [30/Nov/2026:13:05:00 +0000] \"GET /users/7 HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0 \\x22x\\x22\"\n");
    }

    #[test]
    fn json_lines_carry_the_fields() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&record(), &ClientTraits { country: Some("GB".into()), ..Default::default() })).unwrap();
        assert_eq!((v["route"].as_str(), v["user_id"].as_str(), v["country"].as_str()), (Some("/users/:id"), Some("al ice\""), Some("GB")));
        assert_eq!(v["latency_ms"], 1.5);
        assert!(v.get("referrer").is_none(), "absent fields are left out");
    }
}
