//! `profile`: one subject, one scenario, with `perf record` (software `cpu-clock` sampling; the
//! machine exposes no hardware counters) attached to the subject's processes, then a flat
//! `perf report` per process and the CPU each used. For finding where a proxy spends its time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::compare::start_subject;
use crate::echo::Backend;
use crate::loadgen::{self, Direction};
use crate::pki::BenchPki;
use crate::process::ChildProcess;
use crate::procstat;
use crate::tandem::Binaries;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// 1 kB requests at a fixed 5,000 rps over 8 persistent connections.
    Rate,
    /// 1 kB requests as fast as possible over 8 persistent connections.
    Saturation,
    /// A new connection per request, 8 workers.
    Newconn,
    /// One upload stream.
    Bulk,
}

pub struct ProfileOptions {
    pub subject: String,
    pub scenario: Scenario,
    pub seconds: f64,
    pub out_dir: PathBuf,
    pub build: bool,
}

/// Runs the scenario under `perf record` and returns a short text summary.
pub fn run(opts: &ProfileOptions) -> anyhow::Result<String> {
    let rt = tokio::runtime::Runtime::new()?;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let bins = Binaries::locate(opts.build)?;
    let pki = BenchPki::generate()?;
    let backend = rt.block_on(Backend::start())?;
    let subject = start_subject(
        &opts.subject,
        &bins,
        &pki,
        backend.addr(),
        &opts.out_dir,
        2000,
    )?;
    let target = subject.target();
    loadgen::fixed_rate(target, 500.0, 2, Duration::from_millis(400))?;
    let procs: Vec<&ChildProcess> = subject.processes();
    anyhow::ensure!(
        !procs.is_empty(),
        "subject {} has no proxy process to profile",
        opts.subject
    );
    let ticks = procstat::clock_ticks_per_sec();
    let name = format!("{}-{:?}", opts.subject, opts.scenario).to_lowercase();
    let mut recorders = Vec::new();
    for p in &procs {
        let data = opts.out_dir.join(format!("{name}-{}.data", slug(&p.role)));
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-o"])
            .arg(&data)
            .args(["-p", &p.pid().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        recorders.push((
            ChildProcess::spawn("perf record", cmd)?,
            data,
            p.role.clone(),
        ));
    }
    // perf needs a moment to attach.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before: Vec<_> = procs
        .iter()
        .map(|p| procstat::cpu_time(p.pid(), ticks))
        .collect::<Result<_, _>>()?;
    let d = Duration::from_secs_f64(opts.seconds);
    let work = match opts.scenario {
        Scenario::Rate => {
            let r = loadgen::fixed_rate(target, 5000.0, 8, d)?.result(5000.0, 8);
            format!(
                "{} requests at {:.0} rps, p50 {} µs, p99 {} µs",
                r.requests, r.achieved_rps, r.latency.p50_us, r.latency.p99_us
            )
        }
        Scenario::Saturation => {
            let r = loadgen::saturation(target, 8, d)?;
            format!("{} requests, {:.0} rps", r.requests, r.rps)
        }
        Scenario::Newconn => {
            let r = loadgen::new_connection_per_request(target, 8, d)?;
            format!(
                "{} connections, {:.0}/s, {} errors",
                r.connections, r.conns_per_sec, r.errors
            )
        }
        Scenario::Bulk => {
            let r = loadgen::bulk(target, Direction::Upload, 1, d)?;
            format!("{:.0} MB/s upload, 1 stream", r.mb_per_sec)
        }
    };
    let mut summary = format!("{} / {:?}: {work}\n", opts.subject, opts.scenario);
    for (p, before) in procs.iter().zip(cpu_before) {
        let used = procstat::cpu_time(p.pid(), ticks)?.saturating_sub(before);
        summary.push_str(&format!(
            "  {} (pid {}): {:.2} CPU s in {:.0} s\n",
            p.role,
            p.pid(),
            used.as_secs_f64(),
            opts.seconds
        ));
    }
    for (recorder, data, role) in recorders {
        stop_perf(recorder)?;
        let report = opts.out_dir.join(format!("{name}-{}.txt", slug(&role)));
        flat_report(&data, &report)?;
        summary.push_str(&format!("  profile of {role}: {}\n", report.display()));
    }
    drop(subject);
    rt.block_on(backend.shutdown());
    Ok(summary)
}

/// Stops `perf record` with SIGINT (so it writes its data) and waits for it.
fn stop_perf(mut recorder: ChildProcess) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-INT", &recorder.pid().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "could not signal perf record");
    for _ in 0..100 {
        if recorder.check_running().is_err() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("perf record did not stop within 10 s")
}

fn flat_report(data: &Path, out: &Path) -> anyhow::Result<()> {
    let output = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-g", "none"])
        .args(["--sort", "dso,symbol", "--percent-limit", "0.7", "-i"])
        .arg(data)
        .output()
        .context("running perf report")?;
    std::fs::write(out, &output.stdout).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn slug(role: &str) -> String {
    role.replace(' ', "-")
}
