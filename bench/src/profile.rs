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
use crate::tandem::{Binaries, TandemPair};

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
    /// 1,000 idle connections held open (for memory; pair it with `--wrap`).
    Idle,
}

pub struct ProfileOptions {
    pub subject: String,
    pub scenario: Scenario,
    pub seconds: f64,
    pub out_dir: PathBuf,
    pub build: bool,
    /// Run each tandem proxy under this command instead of attaching perf (e.g.
    /// `valgrind --tool=massif --massif-out-file=/tmp/massif.%p`).
    pub wrap: Option<String>,
}

/// Runs the scenario under `perf record` and returns a short text summary.
pub fn run(opts: &ProfileOptions) -> anyhow::Result<String> {
    let rt = tokio::runtime::Runtime::new()?;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let bins = Binaries::locate(opts.build)?;
    let pki = BenchPki::generate()?;
    let backend = rt.block_on(Backend::start())?;
    if let Some(wrap) = &opts.wrap {
        let Some(flags) = TandemPair::subject_flags(&opts.subject) else {
            anyhow::bail!(
                "--wrap applies to the Tandem subjects only, not {}",
                opts.subject
            );
        };
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let wrapper: Vec<String> = wrap.split_whitespace().map(String::from).collect();
        let mut pair =
            TandemPair::start_wrapped_with(&bins, backend.addr(), &opts.out_dir, &wrapper, &flags)?;
        let summary = run_wrapped(&mut pair, opts)?;
        drop(pair);
        rt.block_on(backend.shutdown());
        return Ok(summary);
    }
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
    let mut counters = Vec::new();
    for p in &procs {
        let out = opts.out_dir.join(format!("{name}-{}.stat", slug(&p.role)));
        let mut cmd = Command::new("perf");
        cmd.args(["stat", "-x", ",", "-e", COUNTED_EVENTS, "-o"])
            .arg(&out)
            .args(["-p", &p.pid().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        counters.push((ChildProcess::spawn("perf stat", cmd)?, out, p.role.clone()));
    }
    // perf needs a moment to attach.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before: Vec<_> = procs
        .iter()
        .map(|p| procstat::cpu_time(p.pid(), ticks))
        .collect::<Result<_, _>>()?;
    let d = Duration::from_secs_f64(opts.seconds);
    // (what happened, units of work, name of one unit)
    let (work, units, unit) = match opts.scenario {
        Scenario::Rate => {
            let r = loadgen::fixed_rate(target, 5000.0, 8, d)?.result(5000.0, 8);
            let text = format!(
                "{} requests at {:.0} rps, p50 {} µs, p99 {} µs",
                r.requests, r.achieved_rps, r.latency.p50_us, r.latency.p99_us
            );
            (text, r.requests, "request")
        }
        Scenario::Saturation => {
            let r = loadgen::saturation(target, 8, d)?;
            let text = format!("{} requests, {:.0} rps", r.requests, r.rps);
            (text, r.requests, "request")
        }
        Scenario::Newconn => {
            let r = loadgen::new_connection_per_request(target, 8, d)?;
            let text = format!(
                "{} connections, {:.0}/s, {} errors",
                r.connections, r.conns_per_sec, r.errors
            );
            (text, r.connections, "connection")
        }
        Scenario::Bulk => {
            let r = loadgen::bulk(target, Direction::Upload, 1, d)?;
            let text = format!("{:.0} MB/s upload, 1 stream", r.mb_per_sec);
            (text, r.bytes / (1 << 20), "MiB")
        }
        Scenario::Idle => {
            let held = loadgen::open_idle(target, IDLE_CONNECTIONS)?;
            std::thread::sleep(d);
            let text = format!(
                "{} idle connections held for {:.0} s",
                held.len(),
                opts.seconds
            );
            (text, held.len() as u64, "connection")
        }
    };
    let units = units.max(1) as f64;
    let mut summary = format!("{} / {:?}: {work}\n", opts.subject, opts.scenario);
    for (p, before) in procs.iter().zip(cpu_before) {
        let used = procstat::cpu_time(p.pid(), ticks)?.saturating_sub(before);
        summary.push_str(&format!(
            "  {} (pid {}): {:.2} CPU s in {:.0} s = {:.1} µs CPU per {unit}\n",
            p.role,
            p.pid(),
            used.as_secs_f64(),
            opts.seconds,
            used.as_secs_f64() * 1e6 / units,
        ));
    }
    for (counter, out, role) in counters {
        stop_perf(counter)?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let counts: Vec<String> = parse_perf_stat_csv(&text)
            .into_iter()
            .map(|(event, n)| format!("{:.1} {event}", n as f64 / units))
            .collect();
        summary.push_str(&format!(
            "  {role} per {unit}: {}\n",
            if counts.is_empty() {
                "no counters (perf stat failed)".to_string()
            } else {
                counts.join(", ")
            }
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

const IDLE_CONNECTIONS: usize = 1000;

/// The scenario against a pair whose proxies run under a wrapper (valgrind): no perf; the
/// proxies are stopped with SIGTERM at the end so the wrapper writes its output.
fn run_wrapped(pair: &mut TandemPair, opts: &ProfileOptions) -> anyhow::Result<String> {
    let target = pair.listen;
    let d = Duration::from_secs_f64(opts.seconds);
    let work = match opts.scenario {
        Scenario::Idle => {
            let held = loadgen::open_idle(target, IDLE_CONNECTIONS)?;
            std::thread::sleep(d);
            let rss: Vec<String> = [&pair.client_side, &pair.server_side]
                .iter()
                .map(|p| {
                    let kb = procstat::rss_kb(p.pid()).unwrap_or(0);
                    format!(
                        "{} RSS {:.1} MB (under the wrapper)",
                        p.role,
                        kb as f64 / 1024.0
                    )
                })
                .collect();
            drop(held);
            format!(
                "{IDLE_CONNECTIONS} idle connections held; {}",
                rss.join(", ")
            )
        }
        Scenario::Rate => {
            let r = loadgen::fixed_rate(target, 500.0, 8, d)?.result(500.0, 8);
            format!("{} requests at 500 rps", r.requests)
        }
        other => anyhow::bail!("--wrap supports the idle and rate scenarios, not {other:?}"),
    };
    pair.terminate_proxies()?;
    Ok(format!(
        "tandem (wrapped in `{}`) / {:?}: {work}\nthe wrapper's output is where its flags put it; proxy logs in {}\n",
        opts.wrap.as_deref().unwrap_or(""),
        opts.scenario,
        opts.out_dir.display()
    ))
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

/// Software events counted per process: system calls, context switches, migrations.
const COUNTED_EVENTS: &str = "raw_syscalls:sys_enter,context-switches,cpu-migrations";

/// Three flat views: share per binary/library, the hottest symbols overall, and the hottest
/// user-space symbols alone (where the proxy's own code shows up).
fn flat_report(data: &Path, out: &Path) -> anyhow::Result<()> {
    let mut text = String::new();
    for (title, args) in [
        ("share per binary", vec!["--sort", "dso"]),
        (
            "hottest symbols",
            vec!["--sort", "dso,symbol", "--percent-limit", "0.7"],
        ),
        (
            "hottest user-space symbols",
            vec![
                "--sort",
                "dso,symbol",
                "--dsos",
                "tandem-proxy,haproxy,libc.so.6,libcrypto.so.3,libssl.so.3",
                "--percent-limit",
                "0.3",
            ],
        ),
    ] {
        let output = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "-g", "none"])
            .args(&args)
            .arg("-i")
            .arg(data)
            .output()
            .context("running perf report")?;
        text.push_str(&format!("## {title}\n"));
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let line = line.trim_end().trim_end_matches('-').trim_end();
            if !line.is_empty() && !line.starts_with('#') {
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push('\n');
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// `perf stat -x ,` output: `count,unit,event,...` lines; comments and `<not counted>` skipped.
fn parse_perf_stat_csv(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split(',');
            let count = fields.next()?.trim().parse().ok()?;
            let event = fields.nth(1)?.trim().to_string();
            Some((event, count))
        })
        .collect()
}

fn slug(role: &str) -> String {
    role.replace(' ', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_stat_csv() {
        let text = "# started on Thu Nov 26\n\n123456,,raw_syscalls:sys_enter,8000000000,100.00,,\n\
                    789,,context-switches,8000000000,100.00,,\n<not supported>,,cycles,0,100.00,,\n";
        assert_eq!(
            parse_perf_stat_csv(text),
            vec![
                ("raw_syscalls:sys_enter".to_string(), 123456),
                ("context-switches".to_string(), 789)
            ]
        );
    }
}
