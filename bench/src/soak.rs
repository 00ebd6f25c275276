//! `tandem-bench soak --minutes N`: a Tandem pair under steady load while its world keeps
//! changing, checked for leaks.
//!
//! `tandem-agent dev` and two `tandem-proxy` processes (the static release build the images
//! ship): `static-server` in
//! front of the echo backend, `static-client` with an upstream listener for it. For the whole
//! run four keep-alive connections do a 1 kB round trip every 40 ms and two workers open a new
//! connection per request, 25 a second each: 150 requests/s. Meanwhile ([`schedule()`]):
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

mod load;
mod mesh;
mod outcome;
mod report;
mod schedule;
mod verdict;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use anyhow::Context as _;

pub use load::LoadSettings;
pub use mesh::{CLIENT_SERVICE, SERVER_SERVICE};
pub use outcome::{Cause, Counts, Windows};
pub use report::{ClientMetrics, Event, FailureSample, LogWarnings, MinuteRow, SoakReport};
pub use schedule::{schedule, Action, Step};
pub use verdict::{flatness, Check, Resources, Tolerance, Verdict, TOLERANCE};

use crate::echo::Backend;
use crate::process::ChildProcess;
use crate::tandem::Binaries;
use crate::{http, machine};
use load::{lock, Ledger, Load};
use mesh::Mesh;
use report::{clock, git_commit, log_warnings, minute_events, print_header, print_row, tail};
use verdict::judge;

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
    /// Do not build the static release binaries first (they are then expected in
    /// `<target dir>/x86_64-unknown-linux-gnu/release`).
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
                "{e:#}; the end of {} (per-connection lines left out):\n{}",
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
