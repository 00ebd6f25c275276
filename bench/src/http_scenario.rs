//! The HTTP scenario: 1 kB HTTP/1.1 answers from a keep-alive backend ([`crate::http_backend`])
//! through up to six subjects, each with its own backend:
//!
//! - `direct`: no proxy;
//! - `tandem-tcp`: a Tandem pair, the service's protocol `tcp` (no config entry; the pair's L4
//!   allow intention), so the proxies copy bytes;
//! - `tandem-http`: a Tandem pair with `service-defaults` `Protocol = "http"` and one L7
//!   intention of five permissions ([`crate::l7`]): the server-side proxy parses every request
//!   and checks it against all five;
//! - `haproxy-tcp`: the HAProxy pair in `mode tcp`;
//! - `relay-pair-tcp`: two HAProxy relays in a row, no TLS ([`RelayPair`]): the two processes
//!   and hops of a pair and nothing else: what a pair adds before any TLS;
//! - `copy-pair-tcp`: the same with two relays on Tandem's runtime ([`crate::copy_relay`]).
//!
//! Measured per subject, in interleaved rounds (each round runs every subject once, in a
//! rotating order, so drift on the shared machine lands on all alike): serial latency over one
//! kept-alive connection, then a closed loop over a few kept-alive connections (requests/s),
//! and the CPU time of the proxy processes per 10,000 requests in each.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::compare::Subject;
use crate::haproxy::{HaproxyPair, RelayPair};
use crate::http_backend::HttpBackend;
use crate::http_load::{self, HttpConnection, LoadResult, LoopRun, Request};
use crate::pki::BenchPki;
use crate::report::{Settings, COPY_PAIR, DIRECT, HAPROXY, RELAY_PAIR, TANDEM};
use crate::tandem::{Binaries, TandemPair};
use crate::{l7, procstat};

pub const TANDEM_TCP: &str = "tandem-tcp";
pub const TANDEM_HTTP: &str = "tandem-http";
pub const HAPROXY_TCP: &str = "haproxy-tcp";
pub const RELAY_PAIR_TCP: &str = "relay-pair-tcp";
pub const COPY_PAIR_TCP: &str = "copy-pair-tcp";
/// Every subject of the scenario, in report order.
pub const SUBJECTS: [&str; 6] = [
    DIRECT,
    TANDEM_TCP,
    TANDEM_HTTP,
    HAPROXY_TCP,
    RELAY_PAIR_TCP,
    COPY_PAIR_TCP,
];

/// How long a pair may take to answer HTTP, and the L7 intention to be enforced, after start.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpResult {
    /// The measured request's line (`GET /bench/1k`).
    pub request: String,
    pub response_bytes: usize,
    /// The `tandem-http` subject's intention permissions, as written to the agent.
    pub permissions: serde_json::Value,
    pub subjects: Vec<HttpSubjectReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HttpSubjectReport {
    pub name: String,
    /// Set when the subject could not be started (or its L7 setup not verified).
    pub error: Option<String>,
    /// One kept-alive connection, one request at a time.
    pub serial: Option<LoadResult>,
    /// `Settings::http_connections` kept-alive connections, closed loop.
    pub concurrent: Option<LoadResult>,
    pub processes: Vec<HttpProcessReport>,
    /// Connections the backend accepted while the measured client connections (one serial,
    /// `http_connections` concurrent) were opened and used: as many as those when every hop
    /// keeps its connection alive.
    pub backend_connections: Option<u64>,
    /// HTTP requests the server-side Tandem proxy counted (`tandem_http_requests_total`) while
    /// the serial and concurrent phases ran: all of them when it decides per request (L7),
    /// none when it copies bytes (L4).
    pub proxy_http_requests: Option<u64>,
    pub scenario_errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HttpProcessReport {
    pub role: String,
    pub serial_cpu_s_per_10k: Option<f64>,
    pub concurrent_cpu_s_per_10k: Option<f64>,
}

impl HttpResult {
    pub fn subject(&self, name: &str) -> Option<&HttpSubjectReport> {
        self.subjects
            .iter()
            .find(|s| s.name == name && s.error.is_none())
    }
}

impl HttpSubjectReport {
    /// CPU seconds per 10,000 requests of all the subject's proxy processes together.
    pub fn cpu_s_per_10k(&self, pick: fn(&HttpProcessReport) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.processes.iter().filter_map(pick).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }
}

/// Which of the scenario's subjects the run's `--subjects` select: tandem selects both pairs.
pub fn selected(subjects: &[String]) -> Vec<&'static str> {
    let has = |n: &str| subjects.iter().any(|s| s == n);
    SUBJECTS
        .into_iter()
        .filter(|&name| match name {
            DIRECT => has(DIRECT),
            TANDEM_TCP | TANDEM_HTTP => has(TANDEM),
            RELAY_PAIR_TCP => has(RELAY_PAIR),
            COPY_PAIR_TCP => has(COPY_PAIR),
            _ => has(HAPROXY),
        })
        .collect()
}

/// Starts the selected subjects, measures them and stops them again.
pub fn run(
    rt: &tokio::runtime::Runtime,
    bins: &Binaries,
    pki: &BenchPki,
    subjects: &[&str],
    work_dir: &Path,
    s: &Settings,
) -> anyhow::Result<HttpResult> {
    anyhow::ensure!(!subjects.is_empty(), "no subject selected");
    let mut live: Vec<Live> = Vec::new();
    let mut reports: Vec<HttpSubjectReport> = Vec::new();
    for &name in subjects {
        eprintln!("bench: http: starting {name}");
        let backend = rt.block_on(HttpBackend::start())?;
        let dir = work_dir.join(format!("http-{name}"));
        match start(name, bins, pki, backend.addr(), &dir) {
            Ok(subject) => live.push(Live::new(name, backend, subject)),
            Err(e) => {
                eprintln!("bench: http: {name} did not start: {e:#}");
                reports.push(HttpSubjectReport {
                    name: name.into(),
                    error: Some(format!("{e:#}")),
                    ..Default::default()
                });
                rt.block_on(backend.shutdown());
            }
        }
    }

    for l in &mut live {
        if let Err(e) = l.open(s.http_connections) {
            l.fail("opening the measured connections", e);
        }
        l.proxy_requests_before = l.proxy_http_requests();
    }
    let rounds = s.http_rounds.max(1);
    let per_round = |total: f64| Duration::from_secs_f64(total / rounds as f64);
    eprintln!(
        "bench: http: serial, {rounds} rounds of {:.2} s per subject",
        per_round(s.http_serial_seconds).as_secs_f64()
    );
    interleaved(
        &mut live,
        Phase::Serial,
        rounds,
        per_round(s.http_serial_seconds),
    );
    eprintln!(
        "bench: http: {} connections, {rounds} rounds of {:.2} s per subject",
        s.http_connections,
        per_round(s.http_concurrent_seconds).as_secs_f64()
    );
    interleaved(
        &mut live,
        Phase::Concurrent,
        rounds,
        per_round(s.http_concurrent_seconds),
    );

    for mut l in live {
        if let (Some(before), Some(after)) = (l.proxy_requests_before, l.proxy_http_requests()) {
            l.report.proxy_http_requests = Some(after.saturating_sub(before));
        }
        if let Some(before) = l.accepted_before {
            l.report.backend_connections =
                Some(l.backend.connections_accepted().saturating_sub(before));
        }
        if let Some(e) = l.gone() {
            l.report.scenario_errors.push(e);
        }
        reports.push(l.report);
        drop(l.serial);
        drop(l.concurrent);
        drop(l.subject);
        rt.block_on(l.backend.shutdown());
    }
    let order = |n: &str| SUBJECTS.iter().position(|x| *x == n);
    reports.sort_by_key(|r| order(&r.name));
    Ok(HttpResult {
        request: Request::bench().line(),
        response_bytes: crate::http_backend::BODY_SIZE,
        permissions: l7::permissions(),
        subjects: reports,
    })
}

/// Starts subject `name` in front of the HTTP backend at `backend`, with its files under `dir`,
/// and checks that it answers (and, for `tandem-http`, enforces the L7 intention).
fn start(
    name: &str,
    bins: &Binaries,
    pki: &BenchPki,
    backend: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Subject> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match name {
        DIRECT => Ok(Subject::Direct(backend)),
        TANDEM_TCP => {
            let pair = TandemPair::start_http(bins, backend, dir)?;
            // L4: what the L7 intention would deny goes through.
            let probe = &l7::denied_probes()[0];
            let status = http_load::status_on_new_connection(pair.listen, probe)?;
            anyhow::ensure!(
                status == 200,
                "{} through the tcp pair answered {status}, not 200: is the protocol tcp?",
                probe.line()
            );
            Ok(Subject::Tandem(pair))
        }
        TANDEM_HTTP => {
            let pair = TandemPair::start_http(bins, backend, dir)?;
            l7::configure(pair.agent_addr)?;
            l7::wait_enforced(pair.listen, SETUP_TIMEOUT)?;
            Ok(Subject::Tandem(pair))
        }
        HAPROXY_TCP => {
            let pair = HaproxyPair::start(pki, backend, dir, 256)?;
            wait_answering(pair.listen)?;
            Ok(Subject::Haproxy(pair))
        }
        RELAY_PAIR_TCP => {
            let pair = RelayPair::start(backend, dir, 256)?;
            wait_answering(pair.client_side.listen)?;
            Ok(Subject::RelayPair(pair))
        }
        COPY_PAIR_TCP => {
            let pair = RelayPair::start_copy(backend)?;
            wait_answering(pair.client_side.listen)?;
            Ok(Subject::RelayPair(pair))
        }
        other => anyhow::bail!("unknown http subject {other:?}"),
    }
}

fn wait_answering(target: SocketAddr) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        let tried = HttpConnection::connect(target)
            .and_then(|mut c| c.send_expecting_backend(&Request::bench()));
        match tried {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e.context(format!("no HTTP answer through {target}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serial,
    Concurrent,
}

/// A started subject, its backend, its open client connections and what has been measured.
struct Live {
    backend: HttpBackend,
    subject: Subject,
    serial: Option<Vec<HttpConnection>>,
    concurrent: Option<Vec<HttpConnection>>,
    accepted_before: Option<u64>,
    proxy_requests_before: Option<u64>,
    report: HttpSubjectReport,
}

impl Live {
    fn new(name: &str, backend: HttpBackend, subject: Subject) -> Self {
        let processes = subject
            .processes()
            .iter()
            .map(|p| HttpProcessReport {
                role: p.role.clone(),
                ..Default::default()
            })
            .collect();
        Self {
            backend,
            subject,
            serial: None,
            concurrent: None,
            accepted_before: None,
            proxy_requests_before: None,
            report: HttpSubjectReport {
                name: name.into(),
                processes,
                ..Default::default()
            },
        }
    }

    /// Opens the serial connection and `concurrent` more, each warmed up with a few requests.
    fn open(&mut self, concurrent: usize) -> anyhow::Result<()> {
        let target = self.subject.target();
        self.accepted_before = Some(self.backend.connections_accepted());
        let warm = |n: usize| -> anyhow::Result<Vec<HttpConnection>> {
            (0..n)
                .map(|_| {
                    let mut c = HttpConnection::connect(target)?;
                    for _ in 0..20 {
                        c.send_expecting_backend(&Request::bench())?;
                    }
                    Ok(c)
                })
                .collect()
        };
        self.serial = Some(warm(1)?);
        self.concurrent = Some(warm(concurrent)?);
        Ok(())
    }

    /// The server-side Tandem proxy's HTTP request count so far (Tandem subjects only).
    fn proxy_http_requests(&self) -> Option<u64> {
        let Subject::Tandem(pair) = &self.subject else {
            return None;
        };
        match pair.server_metrics() {
            Ok(text) => Some(counter_sum(&text, "tandem_http_requests_total") as u64),
            Err(e) => {
                eprintln!("bench: http: {}: reading metrics: {e:#}", self.report.name);
                None
            }
        }
    }

    fn conns(&mut self, phase: Phase) -> &mut Option<Vec<HttpConnection>> {
        match phase {
            Phase::Serial => &mut self.serial,
            Phase::Concurrent => &mut self.concurrent,
        }
    }

    fn fail(&mut self, what: &str, e: anyhow::Error) {
        eprintln!("bench: http: {}: {what} failed: {e:#}", self.report.name);
        self.report.scenario_errors.push(format!("{what}: {e:#}"));
        self.serial = None;
        self.concurrent = None;
    }

    fn cpu_times(&self, ticks: u64) -> Vec<Option<Duration>> {
        self.subject
            .processes()
            .iter()
            .map(|p| procstat::cpu_time(p.pid(), ticks).ok())
            .collect()
    }

    /// Whether a process of the subject exited during the run.
    fn gone(&self) -> Option<String> {
        self.subject
            .processes()
            .iter()
            .find(|p| procstat::rss_kb(p.pid()).is_err())
            .map(|p| format!("{} (pid {}) is gone", p.role, p.pid()))
    }
}

/// `rounds` rounds; each runs every subject's `phase` for `slice`, in a rotating order.
fn interleaved(live: &mut [Live], phase: Phase, rounds: usize, slice: Duration) {
    let ticks = procstat::clock_ticks_per_sec();
    let request = Request::bench();
    let n = live.len();
    let mut runs: Vec<LoopRun> = vec![LoopRun::default(); n];
    let mut cpu: Vec<Vec<Duration>> = live
        .iter()
        .map(|l| vec![Duration::ZERO; l.subject.processes().len()])
        .collect();
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let Some(conns) = live[i].conns(phase).take() else {
                continue;
            };
            let before = live[i].cpu_times(ticks);
            match http_load::closed_loop(conns, &request, slice) {
                Ok((conns, run)) => {
                    let after = live[i].cpu_times(ticks);
                    for (p, (a, b)) in before.iter().zip(after).enumerate() {
                        if let (Some(a), Some(b)) = (a, b) {
                            cpu[i][p] += b.saturating_sub(*a);
                        }
                    }
                    runs[i].merge(&run);
                    *live[i].conns(phase) = Some(conns);
                }
                Err(e) => live[i].fail(&format!("http {phase:?}").to_lowercase(), e),
            }
        }
    }
    for (i, l) in live.iter_mut().enumerate() {
        let Some(conns) = l.conns(phase).as_ref() else {
            continue;
        };
        let result = runs[i].result(conns.len());
        for (p, used) in cpu[i].iter().enumerate() {
            let per_10k = used.as_secs_f64() * 10_000.0 / result.requests.max(1) as f64;
            let value = Some((per_10k * 1000.0).round() / 1000.0);
            let slot = &mut l.report.processes[p];
            match phase {
                Phase::Serial => slot.serial_cpu_s_per_10k = value,
                Phase::Concurrent => slot.concurrent_cpu_s_per_10k = value,
            }
        }
        match phase {
            Phase::Serial => l.report.serial = Some(result),
            Phase::Concurrent => l.report.concurrent = Some(result),
        }
    }
}

/// The sum of every series of counter `name` in Prometheus text (0 when it has none).
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_sum_adds_every_series_of_one_name() {
        let text = "# HELP tandem_http_requests Inbound HTTP requests\n\
                    # TYPE tandem_http_requests counter\n\
                    tandem_http_requests_total{method=\"GET\",code=\"200\"} 1200\n\
                    tandem_http_requests_total{method=\"GET\",code=\"403\"} 4\n\
                    tandem_http_requests_denied_total{reason=\"permission\"} 4\n\
                    tandem_connections_opened_total 3\n";
        assert_eq!(counter_sum(text, "tandem_http_requests_total"), 1204.0);
        assert_eq!(counter_sum(text, "tandem_connections_opened_total"), 3.0);
        assert_eq!(counter_sum(text, "tandem_absent_total"), 0.0);
    }

    #[test]
    fn tandem_selects_both_pairs() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            selected(&s(&[
                "direct",
                "tandem",
                "haproxy",
                "relay-pair",
                "copy-pair"
            ])),
            SUBJECTS.to_vec()
        );
        assert_eq!(selected(&s(&["tandem"])), [TANDEM_TCP, TANDEM_HTTP]);
        assert_eq!(selected(&s(&["haproxy", "direct"])), [DIRECT, HAPROXY_TCP]);
    }

    #[test]
    fn cpu_of_the_proxies_adds_up() {
        let r = HttpSubjectReport {
            processes: vec![
                HttpProcessReport {
                    role: "a".into(),
                    serial_cpu_s_per_10k: Some(0.25),
                    concurrent_cpu_s_per_10k: None,
                },
                HttpProcessReport {
                    role: "b".into(),
                    serial_cpu_s_per_10k: Some(0.5),
                    concurrent_cpu_s_per_10k: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(r.cpu_s_per_10k(|p| p.serial_cpu_s_per_10k), Some(0.75));
        assert_eq!(r.cpu_s_per_10k(|p| p.concurrent_cpu_s_per_10k), None);
        assert_eq!(
            HttpSubjectReport::default().cpu_s_per_10k(|p| p.serial_cpu_s_per_10k),
            None
        );
    }
}
