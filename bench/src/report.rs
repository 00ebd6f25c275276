//! What a run produces: the result types (written as JSON), the side-by-side table and the
//! generated part of `docs/PERFORMANCE.md`.

use serde::{Deserialize, Serialize};

use crate::http_scenario::HttpResult;
use crate::injector::InjectorResult;
use crate::loadgen::{BulkResult, Direction, NewConnResult, RateResult, SaturationResult};
use crate::policy::PolicyResult;

mod http;
mod markdown;

pub use markdown::splice_generated;

pub const DIRECT: &str = "direct";
pub const TANDEM: &str = "tandem";
/// A Tandem pair with `--tunnel` on both proxies: app connections ride one mTLS connection.
pub const TANDEM_TUNNEL: &str = "tandem-tunnel";
pub const HAPROXY: &str = "haproxy";
/// One HAProxy process relaying plain TCP, no TLS: the ceiling on new connections/s for any
/// proxy in the path.
pub const RELAY: &str = "relay";
/// Two HAProxy relays in a row, no TLS: what a pair of proxies adds to a request, and the
/// keep-alive requests/s it carries, before any TLS.
pub const RELAY_PAIR: &str = "relay-pair";
/// The same with two `tandem-bench copy-relay` processes: a current-thread tokio runtime as
/// Tandem's proxy runs, copying with tokio's `copy_bidirectional` (8 KiB buffers each way,
/// the system allocator), no TLS. Its latency and requests/s are the comparison; its memory and
/// bulk figures are not Tandem's.
pub const COPY_PAIR: &str = "copy-pair";
/// A Tandem pair with `--tls-resumption=false`: every new connection a full handshake (for
/// `profile`, to measure what resumption saves).
pub const TANDEM_NO_RESUMPTION: &str = "tandem-no-resumption";
/// The subjects of the TCP scenarios, in the order they are started and shown.
pub const SUBJECTS: [&str; 7] = [
    DIRECT,
    RELAY,
    RELAY_PAIR,
    COPY_PAIR,
    TANDEM,
    TANDEM_TUNNEL,
    HAPROXY,
];
/// A value per subject, in the order of [`SUBJECTS`].
type PerSubject = [Option<f64>; SUBJECTS.len()];

/// Where `name` is in [`SUBJECTS`] (a column of the table).
pub(crate) fn column(name: &str) -> usize {
    SUBJECTS
        .iter()
        .position(|s| *s == name)
        .expect("a subject of SUBJECTS")
}

/// The subjects shown again as a ratio to the HAProxy pair, after the values.
const RATIOS: [(&str, &str); 5] = [
    (RELAY, "relay / haproxy"),
    (RELAY_PAIR, "relay pair / haproxy"),
    (COPY_PAIR, "copy pair / haproxy"),
    (TANDEM, "tandem / haproxy"),
    (TANDEM_TUNNEL, "tunnel / haproxy"),
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    pub quick: bool,
    pub machine: Machine,
    pub versions: Versions,
    pub settings: Settings,
    pub subjects: Vec<SubjectReport>,
    pub policy: Outcome<PolicyResult>,
    pub injector: Outcome<InjectorResult>,
    /// The HTTP scenario (absent from reports written before it existed).
    #[serde(default = "not_in_this_run")]
    pub http: Outcome<HttpResult>,
}

fn not_in_this_run<T>() -> Outcome<T> {
    Outcome::NotRun {
        reason: "not part of this run".into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub nproc: usize,
    pub kernel: String,
    pub mem_total_mb: u64,
    pub nofile_limit: u64,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and when it ended: other work
    /// on the machine during the run.
    pub load_average_start: String,
    pub load_average_end: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Versions {
    pub tandem: String,
    pub git_commit: String,
    pub haproxy: String,
    pub rustc: String,
    /// How many of the names in `proxy/link-order.txt` the measured proxy has
    /// ([`crate::link_order::coverage`]); empty in results from before it was recorded.
    #[serde(default)]
    pub link_order: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub rates: Vec<f64>,
    /// Seconds per subject per rate, cut into `rate_rounds` interleaved slices.
    pub rate_seconds: f64,
    pub rate_rounds: usize,
    pub connections: usize,
    /// Seconds per subject of the closed loop, cut into `throughput_rounds` interleaved slices.
    pub saturation_seconds: f64,
    pub new_conn_workers: usize,
    /// Seconds per subject of new connections, cut into `throughput_rounds` interleaved slices.
    pub new_conn_seconds: f64,
    /// Interleaved rounds of the saturation and new-connection runs (0 in reports written
    /// when they ran one subject after the other).
    #[serde(default)]
    pub throughput_rounds: usize,
    pub bulk_seconds: f64,
    pub idle_connection_counts: Vec<usize>,
    pub policy_tries: usize,
    pub injector_concurrency: usize,
    pub injector_seconds: f64,
    /// Nice level of the bench and every process it started (0 = not changed).
    #[serde(default)]
    pub nice: i32,
    /// HTTP scenario: seconds of serial requests per subject, cut into `http_rounds`
    /// interleaved slices.
    #[serde(default)]
    pub http_serial_seconds: f64,
    /// HTTP scenario: seconds of the closed loop over `http_connections` per subject, cut into
    /// `http_rounds` interleaved slices.
    #[serde(default)]
    pub http_concurrent_seconds: f64,
    #[serde(default)]
    pub http_rounds: usize,
    #[serde(default)]
    pub http_connections: usize,
}

/// A scenario that ran, or why it did not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome<T> {
    Measured { result: T },
    NotRun { reason: String },
}

impl<T> Outcome<T> {
    pub fn from_result(r: anyhow::Result<T>) -> Self {
        match r {
            Ok(result) => Outcome::Measured { result },
            Err(e) => Outcome::NotRun {
                reason: format!("{e:#}"),
            },
        }
    }

    pub fn measured(&self) -> Option<&T> {
        match self {
            Outcome::Measured { result } => Some(result),
            Outcome::NotRun { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SubjectReport {
    pub name: String,
    /// Set when the subject could not be started at all.
    pub error: Option<String>,
    pub rates: Vec<RateResult>,
    pub saturation: Option<SaturationResult>,
    pub new_conn: Option<NewConnResult>,
    pub bulk: Vec<BulkResult>,
    pub processes: Vec<ProcessReport>,
    /// Scenarios that failed for this subject, with the error.
    pub scenario_errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessReport {
    pub role: String,
    pub idle_rss_kb: u64,
    /// The anonymous part of the idle RSS (`RssAnon`: not shared with other processes); 0 in
    /// reports written before it was recorded.
    #[serde(default)]
    pub idle_anon_kb: u64,
    /// (open idle connections through the pair, RSS in kB)
    pub rss_with_connections_kb: Vec<(usize, u64)>,
    /// (offered rate, CPU seconds this process used per 10,000 requests at that rate)
    pub cpu_s_per_10k_requests: Vec<(f64, f64)>,
    /// (offered rate, largest RSS in kB sampled right after a slice at that rate)
    pub rss_under_load_kb: Vec<(f64, u64)>,
}

impl Report {
    pub fn subject(&self, name: &str) -> Option<&SubjectReport> {
        self.subjects
            .iter()
            .find(|s| s.name == name && s.error.is_none())
    }

    /// The side-by-side table, as Markdown (readable on a terminal too).
    pub fn table(&self) -> String {
        let rows = self.rows();
        let headers: Vec<&str> = SUBJECTS
            .iter()
            .copied()
            .chain(RATIOS.iter().map(|(_, h)| *h))
            .collect();
        let mut out = format!(
            "| metric | {} |\n|---|{}\n",
            headers.join(" | "),
            "---:|".repeat(headers.len())
        );
        let haproxy = column(HAPROXY);
        for r in rows {
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| fmt_num(v, r.decimals));
            let ratio = |t: Option<f64>| match (t, r.values[haproxy]) {
                (Some(t), Some(h)) if h != 0.0 => format!("{:.2}", t / h),
                _ => "-".into(),
            };
            let cells: Vec<String> = r
                .values
                .iter()
                .map(|v| cell(*v))
                .chain(RATIOS.iter().map(|(n, _)| ratio(r.values[column(n)])))
                .collect();
            out.push_str(&format!("| {} | {} |\n", r.label, cells.join(" | ")));
        }
        out
    }

    fn rows(&self) -> Vec<Row> {
        let subjects = SUBJECTS.map(|n| self.subject(n));
        let per = |f: &dyn Fn(&SubjectReport) -> Option<f64>| -> PerSubject {
            subjects.map(|s| s.and_then(f))
        };
        let mut rows = Vec::new();
        for &rate in &self.settings.rates {
            let at = |s: &SubjectReport| s.rates.iter().find(|r| r.target_rps == rate).cloned();
            let k = format_rate(rate);
            for (label, pick) in [
                (
                    "p50",
                    (|r: &RateResult| r.latency.p50_us) as fn(&RateResult) -> f64,
                ),
                ("p90", |r| r.latency.p90_us),
                ("p99", |r| r.latency.p99_us),
                ("p99.9", |r| r.latency.p999_us),
                ("max", |r| r.latency.max_us),
            ] {
                rows.push(Row::new(
                    format!("{k} rps, 1 kB: {label} latency (µs)"),
                    per(&|s| at(s).map(|r| pick(&r))),
                    0,
                ));
            }
            for (label, pick) in [
                (
                    "p50",
                    (|r: &RateResult| r.latency.p50_us) as fn(&RateResult) -> f64,
                ),
                ("p90", |r| r.latency.p90_us),
                ("p99", |r| r.latency.p99_us),
            ] {
                let direct = subjects[column(DIRECT)].and_then(&at).map(|r| pick(&r));
                rows.push(Row::new(
                    format!("{k} rps: added {label} over direct (µs)"),
                    per(&|s| Some(at(s).map(|r| pick(&r))? - direct?)),
                    0,
                ));
            }
            let service_p99 = |s: &SubjectReport| at(s).map(|r| r.service.p99_us);
            rows.push(Row::new(
                format!("{k} rps: p99 from actual send (µs)"),
                per(&service_p99),
                0,
            ));
            let direct = subjects[column(DIRECT)].and_then(service_p99);
            rows.push(Row::new(
                format!("{k} rps: added p99 from actual send (µs)"),
                per(&|s| Some(service_p99(s)? - direct?)),
                0,
            ));
            rows.push(Row::new(
                format!("{k} rps: generator wake-up lag p99 (µs)"),
                per(&|s| at(s).map(|r| r.send_lag.p99_us)),
                0,
            ));
            rows.push(Row::new(
                format!("{k} rps: achieved rps"),
                per(&|s| at(s).map(|r| r.achieved_rps)),
                0,
            ));
        }
        rows.push(Row::new(
            format!(
                "saturation, {} conns: requests/s",
                self.settings.connections
            ),
            per(&|s| s.saturation.as_ref().map(|r| r.rps)),
            0,
        ));
        rows.push(Row::new(
            "saturation: p99 latency (µs)".into(),
            per(&|s| s.saturation.as_ref().map(|r| r.latency.p99_us)),
            0,
        ));
        rows.push(Row::new(
            "new connection per request: conns/s".into(),
            per(&|s| s.new_conn.as_ref().map(|r| r.conns_per_sec)),
            0,
        ));
        for (label, pick) in [
            (
                "p50",
                (|r: &NewConnResult| r.ttfb.p50_us) as fn(&NewConnResult) -> f64,
            ),
            ("p99", |r| r.ttfb.p99_us),
        ] {
            rows.push(Row::new(
                format!("new connection: {label} time to first byte (µs)"),
                per(&|s| s.new_conn.as_ref().map(pick)),
                0,
            ));
        }
        for dir in [Direction::Upload, Direction::Download] {
            for streams in [1, 8] {
                rows.push(Row::new(
                    format!(
                        "bulk {}, {streams} stream{}: MB/s",
                        match dir {
                            Direction::Upload => "client->server",
                            Direction::Download => "server->client",
                        },
                        if streams == 1 { "" } else { "s" }
                    ),
                    per(&|s| {
                        s.bulk
                            .iter()
                            .find(|b| b.direction == dir && b.streams == streams)
                            .map(|b| b.mb_per_sec)
                    }),
                    0,
                ));
            }
        }
        // Memory: the larger of the two proxies of a pair ("one proxy").
        let max_over = |s: &SubjectReport, f: &dyn Fn(&ProcessReport) -> Option<u64>| {
            s.processes
                .iter()
                .filter_map(f)
                .max()
                .map(|kb| kb as f64 / 1024.0)
        };
        rows.push(Row::new(
            "RSS of one proxy, idle (MB, larger of the pair)".into(),
            per(&|s| max_over(s, &|p| Some(p.idle_rss_kb))),
            1,
        ));
        rows.push(Row::new(
            "RSS of one proxy, idle: the anonymous part, not shared (MB)".into(),
            per(&|s| max_over(s, &|p| (p.idle_anon_kb > 0).then_some(p.idle_anon_kb))),
            1,
        ));
        for &rate in &self.settings.rates {
            rows.push(Row::new(
                format!("RSS of one proxy at {} rps (MB)", format_rate(rate)),
                per(&|s| {
                    max_over(s, &|p| {
                        p.rss_under_load_kb
                            .iter()
                            .find(|(r, _)| *r == rate)
                            .map(|(_, kb)| *kb)
                    })
                }),
                1,
            ));
        }
        for &n in &self.settings.idle_connection_counts {
            rows.push(Row::new(
                format!("RSS of one proxy, {n} open idle connections (MB)"),
                per(&|s| {
                    max_over(s, &|p| {
                        p.rss_with_connections_kb
                            .iter()
                            .find(|(c, _)| *c == n)
                            .map(|(_, kb)| *kb)
                    })
                }),
                1,
            ));
        }
        for &rate in &self.settings.rates {
            rows.push(Row::new(
                format!(
                    "CPU s per 10k requests at {} rps (both proxies)",
                    format_rate(rate)
                ),
                per(&|s| {
                    let v: Vec<f64> = s
                        .processes
                        .iter()
                        .filter_map(|p| {
                            p.cpu_s_per_10k_requests
                                .iter()
                                .find(|(r, _)| *r == rate)
                                .map(|(_, c)| *c)
                        })
                        .collect();
                    (!v.is_empty()).then(|| v.iter().sum())
                }),
                2,
            ));
        }
        rows
    }
}

struct Row {
    label: String,
    /// In the order of [`SUBJECTS`].
    values: PerSubject,
    decimals: usize,
}

impl Row {
    fn new(label: String, values: PerSubject, decimals: usize) -> Self {
        Self {
            label,
            values,
            decimals,
        }
    }
}

fn fmt_num(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

pub(crate) fn format_rate(r: f64) -> String {
    let r = r.round() as u64;
    if r >= 1000 && r.is_multiple_of(1000) {
        format!("{},000", r / 1000)
    } else {
        r.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::Percentiles;

    pub(crate) fn pct(p50: f64, p99: f64) -> Percentiles {
        Percentiles {
            count: 100,
            p50_us: p50,
            p90_us: p50,
            p99_us: p99,
            p999_us: p99,
            max_us: p99,
        }
    }

    fn rate(p50: f64, p99: f64) -> RateResult {
        RateResult {
            target_rps: 1000.0,
            achieved_rps: 999.0,
            connections: 8,
            requests: 1000,
            errors: 0,
            latency: pct(p50, p99),
            service: pct(p50, p99),
            send_lag: pct(5.0, 9.0),
        }
    }

    pub(crate) fn sample() -> Report {
        let settings = Settings {
            rates: vec![1000.0],
            rate_seconds: 2.0,
            rate_rounds: 2,
            connections: 8,
            saturation_seconds: 2.0,
            new_conn_workers: 8,
            new_conn_seconds: 2.0,
            throughput_rounds: 2,
            bulk_seconds: 1.0,
            idle_connection_counts: vec![1000],
            policy_tries: 5,
            injector_concurrency: 16,
            injector_seconds: 2.0,
            nice: 0,
            http_serial_seconds: 2.0,
            http_concurrent_seconds: 1.0,
            http_rounds: 4,
            http_connections: 4,
        };
        let mut direct = SubjectReport {
            name: DIRECT.into(),
            rates: vec![rate(40.0, 80.0)],
            ..Default::default()
        };
        direct.bulk.push(BulkResult {
            direction: Direction::Upload,
            streams: 1,
            bytes: 1,
            seconds: 1.0,
            mb_per_sec: 3000.0,
        });
        let tandem = SubjectReport {
            name: TANDEM.into(),
            rates: vec![rate(140.0, 230.0)],
            processes: vec![
                ProcessReport {
                    role: "client".into(),
                    idle_rss_kb: 4096,
                    idle_anon_kb: 1024,
                    rss_with_connections_kb: vec![(1000, 10240)],
                    cpu_s_per_10k_requests: vec![(1000.0, 0.25)],
                    rss_under_load_kb: vec![(1000.0, 6144)],
                },
                ProcessReport {
                    role: "server".into(),
                    idle_rss_kb: 5120,
                    idle_anon_kb: 1536,
                    rss_with_connections_kb: vec![(1000, 8192)],
                    cpu_s_per_10k_requests: vec![(1000.0, 0.5)],
                    rss_under_load_kb: vec![(1000.0, 7168)],
                },
            ],
            ..Default::default()
        };
        let haproxy = SubjectReport {
            name: HAPROXY.into(),
            rates: vec![rate(120.0, 200.0)],
            ..Default::default()
        };
        Report {
            date: "2026-11-26T07:00:00Z".into(),
            quick: true,
            machine: Machine {
                cpu_model: "AMD EPYC".into(),
                nproc: 2,
                kernel: "6.1".into(),
                mem_total_mb: 24000,
                nofile_limit: 20000,
                load_average_start: "1.00 0.50 0.20".into(),
                load_average_end: "2.00 1.00 0.40".into(),
            },
            versions: Versions {
                tandem: "0.1.0".into(),
                git_commit: "abc".into(),
                haproxy: "HAProxy version 2.6.12".into(),
                rustc: "rustc 1.95.0".into(),
                link_order: String::new(),
            },
            settings,
            subjects: vec![direct, tandem, haproxy],
            policy: Outcome::NotRun {
                reason: "no pair".into(),
            },
            injector: Outcome::NotRun {
                reason: "no binary".into(),
            },
            http: Outcome::Measured {
                result: http::tests::sample(),
            },
        }
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        let json = serde_json::to_string_pretty(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(json.contains(r#""status": "not_run""#));
    }

    #[test]
    fn table_shows_added_latency_and_ratios() {
        let t = sample().table();
        let line = |prefix: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("| {prefix}")))
                .unwrap_or_else(|| panic!("no row {prefix:?} in\n{t}"))
                .to_string()
        };
        assert_eq!(
            line("1,000 rps, 1 kB: p99"),
            "| 1,000 rps, 1 kB: p99 latency (µs) | 80 | - | - | - | 230 | - | 200 | - | - | - | 1.15 | - |"
        );
        assert_eq!(
            line("1,000 rps: added p99"),
            "| 1,000 rps: added p99 over direct (µs) | 0 | - | - | - | 150 | - | 120 | - | - | - | 1.25 | - |"
        );
        // Larger proxy of the pair, in MB.
        assert_eq!(
            line("RSS of one proxy, idle"),
            "| RSS of one proxy, idle (MB, larger of the pair) | - | - | - | - | 5.0 | - | - | - | - | - | - | - |"
        );
        assert_eq!(
            line("RSS of one proxy, idle: the anonymous part"),
            "| RSS of one proxy, idle: the anonymous part, not shared (MB) | - | - | - | - | 1.5 | - | - | - | - | - | - | - |"
        );
        assert_eq!(
            line("CPU s per 10k requests at 1,000"),
            "| CPU s per 10k requests at 1,000 rps (both proxies) | - | - | - | - | 0.75 | - | - | - | - | - | - | - |"
        );
        assert!(line("bulk client->server, 1 stream")
            .contains("| 3000 | - | - | - | - | - | - | - | - | - | - | - |"));
    }

    #[test]
    fn markdown_names_machine_and_reasons() {
        let md = sample().markdown();
        assert!(md.contains("AMD EPYC, 2 cores"));
        assert!(md.contains("**Injector** (`tandem-injector serve`, HTTPS): not run: no binary."));
        assert!(md.contains(
            "| metric | direct | relay | relay-pair | copy-pair | tandem | tandem-tunnel | haproxy | relay / haproxy | relay pair / haproxy | copy pair / haproxy |"
        ));
        assert!(md.contains(
            "| added p99 latency at 1,000 rps <= HAProxy pair's and < 200 µs | \
             tandem +150 µs, haproxy +120 µs | **no** |"
        ));
        assert!(md.contains("| idle RSS < 10 MB | 5.0 MB | yes |"));
        assert!(md.contains("| RSS < 50 MB with 1,000 open connections | 10.0 MB | yes |"));
        assert!(md.contains("| injector >= 5,000 AdmissionReviews/s on 2 cores | not measured"));
    }

    #[test]
    fn splice_replaces_only_the_generated_section() {
        let doc = "# Perf\n\nintro\n";
        let once = splice_generated(doc, "table v1\n");
        assert!(once.starts_with("# Perf\n\nintro\n"));
        assert!(once.contains("table v1\n<!-- bench:end -->"));
        let with_tail = format!("{once}\n## Profiling\nhand-written\n");
        let twice = splice_generated(&with_tail, "table v2\n");
        assert!(!twice.contains("table v1"));
        assert!(twice.contains("table v2\n<!-- bench:end -->"));
        assert!(twice.ends_with("## Profiling\nhand-written\n"));
        assert_eq!(twice.matches("bench:begin").count(), 1);
    }
}
