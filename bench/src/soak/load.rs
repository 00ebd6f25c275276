//! The load: keep-alive and new-connection workers on OS threads, each request's outcome
//! classified into the ledger as it happens.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::outcome::{Cause, Counts, Windows};
use super::report::FailureSample;
use crate::echo::MESSAGE_SIZE;
use crate::loadgen::{echo_connection, one_shot, round_trip};

/// Keep-alive connections, and the round trips each does per second.
const KEEP_ALIVE_CONNECTIONS: usize = 4;
const KEEP_ALIVE_RPS: f64 = 25.0;
/// Workers opening a new connection per request, and the requests each makes per second.
const NEW_CONNECTION_WORKERS: usize = 2;
const NEW_CONNECTION_RPS: f64 = 25.0;

/// Failures of cause "other" kept with their error, for the report.
const OTHER_SAMPLES: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSettings {
    pub keep_alive_connections: usize,
    pub keep_alive_rps_each: f64,
    pub new_connection_workers: usize,
    pub new_connection_rps_each: f64,
    pub total_rps: f64,
}

impl LoadSettings {
    pub(super) fn current() -> Self {
        Self {
            keep_alive_connections: KEEP_ALIVE_CONNECTIONS,
            keep_alive_rps_each: KEEP_ALIVE_RPS,
            new_connection_workers: NEW_CONNECTION_WORKERS,
            new_connection_rps_each: NEW_CONNECTION_RPS,
            total_rps: KEEP_ALIVE_CONNECTIONS as f64 * KEEP_ALIVE_RPS
                + NEW_CONNECTION_WORKERS as f64 * NEW_CONNECTION_RPS,
        }
    }
}

/// Outcomes of every request, by minute, classified as they happen.
pub(super) struct Ledger {
    start: Instant,
    pub(super) windows: Windows,
    pub(super) minutes: Vec<Counts>,
    pub(super) other: Vec<FailureSample>,
}

impl Ledger {
    pub(super) fn new(start: Instant, minutes: u32) -> Self {
        Self {
            start,
            windows: Windows::default(),
            minutes: vec![Counts::default(); minutes as usize],
            other: Vec::new(),
        }
    }

    /// The minute `at` falls in; requests that end after the last minute count in it.
    fn minute(&mut self, at: Instant) -> &mut Counts {
        let i = (at.duration_since(self.start).as_secs() / 60) as usize;
        let last = self.minutes.len() - 1;
        &mut self.minutes[i.min(last)]
    }

    fn ok(&mut self, at: Instant) {
        self.minute(at).ok += 1;
    }

    fn failed(&mut self, started: Instant, ended: Instant, load: &str, error: &anyhow::Error) {
        let (start, end) = (
            started.duration_since(self.start),
            ended.duration_since(self.start),
        );
        let cause = self.windows.classify(start, end);
        self.minute(ended).add(cause);
        if cause == Cause::Other && self.other.len() < OTHER_SAMPLES {
            self.other.push(FailureSample {
                start_s: start.as_secs_f64(),
                end_s: end.as_secs_f64(),
                load: load.into(),
                error: format!("{error:#}"),
            });
        }
    }
}

pub(super) fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // A panicking load thread leaves the counts usable.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The load threads: each sends at a fixed rate (a late tick is not made up), and a failed
/// keep-alive connection is opened again at the next tick.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub(super) fn start(target: SocketAddr, ledger: &Arc<Mutex<Ledger>>, start: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for k in 0..KEEP_ALIVE_CONNECTIONS {
            let (stop, ledger) = (stop.clone(), ledger.clone());
            let offset = k as f64 / KEEP_ALIVE_CONNECTIONS as f64;
            threads.push(thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                let req = [k as u8; MESSAGE_SIZE];
                ticks(&stop, start, KEEP_ALIVE_RPS, offset, || {
                    let t0 = Instant::now();
                    let r = keep_alive_request(&mut conn, target, &req);
                    match r {
                        Ok(()) => lock(&ledger).ok(Instant::now()),
                        Err(e) => {
                            conn = None;
                            lock(&ledger).failed(t0, Instant::now(), "keep-alive", &e);
                        }
                    }
                });
            }));
        }
        for k in 0..NEW_CONNECTION_WORKERS {
            let (stop, ledger) = (stop.clone(), ledger.clone());
            let offset = (k as f64 + 0.5) / NEW_CONNECTION_WORKERS as f64;
            threads.push(thread::spawn(move || {
                ticks(&stop, start, NEW_CONNECTION_RPS, offset, || {
                    let t0 = Instant::now();
                    match one_shot(target) {
                        Ok(_) => lock(&ledger).ok(Instant::now()),
                        Err(e) => lock(&ledger).failed(t0, Instant::now(), "new connection", &e),
                    }
                });
            }));
        }
        Self { stop, threads }
    }

    /// Stops every thread after its request in flight (each is bounded by the socket
    /// timeouts).
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn keep_alive_request(
    conn: &mut Option<TcpStream>,
    target: SocketAddr,
    req: &[u8; MESSAGE_SIZE],
) -> anyhow::Result<()> {
    let stream = match conn {
        Some(s) => s,
        None => conn.insert(echo_connection(target)?),
    };
    round_trip(stream, req).context("round trip on a keep-alive connection")
}

/// Calls `f` `rate` times a second from `start` (shifted by `offset` of a period) until
/// `stop`.
fn ticks(stop: &AtomicBool, start: Instant, rate: f64, offset: f64, mut f: impl FnMut()) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut next = start + period.mul_f64(offset);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        f();
        next += period;
        // After a stall, carry on from now rather than sending the missed requests at once.
        if next < Instant::now() {
            next = Instant::now() + period;
        }
    }
}
