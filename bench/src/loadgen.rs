//! The load generator. It runs on plain OS threads with blocking sockets, one thread per
//! connection: `std::thread::sleep` wakes within tens of microseconds, where tokio's timer wheel
//! rounds every wake-up to a millisecond, which would drown the fraction of a millisecond a
//! proxy pair adds. Every loop is bounded in count and in time.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::echo::{CHUNK, MESSAGE_SIZE, MODE_DOWNLOAD, MODE_ECHO, MODE_ONCE, MODE_UPLOAD};
use crate::stats::{nanos, new_histogram, LatencyRecorder, Percentiles, Schedule};

/// Socket timeout for every read and write: a subject that stops answering fails the run
/// instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Result of a fixed-rate (open-loop) run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateResult {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub connections: usize,
    pub requests: u64,
    pub errors: u64,
    /// From the intended send time (coordinated-omission corrected).
    pub latency: Percentiles,
    /// From the actual send time.
    pub service: Percentiles,
    /// How late the generator itself woke up to send (same for every subject).
    pub send_lag: Percentiles,
}

/// Result of a closed-loop run as fast as the subject answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SaturationResult {
    pub connections: usize,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub latency: Percentiles,
}

/// Result of the new-connection-per-request run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewConnResult {
    pub workers: usize,
    pub connections: u64,
    pub errors: u64,
    pub conns_per_sec: f64,
    /// From the start of `connect` to the first response byte.
    pub ttfb: Percentiles,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to backend.
    Upload,
    /// Backend to client.
    Download,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BulkResult {
    pub direction: Direction,
    pub streams: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_sec: f64,
}

/// Opens a persistent echo connection: connected, `TCP_NODELAY`, mode byte sent.
pub fn echo_connection(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = connect(target)?;
    s.write_all(&[MODE_ECHO])
        .with_context(|| format!("sending the mode byte to {target}"))?;
    Ok(s)
}

/// One 1 kB request and its 1 kB answer on an echo connection.
pub fn round_trip(s: &mut TcpStream, req: &[u8; MESSAGE_SIZE]) -> std::io::Result<()> {
    s.write_all(req)?;
    let mut resp = [0u8; MESSAGE_SIZE];
    s.read_exact(&mut resp)?;
    if &resp != req {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "echo answer differs from the request",
        ));
    }
    Ok(())
}

/// The raw outcome of one or more fixed-rate slices, mergeable across slices of a run.
#[derive(Debug, Clone, Default)]
pub struct RateRun {
    pub recorder: LatencyRecorder,
    pub errors: u64,
    pub seconds: f64,
}

impl RateRun {
    pub fn merge(&mut self, other: &RateRun) {
        self.recorder.merge(&other.recorder);
        self.errors += other.errors;
        self.seconds += other.seconds;
    }

    pub fn result(&self, target_rps: f64, connections: usize) -> RateResult {
        let requests = self.recorder.corrected.len();
        RateResult {
            target_rps,
            achieved_rps: requests as f64 / self.seconds.max(1e-9),
            connections,
            requests,
            errors: self.errors,
            latency: Percentiles::of(&self.recorder.corrected),
            service: Percentiles::of(&self.recorder.service),
            send_lag: Percentiles::of(&self.recorder.send_lag),
        }
    }
}

/// Open-loop run at `rate` requests/s over `connections` persistent connections for `duration`.
pub fn fixed_rate(
    target: SocketAddr,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<RateRun> {
    let schedule = Schedule::for_duration(rate, connections, duration);
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut s = echo_connection(target)?;
        // One warm-up round trip so connection set-up is not in the first sample.
        round_trip(&mut s, &[0u8; MESSAGE_SIZE])
            .with_context(|| format!("warm-up request through {target}"))?;
        streams.push(s);
    }
    // Every connection stops at this point even if the subject stalls.
    let hard_stop = duration * 2 + Duration::from_secs(5);
    let start = Instant::now() + Duration::from_millis(20);
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(k, mut s)| {
            thread::spawn(move || {
                let mut rec = LatencyRecorder::new();
                let mut errors = 0u64;
                let req = [k as u8; MESSAGE_SIZE];
                for i in 0..schedule.requests_on(k) {
                    let intended = start + schedule.offset(k, i);
                    let now = Instant::now();
                    if now < intended {
                        thread::sleep(intended - now);
                    }
                    if Instant::now() > start + hard_stop {
                        errors += schedule.requests_on(k) - i;
                        break;
                    }
                    let sent = Instant::now();
                    if round_trip(&mut s, &req).is_err() {
                        errors += schedule.requests_on(k) - i;
                        break;
                    }
                    rec.record(intended, sent, Instant::now());
                }
                (rec, errors, Instant::now())
            })
        })
        .collect();
    let mut run = RateRun::default();
    let mut end = start;
    for h in handles {
        let (r, e, t) = h.join().expect("load thread does not panic");
        run.recorder.merge(&r);
        run.errors += e;
        end = end.max(t);
    }
    run.seconds = end.duration_since(start).as_secs_f64();
    Ok(run)
}

/// What closed-loop slices of one scenario add up to: the latencies, the errors and the time
/// the load ran. Slices of one subject, interleaved with other subjects' ([`Slices::merge`]),
/// make one result.
#[derive(Debug, Clone)]
pub struct Slices {
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub seconds: f64,
}

impl Default for Slices {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            errors: 0,
            seconds: 0.0,
        }
    }
}

impl Slices {
    pub fn merge(&mut self, other: &Slices) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.errors += other.errors;
        self.seconds += other.seconds;
    }

    fn per_sec(&self) -> f64 {
        self.latency.len() as f64 / self.seconds.max(1e-9)
    }

    /// As a saturation result over `connections`.
    pub fn saturation(&self, connections: usize) -> SaturationResult {
        SaturationResult {
            connections,
            requests: self.latency.len(),
            errors: self.errors,
            rps: self.per_sec(),
            latency: Percentiles::of(&self.latency),
        }
    }

    /// As a new-connection-per-request result of `workers`.
    pub fn new_conn(&self, workers: usize) -> NewConnResult {
        NewConnResult {
            workers,
            connections: self.latency.len(),
            errors: self.errors,
            conns_per_sec: self.per_sec(),
            ttfb: Percentiles::of(&self.latency),
        }
    }
}

/// Closed-loop run: every connection sends its next request as soon as the previous answer is in.
pub fn saturation(
    target: SocketAddr,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<SaturationResult> {
    Ok(saturation_slice(target, connections, duration)?.saturation(connections))
}

/// One slice of [`saturation`]: the connections are opened before the clock starts.
pub fn saturation_slice(
    target: SocketAddr,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Slices> {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(echo_connection(target)?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(k, mut s)| {
            thread::spawn(move || {
                let mut h = new_histogram();
                let mut errors = 0u64;
                let req = [k as u8; MESSAGE_SIZE];
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    if round_trip(&mut s, &req).is_err() {
                        errors += 1;
                        break;
                    }
                    h.saturating_record(nanos(t0.elapsed()));
                }
                (h, errors)
            })
        })
        .collect();
    let (latency, errors) = join_histograms(handles);
    Ok(Slices {
        latency,
        errors,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// New connection per request: `workers` threads each connect, send 1 kB, read the 1 kB answer
/// until the server closes, and start over, for `duration`.
pub fn new_connection_per_request(
    target: SocketAddr,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<NewConnResult> {
    Ok(new_connection_slice(target, workers, duration)?.new_conn(workers))
}

/// One slice of [`new_connection_per_request`].
pub fn new_connection_slice(
    target: SocketAddr,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<Slices> {
    // Fail fast with a clear error if the subject does not answer at all.
    one_shot(target).with_context(|| format!("first one-shot request through {target}"))?;
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            thread::spawn(move || {
                let mut h = new_histogram();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    match one_shot(target) {
                        Ok(ttfb) => h.saturating_record(nanos(ttfb)),
                        Err(_) => {
                            errors += 1;
                            // Port exhaustion or a refusing subject: do not spin.
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                (h, errors)
            })
        })
        .collect();
    let (latency, errors) = join_histograms(handles);
    Ok(Slices {
        latency,
        errors,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One request on a fresh connection; returns the time from connect to the first answer byte.
pub fn one_shot(target: SocketAddr) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut s = connect(target)?;
    let mut req = [0x11u8; MESSAGE_SIZE + 1];
    req[0] = MODE_ONCE;
    s.write_all(&req)?;
    let mut resp = [0u8; MESSAGE_SIZE];
    s.read_exact(&mut resp[..1])
        .with_context(|| format!("no answer through {target}"))?;
    let ttfb = t0.elapsed();
    s.read_exact(&mut resp[1..])?;
    anyhow::ensure!(
        resp == [0x11u8; MESSAGE_SIZE],
        "one-shot answer differs from the request"
    );
    let mut rest = [0u8; 16];
    anyhow::ensure!(s.read(&mut rest)? == 0, "server sent more than one answer");
    Ok(ttfb)
}

/// `streams` parallel bulk transfers in `direction` for `duration`; MB/s counted at the receiver.
pub fn bulk(
    target: SocketAddr,
    direction: Direction,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<BulkResult> {
    let mut conns = Vec::with_capacity(streams);
    for _ in 0..streams {
        conns.push(connect(target)?);
    }
    let start = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|s| thread::spawn(move || bulk_stream(s, direction, start + duration)))
        .collect();
    let mut bytes = 0;
    let mut end = start;
    for h in handles {
        let (b, t) = h.join().expect("bulk thread does not panic")?;
        bytes += b;
        end = end.max(t);
    }
    let seconds = end.duration_since(start).as_secs_f64();
    Ok(BulkResult {
        direction,
        streams,
        bytes,
        seconds,
        mb_per_sec: bytes as f64 / seconds / 1e6,
    })
}

fn bulk_stream(
    mut s: TcpStream,
    direction: Direction,
    deadline: Instant,
) -> anyhow::Result<(u64, Instant)> {
    match direction {
        Direction::Upload => {
            s.write_all(&[MODE_UPLOAD])?;
            let buf = vec![0xa5u8; CHUNK];
            while Instant::now() < deadline {
                s.write_all(&buf).context("upload write")?;
            }
            s.shutdown(Shutdown::Write)?;
            // Everything still in flight has to drain first: allow for it.
            s.set_read_timeout(Some(IO_TIMEOUT * 4))?;
            let mut count = [0u8; 8];
            s.read_exact(&mut count)
                .context("reading the backend's byte count")?;
            Ok((u64::from_be_bytes(count), Instant::now()))
        }
        Direction::Download => {
            s.write_all(&[MODE_DOWNLOAD])?;
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            while Instant::now() < deadline {
                let n = s.read(&mut buf).context("download read")?;
                anyhow::ensure!(n > 0, "download ended early after {total} bytes");
                total += n as u64;
            }
            Ok((total, Instant::now()))
        }
    }
}

/// Holds `count` connections open and idle, each having carried one echo round trip (so it is
/// established all the way to the backend). Stops at the first failure and says how far it got.
pub fn open_idle(target: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = echo_connection(target)
            .with_context(|| format!("opening idle connection {} of {count}", i + 1))?;
        round_trip(&mut s, &[3u8; MESSAGE_SIZE])
            .with_context(|| format!("first request on idle connection {} of {count}", i + 1))?;
        held.push(s);
    }
    Ok(held)
}

fn connect(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn join_histograms(
    handles: Vec<thread::JoinHandle<(Histogram<u64>, u64)>>,
) -> (Histogram<u64>, u64) {
    let mut all = new_histogram();
    let mut errors = 0;
    for h in handles {
        let (hist, e) = h.join().expect("load thread does not panic");
        all.add(&hist).expect("histograms share bounds");
        errors += e;
    }
    (all, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(latencies_us: &[u64], errors: u64, seconds: f64) -> Slices {
        let mut latency = new_histogram();
        for us in latencies_us {
            latency.saturating_record(us * 1000);
        }
        Slices {
            latency,
            errors,
            seconds,
        }
    }

    #[test]
    fn interleaved_slices_add_up_to_one_run() {
        let mut total = Slices::default();
        total.merge(&slice(&[100, 100, 100], 0, 0.5));
        total.merge(&slice(&[300], 1, 0.5));
        let s = total.saturation(8);
        // 4 requests over the 1 s the load ran, wherever the slices fell.
        assert_eq!((s.requests, s.errors, s.rps), (4, 1, 4.0));
        assert_eq!(s.latency.p50_us, 100.0);
        assert_eq!(s.latency.max_us, 300.0);
        let n = total.new_conn(2);
        assert_eq!((n.workers, n.connections, n.conns_per_sec), (2, 4, 4.0));
    }
}
