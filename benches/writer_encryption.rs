//! The analytics writer's own work per event with field encryption off and on: events are
//! summed into batches (`Batch::add_request`) and each batch is turned into its Redis pipeline
//! (`Batch::to_pipeline`, where addresses and emails are sealed as Fernet tokens), exactly as
//! the writer does, without Redis (whose time does not depend on encryption). Prints events/s
//! for both, the median of 9 runs each, alternated, and their ratio.
//!
//! Run: `cargo bench --bench writer_encryption` (release profile). Reproducible: fixed inputs,
//! one thread.

use std::sync::Arc;
use std::time::Instant;

use sting_proxy::capture::aggregate::{Batch, Enriched, WriteSettings};
use sting_proxy::capture::device;
use sting_proxy::capture::geo::Location;
use sting_proxy::capture::privacy::Privacy;
use sting_proxy::capture::request_event::{RequestEvent, SessionSignal};
use sting_proxy::capture::{acquisition, journey, retention};
use sting_proxy::config::Config;
use sting_proxy::identity::{AuthSource, Identity};

const EVENTS_PER_BATCH: usize = 1_000;
const SESSIONS_PER_BATCH: usize = 100;
const BATCHES: usize = 40;
const RUNS: usize = 9;
/// A fixed key (Fernet.generate_key() format); the bench needs no secrecy.
const KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

fn privacy(keys: &str) -> Privacy {
    let env = |k: &str| match k {
        "SESSION_SECRET_KEY" => Some("bench-secret".to_owned()),
        "ANALYTICS_ENCRYPTION_KEYS" if !keys.is_empty() => Some(keys.to_owned()),
        _ => None,
    };
    Privacy::new(&Config::load_with_env(None, env).expect("bench config"))
}

fn events() -> Vec<RequestEvent> {
    (0..EVENTS_PER_BATCH)
        .map(|i| {
            let s = i % SESSIONS_PER_BATCH;
            RequestEvent {
                ts_ms: 1_764_000_000_000 + i as i64,
                sid: Some(format!("session-{s:04}")),
                identity: Some(Arc::new(Identity {
                    user_id: format!("user-{s}"),
                    email: Some(format!("user-{s}@example.com")),
                    role: None,
                    session_id: format!("session-{s:04}"),
                    source: AuthSource::FlaskSession,
                    aal: None,
                    methods: vec![],
                    authenticated_at: None,
                })),
                method: http::Method::GET,
                path: format!("/items/{}", i % 20),
                template: "/items/:id".into(),
                request_id: format!("r{i}"),
                auth_outcome: "flask_cache_hit",
                failed_credential: None,
                status: 200,
                latency_us: 900,
                upstream_latency_us: Some(700),
                bytes_in: 0,
                bytes_out: 512,
                ip: Some(format!("81.2.{}.{}", s / 250, s % 250 + 1).parse().unwrap()),
                user_agent: None,
                referrer: Some("https://news.example.org/story?id=1".into()),
                query: (i % 10 == 0).then(|| "utm_source=newsletter&utm_medium=email&utm_campaign=winter".into()),
                host: Some("app.example".into()),
                navigation: true,
                gpc: false,
                dnt: false,
                signal: SessionSignal::None,
            }
        })
        .collect()
}

/// Events per second for `BATCHES` batches built and turned into pipelines.
fn run(settings: &WriteSettings, events: &[RequestEvent], dev: &device::Device, loc: &Location) -> f64 {
    let started = Instant::now();
    let mut commands = 0;
    let mut caps = acquisition::AcquisitionCaps::new(100);
    let (mut landed, mut known) = (journey::Landed::default(), retention::KnownUsers::default());
    for _ in 0..BATCHES {
        let mut b = Batch::default();
        for ev in events {
            b.add_request(&Enriched { event: ev, template: &ev.template, page_view: true, action: None, private: false, device: dev, location: loc });
            // As the writer does (issue 17): a session's first page view this process sees may be
            // its landing, whose source is parsed and capped.
            if let Some(sid) = ev.sid.as_deref().filter(|sid| landed.candidate(sid, false)) {
                let mut source = acquisition::source(ev.referrer.as_deref(), ev.host.as_deref(), ev.query.as_deref());
                caps.cap(ev.ts_ms, &mut source);
                b.add_landing(sid, ev.ts_ms, source, false);
            }
        }
        b.keep_new_retention(&mut known);
        commands += b.to_pipeline(settings).cmd_iter().count();
    }
    assert!(commands > 0);
    (BATCHES * EVENTS_PER_BATCH) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let settings = |p: Privacy| WriteSettings {
        ttl_secs: 30 * 86_400,
        anonymous_ttl_secs: 86_400,
        actions_cap: 100,
        idle_timeout_ms: 1_800_000,
        detect: None,
        replay_cap: 500,
        auth_burst_window_secs: 0,
        privacy: Arc::new(p),
        acquisition_all_navigations: false,
    };
    let (off, on) = (settings(privacy("")), settings(privacy(KEY)));
    let evs = events();
    let dev = device::parse("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0");
    let loc = Location { country: Some("GB".into()), city: Some("London".into()), point: None, asn: None };
    run(&off, &evs, &dev, &loc);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        a.push(run(&off, &evs, &dev, &loc));
        b.push(run(&on, &evs, &dev, &loc));
    }
    let (a, b) = (median(a), median(b));
    println!("writer events/s ({BATCHES} batches of {EVENTS_PER_BATCH} events, {SESSIONS_PER_BATCH} signed-in sessions each; median of {RUNS})");
    println!("| encryption | events/s | ratio |");
    println!("|---|---|---|");
    println!("| off | {a:.0} | 1.00 |");
    println!("| on (email, ip_address) | {b:.0} | {:.2} |", b / a);
}
