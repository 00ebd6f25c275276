//! `compare`: every scenario against every subject, one after the other, in one run.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::echo::{Backend, MESSAGE_SIZE};
use crate::haproxy::{HaproxyPair, Relay, RelayPair};
use crate::loadgen::{self, Direction, RateRun, Slices};
use crate::process::ChildProcess;
use crate::report::{
    column, Outcome, ProcessReport, Report, Settings, SubjectReport, Versions, COPY_PAIR, DIRECT,
    HAPROXY, RELAY, RELAY_PAIR, SUBJECTS, TANDEM, TANDEM_NO_RESUMPTION, TANDEM_TUNNEL,
};
use crate::tandem::{Binaries, TandemPair};
use crate::{http_scenario, injector, machine, pki::BenchPki, policy, procstat};

/// The scenarios over TCP: fixed rates, saturation, new connections, bulk, memory, policy
/// propagation and the injector.
pub const TCP_SCENARIOS: &str = "tcp";
/// The HTTP scenario ([`crate::http_scenario`]).
pub const HTTP_SCENARIO: &str = "http";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    /// Build the agent, proxy and injector release binaries first.
    pub build: bool,
    /// Subjects to run, by name.
    pub subjects: Vec<String>,
    /// Scenario groups to run: [`TCP_SCENARIOS`], [`HTTP_SCENARIO`].
    pub scenarios: Vec<String>,
    /// Where logs and HAProxy configuration go.
    pub work_dir: PathBuf,
    /// The nice level the run was started at (recorded in the report).
    pub nice: Option<i32>,
}

impl Settings {
    pub fn for_run(quick: bool, nofile: u64) -> Self {
        // A pair's proxy holds two descriptors per connection (accepted + forwarded), and the
        // bench process holds the client and (direct) the backend ends: stay under the limit.
        let high = ((nofile.saturating_sub(1000) / 2) / 1000 * 1000).min(10_000) as usize;
        let secs = |quick_s: f64, full_s: f64| if quick { quick_s } else { full_s };
        Settings {
            rates: vec![1000.0, 5000.0],
            rate_seconds: secs(2.0, 10.0),
            rate_rounds: if quick { 4 } else { 20 },
            connections: 8,
            saturation_seconds: secs(2.0, 5.0),
            new_conn_workers: 8,
            new_conn_seconds: secs(2.0, 5.0),
            throughput_rounds: if quick { 2 } else { 10 },
            bulk_seconds: secs(1.0, 3.0),
            idle_connection_counts: if quick || high <= 1000 {
                vec![1000]
            } else {
                vec![1000, high]
            },
            policy_tries: if quick { 5 } else { 20 },
            injector_concurrency: 16,
            injector_seconds: secs(2.0, 5.0),
            nice: 0,
            http_serial_seconds: secs(2.0, 10.0),
            http_concurrent_seconds: secs(1.0, 5.0),
            http_rounds: if quick { 4 } else { 20 },
            http_connections: 4,
        }
    }
}

/// Runs the selected scenarios and returns the report (the caller prints and writes it).
///
/// The TCP scenarios first: all subjects are started first. The fixed-rate runs, where the
/// differences are fractions of a millisecond, are interleaved: each rate is cut into rounds
/// and every round runs each subject once, in a rotating order, so drift from other work on the
/// machine lands on all subjects alike; so are saturation and new connections. Bulk and memory
/// then run one subject after the other. Then the HTTP scenario, with its own subjects,
/// interleaved the same way.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    // The build runs at the caller's priority; everything after it at the requested one.
    let bins = Binaries::locate(opts.build)?;
    if let Some(n) = opts.nice {
        apply_nice(n)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let mut machine = machine::describe();
    let mut settings = Settings::for_run(opts.quick, machine.nofile_limit);
    settings.nice = opts.nice.unwrap_or(0);
    let versions = versions(&bins);
    let pki = BenchPki::generate()?;

    let runs = |group: &str| opts.scenarios.iter().any(|s| s == group);
    let (subjects, policy, injector) = if runs(TCP_SCENARIOS) {
        tcp_scenarios(&rt, &bins, &pki, opts, &settings)?
    } else {
        (
            Vec::new(),
            not_selected(TCP_SCENARIOS),
            not_selected(TCP_SCENARIOS),
        )
    };
    let http = if runs(HTTP_SCENARIO) {
        eprintln!("bench: http");
        Outcome::from_result(http_scenario::run(
            &rt,
            &bins,
            &pki,
            &http_scenario::selected(&opts.subjects),
            &opts.work_dir,
            &settings,
        ))
    } else {
        not_selected(HTTP_SCENARIO)
    };

    machine.load_average_end = machine::load_average();
    Ok(Report {
        date: machine::utc_now(),
        quick: opts.quick,
        machine,
        versions,
        settings,
        subjects,
        policy,
        injector,
        http,
    })
}

/// The TCP scenarios: every subject started, the fixed rates, saturation and new connections
/// interleaved, then bulk and memory one subject after the other, policy propagation, and the
/// injector.
fn tcp_scenarios(
    rt: &tokio::runtime::Runtime,
    bins: &Binaries,
    pki: &BenchPki,
    opts: &Options,
    settings: &Settings,
) -> anyhow::Result<(
    Vec<SubjectReport>,
    Outcome<policy::PolicyResult>,
    Outcome<injector::InjectorResult>,
)> {
    let mut live: Vec<Live> = Vec::new();
    let mut failed: Vec<SubjectReport> = Vec::new();
    for name in SUBJECTS {
        if !opts.subjects.iter().any(|s| s == name) {
            continue;
        }
        eprintln!("bench: starting {name}");
        let backend = rt.block_on(Backend::start())?;
        let dir = opts.work_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let maxconn = haproxy_maxconn(settings);
        match start_subject(name, bins, pki, backend.addr(), &dir, maxconn) {
            Ok(subject) => live.push(Live::new(name, backend, subject)),
            Err(e) => {
                eprintln!("bench: {name} did not start: {e:#}");
                failed.push(SubjectReport {
                    name: name.into(),
                    error: Some(format!("{e:#}")),
                    ..Default::default()
                });
                rt.block_on(backend.shutdown());
            }
        }
    }

    for l in &mut live {
        // Warm-up: caches, lazy initialisation, first handshakes.
        if let Err(e) =
            loadgen::fixed_rate(l.subject.target(), 500.0, 2, Duration::from_millis(400))
        {
            l.fail("warm-up", e);
        }
    }
    for &rate in &settings.rates {
        fixed_rate_interleaved(&mut live, settings, rate);
    }
    throughput_interleaved(&mut live, settings);
    for l in &mut live {
        bulk_and_memory(l, settings);
    }
    let mut policy = Outcome::NotRun {
        reason: "the tandem subject did not run".into(),
    };
    for l in &mut live {
        if let (Subject::Tandem(pair), TANDEM) = (&l.subject, l.report.name.as_str()) {
            eprintln!(
                "bench: policy propagation ({} tries)",
                settings.policy_tries
            );
            policy = Outcome::from_result(policy::measure(pair, settings.policy_tries));
            if let Some(e) = pair_alive(pair) {
                l.report.scenario_errors.push(e);
            }
        }
    }
    let mut subjects = Vec::new();
    for l in live {
        subjects.push(l.report);
        drop(l.subject);
        rt.block_on(l.backend.shutdown());
    }
    subjects.extend(failed);
    subjects.sort_by_key(|s| column(&s.name));

    eprintln!("bench: injector");
    let injector = Outcome::from_result(injector::measure(
        rt,
        bins,
        &opts.work_dir,
        settings.injector_concurrency,
        Duration::from_secs_f64(settings.injector_seconds),
    ));
    Ok((subjects, policy, injector))
}

fn not_selected<T>(group: &str) -> Outcome<T> {
    Outcome::NotRun {
        reason: format!("the {group} scenarios were not selected (--scenarios)"),
    }
}

/// Sets this thread's nice level. Called before any other thread or child exists, so all of
/// them inherit it (Linux keeps the level per thread and copies it on creation).
fn apply_nice(n: i32) -> anyhow::Result<()> {
    let status = std::process::Command::new("renice")
        .args(["-n", &n.to_string(), "-p", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running renice")?;
    anyhow::ensure!(
        status.success(),
        "renice -n {n} failed (values below 0 need root)"
    );
    Ok(())
}

/// A started subject, its backend and what has been measured so far.
struct Live {
    backend: Backend,
    subject: Subject,
    report: SubjectReport,
}

impl Live {
    fn new(name: &str, backend: Backend, subject: Subject) -> Self {
        // Idle memory: right after start-up, before any traffic.
        let processes = subject
            .processes()
            .iter()
            .map(|p| ProcessReport {
                role: p.role.clone(),
                idle_rss_kb: procstat::rss_kb(p.pid()).unwrap_or(0),
                idle_anon_kb: procstat::rss_anon_kb(p.pid()).unwrap_or(0),
                ..Default::default()
            })
            .collect();
        Self {
            backend,
            subject,
            report: SubjectReport {
                name: name.into(),
                processes,
                ..Default::default()
            },
        }
    }

    fn fail(&mut self, what: &str, e: anyhow::Error) {
        eprintln!("bench: {}: {what} failed: {e:#}", self.report.name);
        self.report.scenario_errors.push(format!("{what}: {e:#}"));
    }

    fn rss_kb(&self) -> Vec<u64> {
        self.subject
            .processes()
            .iter()
            .map(|p| procstat::rss_kb(p.pid()).unwrap_or(0))
            .collect()
    }

    fn cpu_times(&self, ticks: u64) -> Vec<Option<Duration>> {
        self.subject
            .processes()
            .iter()
            .map(|p| procstat::cpu_time(p.pid(), ticks).ok())
            .collect()
    }
}

/// Runs `rounds` rounds of `slice`, each round once per subject in a rotating order, so drift
/// from other work on the machine lands on all subjects alike. A subject whose slice fails
/// (`what` names it in the report) sits out the remaining rounds; which subjects finished is
/// returned.
fn interleave(
    live: &mut [Live],
    rounds: usize,
    what: &str,
    mut slice: impl FnMut(usize, &mut Live) -> anyhow::Result<()>,
) -> Vec<bool> {
    let n = live.len();
    let mut ok = vec![true; n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            if !ok[i] {
                continue;
            }
            if let Err(e) = slice(i, &mut live[i]) {
                live[i].fail(what, e);
                ok[i] = false;
            }
        }
    }
    ok
}

fn fixed_rate_interleaved(live: &mut [Live], s: &Settings, rate: f64) {
    eprintln!(
        "bench: {rate} rps, {} rounds of {:.1} s per subject",
        s.rate_rounds,
        s.rate_seconds / s.rate_rounds as f64
    );
    let ticks = procstat::clock_ticks_per_sec();
    let slice = Duration::from_secs_f64(s.rate_seconds / s.rate_rounds as f64);
    let mut runs: Vec<RateRun> = vec![RateRun::default(); live.len()];
    let mut cpu: Vec<Vec<Duration>> = live
        .iter()
        .map(|l| vec![Duration::ZERO; l.subject.processes().len()])
        .collect();
    let finished = interleave(live, s.rate_rounds, &format!("{rate} rps"), |i, l| {
        let before = l.cpu_times(ticks);
        let r = loadgen::fixed_rate(l.subject.target(), rate, s.connections, slice)?;
        let after = l.cpu_times(ticks);
        for (p, kb) in l.rss_kb().into_iter().enumerate() {
            let slot = &mut l.report.processes[p].rss_under_load_kb;
            match slot.iter_mut().find(|(x, _)| *x == rate) {
                Some((_, max)) => *max = (*max).max(kb),
                None => slot.push((rate, kb)),
            }
        }
        for (p, (a, b)) in before.iter().zip(after).enumerate() {
            if let (Some(a), Some(b)) = (a, b) {
                cpu[i][p] += b.saturating_sub(*a);
            }
        }
        runs[i].merge(&r);
        Ok(())
    });
    for (i, run) in runs.into_iter().enumerate() {
        if !finished[i] {
            continue;
        }
        let result = run.result(rate, s.connections);
        for (p, used) in cpu[i].iter().enumerate() {
            let per_10k = used.as_secs_f64() * 10_000.0 / result.requests.max(1) as f64;
            live[i].report.processes[p]
                .cpu_s_per_10k_requests
                .push((rate, (per_10k * 1000.0).round() / 1000.0));
        }
        live[i].report.rates.push(result);
    }
}

/// Starts subject `name` in front of `backend`, with its files under `dir`.
pub fn start_subject(
    name: &str,
    bins: &Binaries,
    pki: &BenchPki,
    backend: SocketAddr,
    dir: &std::path::Path,
    haproxy_maxconn: u32,
) -> anyhow::Result<Subject> {
    std::fs::create_dir_all(dir)?;
    match name {
        DIRECT => Ok(Subject::Direct(backend)),
        HAPROXY => HaproxyPair::start(pki, backend, dir, haproxy_maxconn).map(Subject::Haproxy),
        RELAY => Relay::start(backend, dir, haproxy_maxconn).map(Subject::Relay),
        RELAY_PAIR => RelayPair::start(backend, dir, haproxy_maxconn).map(Subject::RelayPair),
        COPY_PAIR => RelayPair::start_copy(backend).map(Subject::RelayPair),
        TANDEM => TandemPair::start(bins, backend, dir).map(Subject::Tandem),
        TANDEM_TUNNEL => TandemPair::start_tunnel(bins, backend, dir).map(Subject::Tandem),
        TANDEM_NO_RESUMPTION => {
            TandemPair::start_without_resumption(bins, backend, dir).map(Subject::Tandem)
        }
        other => anyhow::bail!(
            "unknown subject {other:?} (expected one of {})",
            SUBJECTS.join(", ")
        ),
    }
}

/// A subject that is up: where the load goes and which processes to measure.
pub enum Subject {
    Direct(SocketAddr),
    Haproxy(HaproxyPair),
    Relay(Relay),
    RelayPair(RelayPair),
    Tandem(TandemPair),
}

impl Subject {
    pub fn target(&self) -> SocketAddr {
        match self {
            Subject::Direct(a) => *a,
            Subject::Haproxy(p) => p.listen,
            Subject::Relay(r) => r.listen,
            Subject::RelayPair(p) => p.client_side.listen,
            Subject::Tandem(p) => p.listen,
        }
    }

    pub fn processes(&self) -> Vec<&ChildProcess> {
        match self {
            Subject::Direct(_) => vec![],
            Subject::Haproxy(p) => vec![&p.client_side, &p.server_side],
            Subject::Relay(r) => vec![&r.process],
            Subject::RelayPair(p) => vec![&p.client_side.process, &p.server_side.process],
            Subject::Tandem(p) => vec![&p.client_side, &p.server_side],
        }
    }
}

fn pair_alive(pair: &TandemPair) -> Option<String> {
    for p in [&pair.client_side, &pair.server_side, &pair.agent] {
        if crate::procstat::rss_kb(p.pid()).is_err() {
            return Some(format!("{} (pid {}) is gone", p.role, p.pid()));
        }
    }
    None
}

fn haproxy_maxconn(settings: &Settings) -> u32 {
    let most = settings
        .idle_connection_counts
        .iter()
        .copied()
        .max()
        .unwrap_or(1000);
    (most + 500) as u32
}

/// Saturation, then new connections, each cut into rounds that run every subject for one slice
/// in a rotating order (as the fixed rates do), so their ratios are not one subject's luck.
fn throughput_interleaved(live: &mut [Live], s: &Settings) {
    let rounds = s.throughput_rounds.max(1);
    let share = |seconds: f64| Duration::from_secs_f64(seconds / rounds as f64);
    eprintln!(
        "bench: saturation and new connections, {rounds} rounds of {:.1} + {:.1} s per subject",
        share(s.saturation_seconds).as_secs_f64(),
        share(s.new_conn_seconds).as_secs_f64()
    );
    let saturation = closed_loop_interleaved(
        live,
        rounds,
        "saturation",
        share(s.saturation_seconds),
        |target, d| loadgen::saturation_slice(target, s.connections, d),
    );
    let new_conn = closed_loop_interleaved(
        live,
        rounds,
        "new connection per request",
        share(s.new_conn_seconds),
        |target, d| loadgen::new_connection_slice(target, s.new_conn_workers, d),
    );
    for ((l, saturation), new_conn) in live.iter_mut().zip(saturation).zip(new_conn) {
        l.report.saturation = saturation.map(|r| r.saturation(s.connections));
        l.report.new_conn = new_conn.map(|r| r.new_conn(s.new_conn_workers));
    }
}

/// [`interleave`] of one closed-loop scenario, `slice` long per subject and round: each
/// subject's slices added up, `None` for a subject whose slice failed.
fn closed_loop_interleaved(
    live: &mut [Live],
    rounds: usize,
    what: &str,
    slice: Duration,
    run: impl Fn(SocketAddr, Duration) -> anyhow::Result<Slices>,
) -> Vec<Option<Slices>> {
    let mut runs = vec![Slices::default(); live.len()];
    let finished = interleave(live, rounds, what, |i, l| {
        runs[i].merge(&run(l.subject.target(), slice)?);
        Ok(())
    });
    runs.into_iter()
        .zip(finished)
        .map(|(run, done)| done.then_some(run))
        .collect()
}

fn bulk_and_memory(l: &mut Live, s: &Settings) {
    let name = l.report.name.clone();
    let target = l.subject.target();
    eprintln!("bench: {name}: bulk");
    for dir in [Direction::Upload, Direction::Download] {
        for streams in [1, 8] {
            match loadgen::bulk(
                target,
                dir,
                streams,
                Duration::from_secs_f64(s.bulk_seconds),
            ) {
                Ok(r) => l.report.bulk.push(r),
                Err(e) => l.fail(&format!("bulk {dir:?} x{streams}"), e),
            }
        }
    }
    let pids: Vec<u32> = l.subject.processes().iter().map(|p| p.pid()).collect();
    if pids.is_empty() {
        return;
    }
    let mut held: Vec<TcpStream> = Vec::new();
    for &n in &s.idle_connection_counts {
        eprintln!("bench: {name}: {n} idle connections");
        match loadgen::open_idle(target, n.saturating_sub(held.len())) {
            Ok(more) => held.extend(more),
            Err(e) => {
                l.fail(&format!("{n} idle connections"), e);
                break;
            }
        }
        // Let allocators and the kernel settle before sampling.
        std::thread::sleep(Duration::from_millis(500));
        for (i, pid) in pids.iter().enumerate() {
            if let Ok(kb) = procstat::rss_kb(*pid) {
                l.report.processes[i].rss_with_connections_kb.push((n, kb));
            }
        }
    }
    // The pair still answers with all of them open.
    if let Err(e) = loadgen::echo_connection(target)
        .and_then(|mut c| Ok(loadgen::round_trip(&mut c, &[9u8; MESSAGE_SIZE])?))
    {
        l.fail("request with idle connections held", e);
    }
}

fn versions(bins: &Binaries) -> Versions {
    let cmd = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    Versions {
        tandem: env!("CARGO_PKG_VERSION").into(),
        git_commit: cmd(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        ),
        haproxy: crate::haproxy::version().unwrap_or_else(|e| format!("unavailable: {e:#}")),
        rustc: cmd("rustc", &["--version"]),
        link_order: match bins.path("tandem-proxy").and_then(|proxy| {
            crate::link_order::coverage(&proxy, &crate::link_order::default_out())
        }) {
            Ok(c) => {
                if c.found * 10 < c.named * 9 {
                    eprintln!(
                        "bench: warning: the proxy's link order is stale ({c}): run \
                         `tandem-bench link-order`, or the idle proxy maps most of its text"
                    );
                }
                c.to_string()
            }
            Err(e) => format!("unknown: {e:#}"),
        },
    }
}
