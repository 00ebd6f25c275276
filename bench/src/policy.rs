//! Scenario 5, policy propagation: how long after a deny intention is written to the agent the
//! pair refuses the next new connection, and closes a connection that was already open.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::echo::MESSAGE_SIZE;
use crate::loadgen::{echo_connection, one_shot, round_trip};
use crate::stats::small_sample_percentiles;
use crate::tandem::TandemPair;

/// How long one try waits for the deny to take effect.
const TRY_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between probes, so probing does not starve the proxies of the 2 cores.
const PROBE_INTERVAL: Duration = Duration::from_micros(500);
/// Quiet time between re-allowing and the next deny. The proxy spaces consecutive answers of a
/// watch at least 20 ms apart (`proxy/src/watcher.rs` `MIN_SPACING`); a deny written right
/// after the allow would measure that spacing, not propagation.
const SETTLE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Propagation {
    pub tries: usize,
    /// Tries in which the deny took effect within the per-try timeout.
    pub took_effect: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub samples_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyResult {
    pub timeout_ms: f64,
    pub new_connections: Propagation,
    pub open_connections: Propagation,
    /// Set when no open connection was ever closed by a deny.
    pub open_connections_note: Option<String>,
}

/// Runs `tries` rounds of allow -> deny -> measure -> allow again.
pub fn measure(pair: &TandemPair, tries: usize) -> anyhow::Result<PolicyResult> {
    let target = pair.listen;
    let mut new_samples = Vec::new();
    let mut open_samples = Vec::new();
    for i in 0..tries {
        pair.set_intention("allow")?;
        wait_until(target, true).map_err(|e| e.context(format!("try {i}: re-allowing")))?;
        let mut open = echo_connection(target)?;
        round_trip(&mut open, &[1u8; MESSAGE_SIZE])?;
        std::thread::sleep(SETTLE);

        let t0 = Instant::now();
        pair.set_intention("deny")?;
        let (new_refused, open_closed) = probe_until_denied(target, &mut open, t0);
        if let Some(d) = new_refused {
            new_samples.push(d);
        }
        if let Some(d) = open_closed {
            open_samples.push(d);
        }
    }
    pair.set_intention("allow")?;
    let open_note = open_samples.is_empty().then(|| {
        format!(
            "not supported: an open connection was still served {} ms after the deny in every try",
            TRY_TIMEOUT.as_millis()
        )
    });
    Ok(PolicyResult {
        timeout_ms: TRY_TIMEOUT.as_secs_f64() * 1e3,
        new_connections: summarize(tries, &new_samples),
        open_connections: summarize(tries, &open_samples),
        open_connections_note: open_note,
    })
}

/// Probes a new connection and the open one alternately until each is refused or the try
/// times out. Returns the time from `t0` to each refusal.
fn probe_until_denied(
    target: SocketAddr,
    open: &mut TcpStream,
    t0: Instant,
) -> (Option<Duration>, Option<Duration>) {
    let mut new_refused = None;
    let mut open_closed = None;
    while t0.elapsed() < TRY_TIMEOUT && (new_refused.is_none() || open_closed.is_none()) {
        if new_refused.is_none() && one_shot(target).is_err() {
            new_refused = Some(t0.elapsed());
        }
        if open_closed.is_none() && round_trip(open, &[2u8; MESSAGE_SIZE]).is_err() {
            open_closed = Some(t0.elapsed());
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    (new_refused, open_closed)
}

/// Waits until new connections through `target` are answered (`allowed`) or refused.
fn wait_until(target: SocketAddr, allowed: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if one_shot(target).is_ok() == allowed {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    anyhow::bail!(
        "connections through {target} still {} 10 s after the intention changed",
        if allowed { "refused" } else { "answered" }
    )
}

fn summarize(tries: usize, samples: &[Duration]) -> Propagation {
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let pcts = small_sample_percentiles(samples);
    Propagation {
        tries,
        took_effect: samples.len(),
        p50_ms: pcts.map(|(p50, _)| ms(p50)),
        p99_ms: pcts.map(|(_, p99)| ms(p99)),
        samples_ms: samples.iter().map(|&d| ms(d)).collect(),
    }
}
