//! Client load for the failover tests: threads that browse a public page and a protected one
//! through several proxy instances and count what they were answered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the load threads saw.
#[derive(Default)]
struct Tally {
    public_ok: AtomicU64,
    public_failed: AtomicU64,
    protected_ok: AtomicU64,
    protected_503: AtomicU64,
    protected_other: AtomicU64,
    /// The answers counted in `protected_other`: status codes, or the client's error.
    other_answers: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Unix ms of the latest protected failure.
    last_failure_ms: AtomicU64,
}

pub fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis() as u64
}

/// Running load; [`FailoverLoad::finish`] stops it and sums it up.
pub struct FailoverLoad {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<JoinHandle<()>>,
}

/// The figures of one failover run.
#[derive(Debug)]
pub struct Figures {
    pub public_ok: u64,
    pub public_failed: u64,
    pub protected_ok: u64,
    pub protected_503: u64,
    pub protected_other: u64,
    /// What the `protected_other` answers were (status or error) and how many of each.
    pub other_answers: std::collections::BTreeMap<String, u64>,
    /// From the kill to the last protected failure (0 when none failed).
    pub recovered_after_s: f64,
}

impl Figures {
    /// The guarantees of a failover, checked and printed (`label`: which one, and how long
    /// promotion took): no public failure, no error but the app's own 500 page or the proxy's
    /// 503, nothing counted twice, and at most a fraction of a second's page views lost (async
    /// replication: what the dead master acknowledged and had not yet sent to its replica).
    /// `recorded` is the day's page views after the writers settled.
    pub fn check(&self, label: &str, recorded: i64) {
        let answered = self.page_views_answered() as i64;
        let lost = answered - recorded;
        println!("{label}: {self:?}; page views answered {answered} recorded {recorded} lost {lost}");
        assert_eq!(self.public_failed, 0, "public pages fail open");
        // The app's own Redis client fails too while its master is gone: Flask's 500 page comes
        // through; the proxy itself answers 200 or 503, never another error.
        assert!(self.other_answers.keys().all(|a| a.starts_with("500 <!doctype html>")), "answers not from the app: {:?}", self.other_answers);
        assert!(recorded <= answered, "never counted twice: recorded {recorded} > answered {answered}");
        assert!(lost * 20 <= answered, "lost {lost} of {answered}");
    }

    /// Page views the clients were answered with 200 (each one is counted by the proxy).
    pub fn page_views_answered(&self) -> u64 {
        self.public_ok + self.protected_ok
    }
}

impl FailoverLoad {
    /// `threads` clients spread over `bases` (proxy base URLs), each with one of `cookies` for
    /// the protected page `protected_path`; the public page is `/`.
    pub fn start(bases: &[String], cookies: &[String], protected_path: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..threads)
            .map(|t| {
                let (base, cookie, stop, tally) = (bases[t % bases.len()].clone(), cookies[t % cookies.len()].clone(), stop.clone(), tally.clone());
                let protected = format!("{base}{protected_path}");
                std::thread::spawn(move || {
                    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        match c.get(format!("{base}/")).header("accept", "text/html").send() {
                            Ok(r) if r.status() == 200 => tally.public_ok.fetch_add(1, Ordering::Relaxed),
                            _ => tally.public_failed.fetch_add(1, Ordering::Relaxed),
                        };
                        let counter = match c.get(&protected).header("cookie", format!("session={cookie}")).header("accept", "text/html").send() {
                            Ok(r) if r.status() == 200 => &tally.protected_ok,
                            Ok(r) if r.status() == 503 => &tally.protected_503,
                            other => {
                                let what = match other {
                                    Ok(r) => format!("{} {}", r.status().as_u16(), r.text().unwrap_or_default().chars().take(60).collect::<String>()),
                                    Err(e) => format!("error: {e}"),
                                };
                                *tally.other_answers.lock().unwrap().entry(what).or_default() += 1;
                                &tally.protected_other
                            }
                        };
                        if !std::ptr::eq(counter, &tally.protected_ok) {
                            tally.last_failure_ms.store(now_ms(), Ordering::Relaxed);
                        }
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        FailoverLoad { stop, tally, threads }
    }

    /// Waits until protected pages have answered 200 for `quiet` in a row after `killed_ms`
    /// (panics after `within`).
    pub fn wait_recovered(&self, killed_ms: u64, quiet: Duration, within: Duration) {
        let give_up = Instant::now() + within;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let last = self.tally.last_failure_ms.load(Ordering::Relaxed).max(killed_ms);
            if now_ms().saturating_sub(last) > quiet.as_millis() as u64 {
                return;
            }
            assert!(Instant::now() < give_up, "protected pages still failing {within:?} after the kill");
        }
    }

    /// Stops the clients and sums up, timing recovery from `killed_ms`.
    pub fn finish(self, killed_ms: u64) -> Figures {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let t = &self.tally;
        let last = t.last_failure_ms.load(Ordering::Relaxed);
        Figures {
            public_ok: t.public_ok.load(Ordering::Relaxed),
            public_failed: t.public_failed.load(Ordering::Relaxed),
            protected_ok: t.protected_ok.load(Ordering::Relaxed),
            protected_503: t.protected_503.load(Ordering::Relaxed),
            protected_other: t.protected_other.load(Ordering::Relaxed),
            other_answers: t.other_answers.lock().unwrap().clone(),
            recovered_after_s: if last > killed_ms { (last - killed_ms) as f64 / 1000.0 } else { 0.0 },
        }
    }
}

/// Polls `recorded` until it reaches `answered` or 20 s pass; its last reading.
pub fn settle_count(answered: i64, mut recorded: impl FnMut() -> i64) -> i64 {
    let start = Instant::now();
    loop {
        let r = recorded();
        if r >= answered || start.elapsed() > Duration::from_secs(20) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
