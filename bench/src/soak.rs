//! `tandem-bench soak --minutes N`: a Tandem pair under steady load while its world keeps
//! changing, checked for leaks.
//!
//! `tandem-agent dev` and two `tandem-proxy` processes (release build): `static-server` in
//! front of the echo backend, `static-client` with an upstream listener for it. For the whole
//! run four keep-alive connections do a 1 kB round trip every 40 ms and two workers open a new
//! connection per request, 25 a second each: 150 requests/s. Meanwhile ([`schedule`]):
//!
//! - the intention `static-client -> static-server` is denied at 0:15 of every minute and
//!   allowed again at 0:45;
//! - in the allowed half-minute around every 2nd minute mark the CA rotates, around every 3rd
//!   the server proxy is killed (SIGKILL) and started again on the same ports, around every 5th
//!   the agent is stopped (SIGSTOP) for 20 s;
//! - at every minute mark both proxies' RSS, open descriptors and `tandem_tasks` are read.
//!
//! A failed request is [`Cause::Denied`] inside a deny window, [`Cause::Restart`] inside a
//! restart window, else [`Cause::Other`]. The verdict: no other failures, every action done,
//! and the client proxy (which lives the whole run) flat from minute 1 to the end within
//! [`TOLERANCE`].

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::echo::{Backend, MESSAGE_SIZE};
use crate::loadgen::{echo_connection, one_shot, round_trip};
use crate::process::{free_port, wait_listening, ChildProcess};
use crate::report::Machine;
use crate::tandem::{logs_to, wait_ready, Binaries};
use crate::{http, machine, procstat};

pub const CLIENT_SERVICE: &str = "static-client";
pub const SERVER_SERVICE: &str = "static-server";

/// Keep-alive connections, and the round trips each does per second.
const KEEP_ALIVE_CONNECTIONS: usize = 4;
const KEEP_ALIVE_RPS: f64 = 25.0;
/// Workers opening a new connection per request, and the requests each makes per second.
const NEW_CONNECTION_WORKERS: usize = 2;
const NEW_CONNECTION_RPS: f64 = 25.0;

/// How long the agent stays stopped.
const PAUSE: Duration = Duration::from_secs(20);
/// Failures still count as denied this long after the allow is answered: the proxies learn it
/// from a blocking query and a keep-alive worker reconnects at its next tick.
const DENY_GRACE: Duration = Duration::from_secs(2);
/// Failures still count as a restart's this long after the new server proxy is ready.
const RESTART_GRACE: Duration = Duration::from_secs(5);
/// Resources are the smallest of this many readings 100 ms apart, so a connection in flight at
/// one reading does not count.
const READINGS: usize = 5;
/// Failures of cause "other" kept with their error, for the report.
const OTHER_SAMPLES: usize = 50;

/// The flatness allowed between minute 1 and the end of the run, for the client proxy.
pub const TOLERANCE: Tolerance = Tolerance {
    rss_fraction: 0.10,
    rss_floor_kb: 3 * 1024,
    fds: 4,
    tasks: 4,
};

/// `tandem-bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Length of the run in minutes (a multiple of 30 gets every kind of event in the same
    /// proportion; 3 is a quick shake-out without an agent pause).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(2..))]
    pub minutes: u32,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Do not build the release binaries first (they are then expected next to this
    /// executable).
    #[arg(long)]
    pub no_build: bool,
    /// Directory for the processes' logs.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("tandem-bench-soak"))]
    pub work_dir: PathBuf,
}

/// Runs the soak, prints each minute, the table and the verdict, writes the JSON report if
/// asked. Returns whether the verdict passed.
pub fn main(args: SoakArgs) -> anyhow::Result<bool> {
    let report = run(&args)?;
    println!("{}", report.markdown());
    if let Some(path) = &args.report {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("soak: wrote {}", path.display());
    }
    Ok(report.verdict.pass)
}

/// Starts everything, runs the schedule, stops everything and judges.
pub fn run(args: &SoakArgs) -> anyhow::Result<SoakReport> {
    let bins = Binaries::locate(!args.no_build)?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let mut machine = machine::describe();
    let date = machine::utc_now();
    // The backend's tasks run on this runtime's one worker thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let backend = rt.block_on(Backend::start())?;
    let mut mesh = Mesh::start(&bins, backend.addr(), &args.work_dir)?;
    eprintln!(
        "soak: agent {}, client proxy pid {} (upstream {}), server proxy pid {}; logs in {}",
        mesh.agent_addr,
        mesh.client.pid(),
        mesh.upstream,
        mesh.server.as_ref().map_or(0, ChildProcess::pid),
        args.work_dir.display()
    );

    let start = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger::new(start, args.minutes)));
    let load = Load::start(mesh.upstream, &ledger, start);
    let mut events = Vec::new();
    let mut samples: Vec<(u32, Option<Resources>, Option<Resources>)> = Vec::new();
    let mut aborted = None;
    print_header();
    for step in schedule(args.minutes) {
        let due = start + step.at;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let began = start.elapsed();
        let result = match step.action {
            Action::Report { minute } => {
                let (client, server, result) = mesh.sample();
                let counts = lock(&ledger).minutes[minute as usize - 1];
                print_row(minute, &counts, &events, client.as_ref(), server.as_ref());
                samples.push((minute, client, server));
                result
            }
            action => mesh.act(action, &ledger, start),
        };
        let error = result.err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            eprintln!("soak: {} at {} failed: {e}", step.action, clock(began));
        }
        events.push(Event {
            action: step.action,
            planned_s: step.at.as_secs_f64(),
            at_s: began.as_secs_f64(),
            took_ms: (start.elapsed() - began).as_secs_f64() * 1e3,
            error: error.clone(),
        });
        if let Err(e) = mesh.client.check_running() {
            let log = args.work_dir.join("proxy-client.log");
            aborted = Some(format!(
                "{e:#}; the end of {}:\n{}",
                log.display(),
                tail(&log, 20)
            ));
            eprintln!("soak: stopping: {}", aborted.as_deref().unwrap_or_default());
            break;
        }
    }
    load.stop();
    let client_metrics = http::request(mesh.client_admin, "GET", "/metrics", None)
        .map(|r| ClientMetrics::parse(&r.body))
        .ok();
    let server_starts = mesh.server_starts;
    drop(mesh);
    rt.block_on(backend.shutdown());
    machine.load_average_end = machine::load_average();

    let ledger = Arc::try_unwrap(ledger)
        .map_err(|_| anyhow::anyhow!("load threads still hold the ledger"))?
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let rows: Vec<MinuteRow> = ledger
        .minutes
        .iter()
        .enumerate()
        .map(|(i, counts)| {
            let minute = i as u32 + 1;
            let sample = samples.iter().find(|s| s.0 == minute);
            MinuteRow {
                minute,
                counts: *counts,
                events: minute_events(&events, minute),
                client: sample.and_then(|s| s.1),
                server: sample.and_then(|s| s.2),
            }
        })
        .collect();
    let totals = rows
        .iter()
        .fold(Counts::default(), |a, r| a.plus(&r.counts));
    let failed_actions = events.iter().filter(|e| e.error.is_some()).count();
    let verdict = judge(&rows, &totals, failed_actions, aborted.as_deref());
    Ok(SoakReport {
        date,
        git_commit: git_commit(),
        machine,
        minutes: args.minutes,
        load: LoadSettings::current(),
        tolerance: TOLERANCE,
        rows,
        totals,
        other_failures: ledger.other,
        events,
        server_starts,
        client_metrics,
        warnings: log_warnings(&args.work_dir),
        verdict,
    })
}

// ----- The schedule -----------------------------------------------------------------------

/// What the driver does at a point of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read both proxies' resources and print the minute's row.
    Report {
        minute: u32,
    },
    /// `PUT` the intention `static-client -> static-server` as deny / allow.
    Deny,
    Allow,
    /// `PUT /v1/connect/ca/configuration`: a new root, and new leaves for both proxies.
    RotateCa,
    /// SIGKILL the server proxy, start it again on the same ports, wait until it is ready.
    RestartServer,
    /// SIGSTOP / SIGCONT the agent.
    PauseAgent,
    ResumeAgent,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Report { minute } => write!(f, "report {minute}"),
            Action::Deny => f.write_str("deny"),
            Action::Allow => f.write_str("allow"),
            Action::RotateCa => f.write_str("rotate"),
            Action::RestartServer => f.write_str("restart"),
            Action::PauseAgent => f.write_str("pause"),
            Action::ResumeAgent => f.write_str("resume"),
        }
    }
}

/// An action and when it is due, from the start of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// Every step of a run of `minutes`, in order.
///
/// Each minute is denied from 0:15 to 0:45, so the half-minute around each minute mark `M`
/// (`M`:00 - 15 s to + 15 s) is allowed. The events of mark `M` happen in it, where traffic
/// flows and no intention is written: at -13 s a CA rotation (`M` even), at -11 s a server
/// restart (`M` a multiple of 3), from -8 s to +12 s an agent pause (`M` a multiple of 5 and
/// before the end); at `M`:00 the report, 11 s after a restart. So a 30-minute run has 30 deny
/// windows, 15 rotations, 10 restarts and 5 pauses.
pub fn schedule(minutes: u32) -> Vec<Step> {
    let s = |secs: u64| Duration::from_secs(secs);
    let mut steps = Vec::new();
    for m in 0..u64::from(minutes) {
        steps.push((s(60 * m + 15), Action::Deny));
        steps.push((s(60 * m + 45), Action::Allow));
    }
    for minute in 1..=minutes {
        let mark = 60 * u64::from(minute);
        steps.push((s(mark), Action::Report { minute }));
        if minute % 2 == 0 {
            steps.push((s(mark - 13), Action::RotateCa));
        }
        if minute % 3 == 0 {
            steps.push((s(mark - 11), Action::RestartServer));
        }
        if minute % 5 == 0 && minute < minutes {
            steps.push((s(mark - 8), Action::PauseAgent));
            steps.push((s(mark - 8) + PAUSE, Action::ResumeAgent));
        }
    }
    steps.sort_by_key(|&(at, _)| at);
    steps
        .into_iter()
        .map(|(at, action)| Step { at, action })
        .collect()
}

// ----- Failure classification -------------------------------------------------------------

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// While the intention denied `static-client -> static-server` (expected).
    Denied,
    /// While the server proxy was being restarted (expected).
    Restart,
    /// Anything else: a fault.
    Other,
}

/// The windows in which failures are expected, as the driver opens and closes them.
#[derive(Debug, Default, Clone)]
pub struct Windows {
    spans: Vec<Span>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    cause: Cause,
    from: Duration,
    /// The close plus its grace; `None` while open.
    to: Option<Duration>,
}

impl Windows {
    /// Opens a window of `cause` at `at` (call it before acting, so every failure the action
    /// causes falls inside).
    pub fn open(&mut self, cause: Cause, at: Duration) {
        self.spans.push(Span {
            cause,
            from: at,
            to: None,
        });
    }

    /// Closes the open window of `cause`: failures still count as `cause` until `at + grace`.
    pub fn close(&mut self, cause: Cause, at: Duration, grace: Duration) {
        if let Some(span) = self
            .spans
            .iter_mut()
            .rev()
            .find(|s| s.cause == cause && s.to.is_none())
        {
            span.to = Some(at + grace);
        }
    }

    /// The cause of a request that started at `start` and failed at `end`: a restart window it
    /// overlaps, else a deny window it overlaps, else other.
    pub fn classify(&self, start: Duration, end: Duration) -> Cause {
        let overlaps = |cause: Cause| {
            self.spans
                .iter()
                .any(|s| s.cause == cause && end >= s.from && s.to.is_none_or(|to| start <= to))
        };
        if overlaps(Cause::Restart) {
            Cause::Restart
        } else if overlaps(Cause::Denied) {
            Cause::Denied
        } else {
            Cause::Other
        }
    }
}

/// Requests of one minute by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ok: u64,
    pub denied: u64,
    pub restart: u64,
    pub other: u64,
}

impl Counts {
    fn add(&mut self, cause: Cause) {
        match cause {
            Cause::Denied => self.denied += 1,
            Cause::Restart => self.restart += 1,
            Cause::Other => self.other += 1,
        }
    }

    fn plus(&self, o: &Counts) -> Counts {
        Counts {
            ok: self.ok + o.ok,
            denied: self.denied + o.denied,
            restart: self.restart + o.restart,
            other: self.other + o.other,
        }
    }
}

// ----- Flatness and the verdict -----------------------------------------------------------

/// What one proxy holds at a minute mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `VmRSS`, kB.
    pub rss_kb: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: u64,
    /// `tandem_tasks` from its `/metrics`.
    pub tasks: u64,
}

/// How much the client proxy may grow from minute 1 to the end: RSS by `rss_fraction` of the
/// minute-1 value or `rss_floor_kb`, whichever is more; descriptors and tasks by a count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub rss_fraction: f64,
    pub rss_floor_kb: u64,
    pub fds: u64,
    pub tasks: u64,
}

/// One line of the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub what: String,
    pub detail: String,
    pub pass: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub checks: Vec<Check>,
}

/// Growth checks of `end` against `baseline`; shrinking always passes.
pub fn flatness(baseline: &Resources, end: &Resources, tol: &Tolerance) -> Vec<Check> {
    let rss_allowance = ((baseline.rss_kb as f64 * tol.rss_fraction) as u64).max(tol.rss_floor_kb);
    let check = |what: &str, base: u64, end: u64, allowance: u64, unit: &str| Check {
        what: format!("client proxy {what} flat"),
        detail: format!(
            "{base}{unit} after minute 1, {end}{unit} at the end ({:+}), allowed up to {}{unit}",
            end as i64 - base as i64,
            base + allowance
        ),
        pass: end <= base + allowance,
    };
    vec![
        check("RSS", baseline.rss_kb, end.rss_kb, rss_allowance, " kB"),
        check("open fds", baseline.fds, end.fds, tol.fds, ""),
        check("tasks", baseline.tasks, end.tasks, tol.tasks, ""),
    ]
}

fn judge(
    rows: &[MinuteRow],
    totals: &Counts,
    failed_actions: usize,
    aborted: Option<&str>,
) -> Verdict {
    let mut checks = vec![
        Check {
            what: "no failures other than denied or restart".into(),
            detail: format!(
                "{} ok, {} denied, {} restart, {} other",
                totals.ok, totals.denied, totals.restart, totals.other
            ),
            pass: totals.other == 0 && totals.ok > 0,
        },
        Check {
            what: "every scheduled action done".into(),
            detail: format!("{failed_actions} failed"),
            pass: failed_actions == 0,
        },
        Check {
            what: "client proxy ran the whole time".into(),
            detail: aborted.unwrap_or("yes").to_string(),
            pass: aborted.is_none(),
        },
    ];
    let first = rows.first().and_then(|r| r.client);
    let last = rows.last().and_then(|r| r.client);
    match (first, last) {
        (Some(first), Some(last)) if rows.len() > 1 => {
            checks.extend(flatness(&first, &last, &TOLERANCE));
        }
        _ => checks.push(Check {
            what: "client proxy flat".into(),
            detail: "no reading after minute 1 and at the end".into(),
            pass: false,
        }),
    }
    Verdict {
        pass: checks.iter().all(|c| c.pass),
        checks,
    }
}

// ----- The report -------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    pub date: String,
    pub git_commit: String,
    pub machine: Machine,
    pub minutes: u32,
    pub load: LoadSettings,
    pub tolerance: Tolerance,
    pub rows: Vec<MinuteRow>,
    pub totals: Counts,
    /// The first failures of cause other, with their errors.
    pub other_failures: Vec<FailureSample>,
    pub events: Vec<Event>,
    /// Server proxy processes started (the first one and each restart).
    pub server_starts: u32,
    /// The client proxy's own counters at the end.
    pub client_metrics: Option<ClientMetrics>,
    /// WARN and ERROR lines of the proxies' logs.
    pub warnings: Vec<LogWarnings>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSettings {
    pub keep_alive_connections: usize,
    pub keep_alive_rps_each: f64,
    pub new_connection_workers: usize,
    pub new_connection_rps_each: f64,
    pub total_rps: f64,
}

impl LoadSettings {
    fn current() -> Self {
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinuteRow {
    pub minute: u32,
    pub counts: Counts,
    /// The rotations, restarts and pauses that happened in the minute.
    pub events: Vec<String>,
    pub client: Option<Resources>,
    pub server: Option<Resources>,
}

/// What the driver did, when, and whether it worked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub action: Action,
    pub planned_s: f64,
    pub at_s: f64,
    pub took_ms: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureSample {
    pub start_s: f64,
    pub end_s: f64,
    /// `keep-alive` or `new connection`.
    pub load: String,
    pub error: String,
}

/// Counters of the client proxy at the end of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientMetrics {
    pub leaf_rotations: Option<f64>,
    pub root_updates: Option<f64>,
    pub trust_roots: Option<f64>,
    pub connections_opened: Option<f64>,
    pub connections_active: Option<f64>,
    pub upstream_connect_failures: Option<f64>,
    pub agent_watch_errors: Option<f64>,
    pub registrations: Option<f64>,
}

impl ClientMetrics {
    fn parse(text: &str) -> Self {
        let m = |name: &str| metric_sum(text, name);
        Self {
            leaf_rotations: m("tandem_leaf_rotations_total"),
            root_updates: m("tandem_root_updates_total"),
            trust_roots: m("tandem_trust_roots"),
            connections_opened: m("tandem_connections_opened_total"),
            connections_active: m("tandem_connections_active"),
            upstream_connect_failures: m("tandem_upstream_connect_failures_total"),
            agent_watch_errors: m("tandem_agent_watch_errors_total"),
            registrations: m("tandem_registrations_total"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogWarnings {
    pub log: String,
    pub count: usize,
    /// The first few lines.
    pub first: Vec<String>,
}

impl SoakReport {
    /// The per-minute table, the totals and the verdict, as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Soak of {} minutes, {} (commit {}), {} req/s ({} keep-alive connections at {} \
             req/s each, {} new-connection workers at {} req/s each); {} CPUs, load average \
             {} at the start, {} at the end.\n",
            self.minutes,
            self.date,
            self.git_commit,
            self.load.total_rps,
            self.load.keep_alive_connections,
            self.load.keep_alive_rps_each,
            self.load.new_connection_workers,
            self.load.new_connection_rps_each,
            self.machine.nproc,
            self.machine.load_average_start,
            self.machine.load_average_end,
        );
        s.push_str(TABLE_HEADER);
        for r in &self.rows {
            s.push_str(&row_markdown(
                r.minute, &r.counts, &r.events, r.client, r.server,
            ));
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "| **all** | {} | {} | {} | {} | {} server starts | | | | | | |",
            t.ok, t.denied, t.restart, t.other, self.server_starts
        );
        if let Some(m) = &self.client_metrics {
            let v = |x: Option<f64>| x.map_or("?".to_string(), |x| format!("{x}"));
            let _ = writeln!(
                s,
                "\nClient proxy at the end: {} leaf rotations, {} root updates, {} trusted \
                 roots, {} connections opened, {} upstream connect failures, {} agent watch \
                 errors, {} registrations.",
                v(m.leaf_rotations),
                v(m.root_updates),
                v(m.trust_roots),
                v(m.connections_opened),
                v(m.upstream_connect_failures),
                v(m.agent_watch_errors),
                v(m.registrations),
            );
        }
        let _ = writeln!(
            s,
            "\n**Verdict: {}**\n",
            if self.verdict.pass { "PASS" } else { "FAIL" }
        );
        for c in &self.verdict.checks {
            let mark = if c.pass { "ok" } else { "FAILED" };
            let _ = writeln!(s, "- {mark}: {} ({})", c.what, c.detail);
        }
        for f in self.other_failures.iter().take(10) {
            let _ = writeln!(
                s,
                "- other failure at {} ({}): {}",
                clock(Duration::from_secs_f64(f.end_s)),
                f.load,
                f.error
            );
        }
        for e in self.events.iter().filter(|e| e.error.is_some()) {
            let _ = writeln!(
                s,
                "- {} at {} failed: {}",
                e.action,
                clock(Duration::from_secs_f64(e.at_s)),
                e.error.as_deref().unwrap_or_default()
            );
        }
        for w in self.warnings.iter().filter(|w| w.count > 0) {
            let _ = writeln!(s, "- {}: {} WARN/ERROR lines, first:", w.log, w.count);
            for l in &w.first {
                let _ = writeln!(s, "    {l}");
            }
        }
        s
    }
}

const TABLE_HEADER: &str = "| min | ok | denied | restart | other | events | client RSS MB | \
    client fds | client tasks | server RSS MB | server fds | server tasks |\n\
    |---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";

fn row_markdown(
    minute: u32,
    c: &Counts,
    events: &[String],
    client: Option<Resources>,
    server: Option<Resources>,
) -> String {
    let res = |r: Option<Resources>| match r {
        Some(r) => format!("{:.1} | {} | {}", r.rss_kb as f64 / 1024.0, r.fds, r.tasks),
        None => "- | - | -".into(),
    };
    format!(
        "| {minute} | {} | {} | {} | {} | {} | {} | {} |\n",
        c.ok,
        c.denied,
        c.restart,
        c.other,
        events.join(", "),
        res(client),
        res(server)
    )
}

fn print_header() {
    print!("{TABLE_HEADER}");
}

fn print_row(
    minute: u32,
    c: &Counts,
    events: &[Event],
    client: Option<&Resources>,
    server: Option<&Resources>,
) {
    print!(
        "{}",
        row_markdown(
            minute,
            c,
            &minute_events(events, minute),
            client.copied(),
            server.copied()
        )
    );
}

/// The rotations, restarts and pauses of `minute` (the intention flips happen every minute).
fn minute_events(events: &[Event], minute: u32) -> Vec<String> {
    let from = f64::from(minute - 1) * 60.0;
    events
        .iter()
        .filter(|e| e.at_s >= from && e.at_s < from + 60.0)
        .filter(|e| {
            matches!(
                e.action,
                Action::RotateCa | Action::RestartServer | Action::PauseAgent | Action::ResumeAgent
            )
        })
        .map(|e| {
            let failed = if e.error.is_some() { " FAILED" } else { "" };
            format!(
                "{} {}{failed}",
                e.action,
                clock(Duration::from_secs_f64(e.at_s))
            )
        })
        .collect()
}

/// `m:ss` from the start of the load.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// The sum of every series of `name` in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

// ----- The processes ----------------------------------------------------------------------

/// The agent and the two proxies.
struct Mesh {
    // Fields drop in order: the proxies go before the agent they watch.
    client: ChildProcess,
    server: Option<ChildProcess>,
    agent: ChildProcess,
    proxy: PathBuf,
    log_dir: PathBuf,
    agent_addr: SocketAddr,
    backend: SocketAddr,
    client_admin: SocketAddr,
    upstream: SocketAddr,
    server_public: SocketAddr,
    server_admin: SocketAddr,
    server_starts: u32,
}

impl Mesh {
    fn start(bins: &Binaries, backend: SocketAddr, log_dir: &Path) -> anyhow::Result<Self> {
        let agent_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = Command::new(bins.path("tandem-agent")?);
        cmd.arg("dev")
            .args(["--http-addr", &agent_addr.to_string()])
            .args(["--default-intention", "deny"]);
        logs_to(&mut cmd, log_dir, "agent")?;
        let mut agent = ChildProcess::spawn("tandem-agent", cmd)?;
        wait_listening(&mut agent, agent_addr, Duration::from_secs(15))?;
        set_intention(agent_addr, "allow")?;

        let proxy = bins.path("tandem-proxy")?;
        let upstream: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let client_admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = Command::new(&proxy);
        cmd.args(["--service", CLIENT_SERVICE])
            .args([
                "--upstreams",
                &format!("{SERVER_SERVICE}:{}", upstream.port()),
            ])
            .args(["--public-listener", &format!("127.0.0.1:{}", free_port()?)])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--admin-listener", &client_admin.to_string()])
            .args(["--consul-http-addr", &format!("http://{agent_addr}")]);
        logs_to(&mut cmd, log_dir, "proxy-client")?;
        let client = ChildProcess::spawn("tandem-proxy client", cmd)?;

        let mut mesh = Self {
            client,
            server: None,
            agent,
            proxy,
            log_dir: log_dir.to_path_buf(),
            agent_addr,
            backend,
            client_admin,
            upstream,
            server_public: ([127, 0, 0, 1], free_port()?).into(),
            server_admin: ([127, 0, 0, 1], free_port()?).into(),
            server_starts: 0,
        };
        mesh.start_server()?;
        wait_ready(&mut mesh.client, client_admin)?;
        // Ready means listening; the client may still be learning the server's instance.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = one_shot(upstream) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no answer through the pair at {upstream} within 60 s: {e:#}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Ok(mesh)
    }

    /// Starts a server proxy on the same ports as every one before it, and waits until it is
    /// ready. Each one logs to its own file.
    fn start_server(&mut self) -> anyhow::Result<()> {
        self.server_starts += 1;
        let mut cmd = Command::new(&self.proxy);
        cmd.args(["--service", SERVER_SERVICE])
            .args(["--service-port", &self.backend.port().to_string()])
            .args(["--service-address", "127.0.0.1"])
            .args(["--public-listener", &self.server_public.to_string()])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--admin-listener", &self.server_admin.to_string()])
            .args(["--consul-http-addr", &format!("http://{}", self.agent_addr)]);
        let log = format!("proxy-server-{}", self.server_starts);
        logs_to(&mut cmd, &self.log_dir, &log)?;
        let mut server = ChildProcess::spawn(&format!("tandem-proxy server ({log})"), cmd)?;
        let ready = wait_ready(&mut server, self.server_admin);
        self.server = Some(server);
        ready
    }

    fn act(
        &mut self,
        action: Action,
        ledger: &Mutex<Ledger>,
        start: Instant,
    ) -> anyhow::Result<()> {
        let now = || start.elapsed();
        match action {
            Action::Report { .. } => unreachable!("reports are handled by the driver"),
            Action::Deny => {
                lock(ledger).windows.open(Cause::Denied, now());
                set_intention(self.agent_addr, "deny")
            }
            Action::Allow => {
                let r = set_intention(self.agent_addr, "allow");
                lock(ledger).windows.close(Cause::Denied, now(), DENY_GRACE);
                r
            }
            Action::RotateCa => rotate_ca(self.agent_addr),
            Action::RestartServer => {
                lock(ledger).windows.open(Cause::Restart, now());
                // Dropping the process kills it (SIGKILL) and reaps it.
                drop(self.server.take());
                let r = self.start_server();
                lock(ledger)
                    .windows
                    .close(Cause::Restart, now(), RESTART_GRACE);
                r
            }
            Action::PauseAgent => signal(&self.agent, "STOP"),
            Action::ResumeAgent => signal(&self.agent, "CONT"),
        }
    }

    /// Both proxies' resources, and an error if either proxy is not running or cannot be read.
    fn sample(&mut self) -> (Option<Resources>, Option<Resources>, anyhow::Result<()>) {
        let client = self
            .client
            .check_running()
            .and_then(|()| resources(self.client.pid(), self.client_admin));
        let server = match self.server.as_mut() {
            Some(s) => s
                .check_running()
                .and_then(|()| resources(s.pid(), self.server_admin)),
            None => Err(anyhow::anyhow!("no server proxy running")),
        };
        let result = match (&client, &server) {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(e), _) => Err(anyhow::anyhow!("client proxy: {e:#}")),
            (_, Err(e)) => Err(anyhow::anyhow!("server proxy: {e:#}")),
        };
        (client.ok(), server.ok(), result)
    }
}

/// `PUT /v1/connect/intentions/exact` for `static-client -> static-server`.
fn set_intention(agent: SocketAddr, action: &str) -> anyhow::Result<()> {
    let path = format!(
        "/v1/connect/intentions/exact?source={CLIENT_SERVICE}&destination={SERVER_SERVICE}"
    );
    let body = format!(r#"{{"SourceType":"consul","Action":"{action}"}}"#);
    expect_200(agent, "PUT", &path, &body)
}

/// A new root from the built-in provider. The dev agent's CA makes every root EC P-256 (it
/// does not take a key or key type from the configuration), so every rotation is to a new
/// P-256 key.
fn rotate_ca(agent: SocketAddr) -> anyhow::Result<()> {
    let body = r#"{"Provider":"consul","Config":{"LeafCertTTL":"72h"}}"#;
    expect_200(agent, "PUT", "/v1/connect/ca/configuration", body)
}

fn expect_200(agent: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<()> {
    let r = http::request(agent, method, path, Some(body))?;
    anyhow::ensure!(
        r.status == 200,
        "agent at {agent} answered {} to {method} {path}: {}",
        r.status,
        r.body.trim()
    );
    Ok(())
}

fn signal(process: &ChildProcess, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &process.pid().to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {} failed", process.role);
    Ok(())
}

/// The smallest of [`READINGS`] readings of each resource.
fn resources(pid: u32, admin: SocketAddr) -> anyhow::Result<Resources> {
    let mut min: Option<Resources> = None;
    for i in 0..READINGS {
        if i > 0 {
            thread::sleep(Duration::from_millis(100));
        }
        let metrics = http::request(admin, "GET", "/metrics", None)?;
        let tasks = metric_sum(&metrics.body, "tandem_tasks")
            .with_context(|| format!("no tandem_tasks in http://{admin}/metrics"))?;
        let r = Resources {
            rss_kb: procstat::rss_kb(pid)?,
            fds: procstat::open_fds(pid)?,
            tasks: tasks as u64,
        };
        min = Some(match min {
            None => r,
            Some(m) => Resources {
                rss_kb: m.rss_kb.min(r.rss_kb),
                fds: m.fds.min(r.fds),
                tasks: m.tasks.min(r.tasks),
            },
        });
    }
    min.context("no readings")
}

/// WARN and ERROR lines of every proxy log in `dir`.
fn log_warnings(dir: &Path) -> Vec<LogWarnings> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("proxy-") && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs.iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            LogWarnings {
                log: path.display().to_string(),
                count: lines.len(),
                first: lines.iter().take(5).map(|l| l.to_string()).collect(),
            }
        })
        .collect()
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn git_commit() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

// ----- The load ---------------------------------------------------------------------------

/// Outcomes of every request, by minute, classified as they happen.
struct Ledger {
    start: Instant,
    windows: Windows,
    minutes: Vec<Counts>,
    other: Vec<FailureSample>,
}

impl Ledger {
    fn new(start: Instant, minutes: u32) -> Self {
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

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // A panicking load thread leaves the counts usable.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The load threads: each sends at a fixed rate (a late tick is not made up), and a failed
/// keep-alive connection is opened again at the next tick.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(target: SocketAddr, ledger: &Arc<Mutex<Ledger>>, start: Instant) -> Self {
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
    fn stop(self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn at(steps: &[Step], action: Action) -> Vec<u64> {
        steps
            .iter()
            .filter(|s| s.action == action)
            .map(|s| s.at.as_secs())
            .collect()
    }

    #[test]
    fn thirty_minutes_have_every_event_at_its_time() {
        let steps = schedule(30);
        assert!(steps.windows(2).all(|w| w[0].at <= w[1].at), "in order");
        assert_eq!(at(&steps, Action::Deny).len(), 30);
        assert_eq!(at(&steps, Action::Deny)[..2], [15, 75]);
        assert_eq!(at(&steps, Action::Allow)[..2], [45, 105]);
        let rotations = at(&steps, Action::RotateCa);
        assert_eq!(rotations.len(), 15);
        assert_eq!(rotations[..3], [107, 227, 347]);
        let restarts = at(&steps, Action::RestartServer);
        assert_eq!(restarts.len(), 10);
        assert_eq!(restarts[..2], [169, 349]);
        // Minute 30's pause would outlast the run.
        assert_eq!(at(&steps, Action::PauseAgent), [292, 592, 892, 1192, 1492]);
        assert_eq!(at(&steps, Action::ResumeAgent), [312, 612, 912, 1212, 1512]);
        let reports: Vec<_> = steps
            .iter()
            .filter_map(|s| match s.action {
                Action::Report { minute } => Some((minute, s.at.as_secs())),
                _ => None,
            })
            .collect();
        assert_eq!(reports.len(), 30);
        assert!(reports.iter().all(|&(m, t)| t == 60 * u64::from(m)));
        assert_eq!(steps.last().unwrap().action, Action::Report { minute: 30 });
    }

    #[test]
    fn disruptions_happen_while_allowed_and_no_intention_is_written_while_paused() {
        let steps = schedule(30);
        let allowed = |t: Duration| {
            let s = t.as_secs() % 60;
            !(15..45).contains(&s)
        };
        let mut paused_since = None;
        for s in &steps {
            match s.action {
                Action::RotateCa | Action::RestartServer | Action::PauseAgent => {
                    assert!(
                        allowed(s.at),
                        "{} at {:?} is in a deny window",
                        s.action,
                        s.at
                    )
                }
                Action::ResumeAgent => {
                    assert!(allowed(s.at));
                    let since = paused_since.take().expect("a resume follows a pause");
                    assert_eq!(s.at - since, PAUSE);
                }
                Action::Deny | Action::Allow => assert!(paused_since.is_none(), "{:?}", s.at),
                Action::Report { .. } => {}
            }
            if s.action == Action::PauseAgent {
                paused_since = Some(s.at);
            }
        }
        assert!(paused_since.is_none(), "every pause is resumed");
    }

    #[test]
    fn a_short_run_has_a_rotation_and_a_restart() {
        let steps = schedule(3);
        assert_eq!(at(&steps, Action::RotateCa), [107]);
        assert_eq!(at(&steps, Action::RestartServer), [169]);
        assert!(at(&steps, Action::PauseAgent).is_empty());
        assert_eq!(at(&steps, Action::Deny), [15, 75, 135]);
        assert_eq!(steps.last().unwrap().at, secs(180));
        // A 5-minute run ends at minute 5: its pause would outlast it.
        assert!(at(&schedule(5), Action::PauseAgent).is_empty());
        assert_eq!(at(&schedule(6), Action::PauseAgent), [292]);
    }

    #[test]
    fn failures_are_classified_by_the_window_they_overlap() {
        let mut w = Windows::default();
        assert_eq!(w.classify(secs(1), secs(2)), Cause::Other);
        w.open(Cause::Denied, secs(15));
        assert_eq!(
            w.classify(secs(10), secs(14)),
            Cause::Other,
            "before the deny"
        );
        assert_eq!(w.classify(secs(20), secs(20)), Cause::Denied, "open window");
        w.close(Cause::Denied, secs(45), DENY_GRACE);
        assert_eq!(
            w.classify(secs(46), secs(46)),
            Cause::Denied,
            "within the grace"
        );
        assert_eq!(
            w.classify(secs(48), secs(48)),
            Cause::Other,
            "after the grace"
        );
        assert_eq!(
            w.classify(secs(14), secs(16)),
            Cause::Denied,
            "started before"
        );

        w.open(Cause::Restart, secs(100));
        assert_eq!(w.classify(secs(99), secs(105)), Cause::Restart);
        w.open(Cause::Denied, secs(102));
        assert_eq!(
            w.classify(secs(103), secs(103)),
            Cause::Restart,
            "restart first"
        );
        w.close(Cause::Restart, secs(104), RESTART_GRACE);
        assert_eq!(w.classify(secs(108), secs(108)), Cause::Restart);
        assert_eq!(
            w.classify(secs(110), secs(110)),
            Cause::Denied,
            "deny still open"
        );
        w.close(Cause::Denied, secs(120), Duration::ZERO);
        assert_eq!(w.classify(secs(121), secs(121)), Cause::Other);
        // Closing with no window open changes nothing.
        w.close(Cause::Restart, secs(200), RESTART_GRACE);
        assert_eq!(w.classify(secs(201), secs(201)), Cause::Other);
    }

    #[test]
    fn flatness_allows_the_tolerance_and_no_more() {
        let base = Resources {
            rss_kb: 10_000,
            fds: 30,
            tasks: 40,
        };
        let pass = |r: Resources| {
            flatness(&base, &r, &TOLERANCE)
                .iter()
                .map(|c| c.pass)
                .collect::<Vec<_>>()
        };
        // Small RSS: the 3 MiB floor applies.
        let at_limit = Resources {
            rss_kb: 10_000 + 3 * 1024,
            fds: 34,
            tasks: 44,
        };
        assert_eq!(pass(at_limit), [true, true, true]);
        let over = Resources {
            rss_kb: 10_000 + 3 * 1024 + 1,
            fds: 35,
            tasks: 45,
        };
        assert_eq!(pass(over), [false, false, false]);
        assert_eq!(
            pass(Resources {
                rss_kb: 5_000,
                fds: 20,
                tasks: 10
            }),
            [true, true, true],
            "shrinking is flat"
        );
        // Large RSS: 10 % applies.
        let big = Resources {
            rss_kb: 100_000,
            ..base
        };
        let checks = flatness(
            &big,
            &Resources {
                rss_kb: 110_000,
                ..base
            },
            &TOLERANCE,
        );
        assert!(checks[0].pass, "{}", checks[0].detail);
        assert!(
            !flatness(
                &big,
                &Resources {
                    rss_kb: 110_001,
                    ..base
                },
                &TOLERANCE
            )[0]
            .pass
        );
    }

    #[test]
    fn the_verdict_needs_no_other_failures_and_a_flat_client() {
        let res = Resources {
            rss_kb: 10_000,
            fds: 30,
            tasks: 40,
        };
        let row = |minute, client| MinuteRow {
            minute,
            counts: Counts::default(),
            events: vec![],
            client,
            server: None,
        };
        let rows = vec![row(1, Some(res)), row(2, Some(res))];
        let totals = Counts {
            ok: 100,
            denied: 50,
            restart: 3,
            other: 0,
        };
        assert!(judge(&rows, &totals, 0, None).pass);
        let other = Counts { other: 1, ..totals };
        assert!(!judge(&rows, &other, 0, None).pass);
        assert!(!judge(&rows, &totals, 1, None).pass, "a failed action");
        assert!(!judge(&rows, &totals, 0, Some("exited")).pass);
        assert!(!judge(&[row(1, Some(res)), row(2, None)], &totals, 0, None).pass);
        let grown = Resources { fds: 40, ..res };
        assert!(!judge(&[row(1, Some(res)), row(2, Some(grown))], &totals, 0, None).pass);
    }

    #[test]
    fn reads_metrics_by_name() {
        let text = "# HELP tandem_tasks Live tasks\n# TYPE tandem_tasks gauge\ntandem_tasks 17\n\
                    tandem_tasks_other 3\n\
                    tandem_connections_active{direction=\"inbound\"} 2\n\
                    tandem_connections_active{direction=\"outbound\"} 4\n";
        assert_eq!(metric_sum(text, "tandem_tasks"), Some(17.0));
        assert_eq!(metric_sum(text, "tandem_connections_active"), Some(6.0));
        assert_eq!(metric_sum(text, "tandem_missing"), None);
    }

    #[test]
    fn clock_is_minutes_and_seconds() {
        assert_eq!(clock(secs(292)), "4:52");
        assert_eq!(clock(secs(59)), "0:59");
    }
}
