//! The soak's report: per-minute rows, events, the client's counters, log warnings; as JSON and
//! as the Markdown table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::LoadSettings;
use super::outcome::Counts;
use super::schedule::Action;
use super::verdict::{Resources, Tolerance, Verdict};
use crate::report::Machine;

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
    pub(super) fn parse(text: &str) -> Self {
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

pub(super) fn print_header() {
    print!("{TABLE_HEADER}");
}

pub(super) fn print_row(
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
pub(super) fn minute_events(events: &[Event], minute: u32) -> Vec<String> {
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
pub(super) fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// The sum of every series of `name` in a Prometheus text exposition.
pub(super) fn metric_sum(text: &str, name: &str) -> Option<f64> {
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

/// WARN and ERROR lines of every proxy log in `dir`.
pub(super) fn log_warnings(dir: &Path) -> Vec<LogWarnings> {
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

/// The last `n` lines of a proxy log outside a connection's span (the access log and the
/// denials, a line or two per connection, would bury what the proxy said before it went away).
pub(super) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" conn{")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn git_commit() -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(clock(Duration::from_secs(292)), "4:52");
        assert_eq!(clock(Duration::from_secs(59)), "0:59");
    }
}
