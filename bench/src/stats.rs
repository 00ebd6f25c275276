//! Latency bookkeeping: the open-loop send schedule, coordinated-omission-corrected recording and
//! the percentiles the report prints.
//!
//! Open loop means every request has an *intended* send time fixed before the run starts. A
//! request that goes out late because the previous one on its connection was slow is still timed
//! from its intended time, so a stall shows up in the tail instead of silently lowering the
//! offered rate (the "coordinated omission" that closed-loop generators suffer from).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram keeps exactly (larger values are clamped): 60 s in nanoseconds.
const MAX_TRACKABLE_NS: u64 = 60_000_000_000;

/// The global schedule of a fixed-rate run: request `j` is due at `j / rate` after the start,
/// and connection `k` of `connections` carries the requests with `j % connections == k`.
/// Together the connections offer exactly `rate` requests per second, evenly spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate_per_sec: f64,
    connections: usize,
    total: u64,
}

impl Schedule {
    /// `rate_per_sec` and `connections` must be positive; `total` is the number of requests in
    /// the run across all connections.
    pub fn new(rate_per_sec: f64, connections: usize, total: u64) -> Self {
        assert!(rate_per_sec > 0.0, "schedule rate must be positive");
        assert!(connections > 0, "schedule needs at least one connection");
        Self {
            rate_per_sec,
            connections,
            total,
        }
    }

    /// A schedule of `rate_per_sec` for `duration` (rounded down to whole requests).
    pub fn for_duration(rate_per_sec: f64, connections: usize, duration: Duration) -> Self {
        let total = (rate_per_sec * duration.as_secs_f64()).floor() as u64;
        Self::new(rate_per_sec, connections, total)
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn connections(&self) -> usize {
        self.connections
    }

    /// How many requests connection `conn` carries.
    pub fn requests_on(&self, conn: usize) -> u64 {
        let c = self.connections as u64;
        let k = conn as u64;
        if k >= c {
            return 0;
        }
        self.total / c + u64::from(k < self.total % c)
    }

    /// Offset from the start of the run at which the `i`-th request of connection `conn` is due.
    pub fn offset(&self, conn: usize, i: u64) -> Duration {
        let j = i * self.connections as u64 + conn as u64;
        Duration::from_secs_f64(j as f64 / self.rate_per_sec)
    }
}

/// Records one run's latencies: `corrected` from the intended send time (what a user of an
/// open-loop service sees), `service` from the moment the request actually went out, and the
/// sender's own lateness (timer wake-up) so the report can say how much of the corrected figure
/// is the generator rather than the subject.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    pub corrected: Histogram<u64>,
    pub service: Histogram<u64>,
    pub send_lag: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    pub fn new() -> Self {
        Self {
            corrected: new_histogram(),
            service: new_histogram(),
            send_lag: new_histogram(),
        }
    }

    /// One request: due at `intended`, written at `sent` (never before `intended`), answered
    /// completely at `done`.
    pub fn record(&mut self, intended: Instant, sent: Instant, done: Instant) {
        self.corrected
            .saturating_record(nanos(done.saturating_duration_since(intended)));
        self.service
            .saturating_record(nanos(done.saturating_duration_since(sent)));
        self.send_lag
            .saturating_record(nanos(sent.saturating_duration_since(intended)));
    }

    /// Merges another connection's recorder into this one.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Same bounds on both sides, so addition cannot fail.
        self.corrected
            .add(&other.corrected)
            .expect("histograms share bounds");
        self.service
            .add(&other.service)
            .expect("histograms share bounds");
        self.send_lag
            .add(&other.send_lag)
            .expect("histograms share bounds");
    }
}

/// A histogram for nanosecond latencies from 1 ns to 60 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3).expect("constant bounds are valid")
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        if h.is_empty() {
            return Self {
                count: 0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                max_us: 0.0,
            };
        }
        Self {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// p50 and p99 of a handful of samples (policy propagation: 20 tries), nearest-rank.
pub fn small_sample_percentiles(samples: &[Duration]) -> Option<(Duration, Duration)> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |q: f64| {
        let r = (q * sorted.len() as f64).ceil() as usize;
        sorted[r.clamp(1, sorted.len()) - 1]
    };
    Some((rank(0.50), rank(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_requests_evenly_across_connections() {
        let s = Schedule::new(1000.0, 8, 20);
        let per_conn: Vec<u64> = (0..8).map(|k| s.requests_on(k)).collect();
        assert_eq!(per_conn, vec![3, 3, 3, 3, 2, 2, 2, 2]);
        assert_eq!(per_conn.iter().sum::<u64>(), 20);
        assert_eq!(s.requests_on(8), 0);
    }

    #[test]
    fn union_of_connection_schedules_is_uniform_at_the_rate() {
        let s = Schedule::new(4000.0, 3, 10);
        let mut offsets: Vec<Duration> = (0..3)
            .flat_map(|k| (0..s.requests_on(k)).map(move |i| s.offset(k, i)))
            .collect();
        offsets.sort();
        for (j, off) in offsets.iter().enumerate() {
            let expected = Duration::from_micros(250 * j as u64);
            let diff = off.abs_diff(expected);
            assert!(diff < Duration::from_nanos(10), "request {j} at {off:?}");
        }
    }

    #[test]
    fn schedule_for_duration_counts_whole_requests() {
        let s = Schedule::for_duration(1000.0, 8, Duration::from_millis(2500));
        assert_eq!(s.total(), 2500);
        assert_eq!(s.connections(), 8);
    }

    #[test]
    fn a_stall_is_charged_to_every_request_queued_behind_it() {
        // 1 connection, one request due every 10 ms; the first answer takes 100 ms, the rest
        // 1 ms each once they can go out. A closed-loop generator would record one slow
        // request; timed from the intended send, the queued ones are slow too.
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut rec = LatencyRecorder::new();
        let mut free_at = start;
        for i in 0..10u32 {
            let intended = start + ms(10) * i;
            let sent = intended.max(free_at);
            let done = sent + if i == 0 { ms(100) } else { ms(1) };
            rec.record(intended, sent, done);
            free_at = done;
        }
        let corrected = Percentiles::of(&rec.corrected);
        let service = Percentiles::of(&rec.service);
        // Request i (1..9) is due at 10i ms and done at 100 + i ms: latency 100 - 9i ms.
        assert!(
            (corrected.max_us - 100_000.0).abs() < 100.0,
            "{corrected:?}"
        );
        assert!(corrected.p50_us > 50_000.0, "{corrected:?}");
        assert!(service.p50_us < 1_100.0, "{service:?}");
        assert_eq!(corrected.count, 10);
        let lag = Percentiles::of(&rec.send_lag);
        assert!(lag.max_us > 80_000.0, "{lag:?}");
    }

    #[test]
    fn percentiles_of_known_values() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99_us - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_us - 1000.0).abs() <= 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()).count, 0);
    }

    #[test]
    fn merged_recorders_add_counts() {
        let t = Instant::now();
        let mut a = LatencyRecorder::new();
        let mut b = LatencyRecorder::new();
        a.record(t, t, t + Duration::from_micros(10));
        b.record(t, t, t + Duration::from_micros(30));
        a.merge(&b);
        assert_eq!(a.corrected.len(), 2);
        assert!((Percentiles::of(&a.corrected).max_us - 30.0).abs() < 0.1);
    }

    #[test]
    fn small_sample_percentiles_use_nearest_rank() {
        let ms = Duration::from_millis;
        let samples: Vec<Duration> = (1..=20).map(ms).collect();
        assert_eq!(small_sample_percentiles(&samples), Some((ms(10), ms(20))));
        assert_eq!(small_sample_percentiles(&[ms(7)]), Some((ms(7), ms(7))));
        assert_eq!(small_sample_percentiles(&[]), None);
    }
}
