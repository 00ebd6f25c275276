//! The HTTP scenario's part of the report: one table with the subjects side by side, the
//! L7 path's difference to the L4 one, and its ratio to the HAProxy pair.

use crate::http_scenario::{
    HttpResult, HttpSubjectReport, HAPROXY_TCP, SUBJECTS, TANDEM_HTTP, TANDEM_TCP,
};
use crate::report::DIRECT;

use super::{Outcome, Report};

impl Report {
    /// The HTTP scenario's table and its errors, or why it did not run.
    pub fn http_section(&self) -> String {
        match &self.http {
            Outcome::Measured { result } => {
                let mut out = format!(
                    "HTTP/1.1, `{}` answered with {} bytes by a keep-alive backend; \
                     `tandem-http`: the server's service `http` and one L7 intention of {} \
                     permissions, the measured request allowed by the last. Serial: {} s per \
                     subject; concurrent: {} kept-alive connections for {} s per subject; \
                     {} interleaved rounds each.\n\n",
                    result.request,
                    result.response_bytes,
                    result.permissions.as_array().map_or(0, Vec::len),
                    self.settings.http_serial_seconds,
                    self.settings.http_connections,
                    self.settings.http_concurrent_seconds,
                    self.settings.http_rounds,
                );
                out.push_str(&result.table(self.settings.http_connections));
                for s in &result.subjects {
                    if let Some(e) = &s.error {
                        out.push_str(&format!("- **{}** did not run: {e}\n", s.name));
                    }
                    for e in &s.scenario_errors {
                        out.push_str(&format!("- **{}**: {e}\n", s.name));
                    }
                }
                out
            }
            Outcome::NotRun { reason } => format!("not run: {reason}.\n"),
        }
    }
}

impl HttpResult {
    /// Subjects as columns, then `tandem-http` minus `tandem-tcp` and `tandem-http` over
    /// `haproxy-tcp`.
    pub fn table(&self, connections: usize) -> String {
        let subjects = SUBJECTS.map(|n| self.subject(n));
        let mut out = String::from(
            "| metric | direct | tandem tcp | tandem http + L7 | haproxy tcp \
             | relay pair, no TLS | copy pair, no TLS | L7 - tcp | tandem http / haproxy |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let direct = self.subject(DIRECT);
        let serial = |f: fn(&crate::stats::Percentiles) -> f64| {
            move |s: &HttpSubjectReport| s.serial.as_ref().map(|r| f(&r.latency))
        };
        let added = |f: fn(&crate::stats::Percentiles) -> f64| {
            move |s: &HttpSubjectReport| {
                let d = direct?.serial.as_ref()?;
                Some(f(&s.serial.as_ref()?.latency) - f(&d.latency))
            }
        };
        type Pick<'a> = Box<dyn Fn(&HttpSubjectReport) -> Option<f64> + 'a>;
        let rows: Vec<(String, Pick<'_>, usize)> = vec![
            (
                "serial, 1 connection: p50 latency (µs)".into(),
                Box::new(serial(|p| p.p50_us)),
                0,
            ),
            (
                "serial: p90 latency (µs)".into(),
                Box::new(serial(|p| p.p90_us)),
                0,
            ),
            (
                "serial: p99 latency (µs)".into(),
                Box::new(serial(|p| p.p99_us)),
                0,
            ),
            (
                "serial: added p50 over direct (µs)".into(),
                Box::new(added(|p| p.p50_us)),
                0,
            ),
            (
                "serial: added p99 over direct (µs)".into(),
                Box::new(added(|p| p.p99_us)),
                0,
            ),
            (
                "serial: requests/s".into(),
                Box::new(|s: &HttpSubjectReport| s.serial.as_ref().map(|r| r.rps)),
                0,
            ),
            (
                "serial: CPU s per 10k requests (both proxies)".into(),
                Box::new(|s: &HttpSubjectReport| s.cpu_s_per_10k(|p| p.serial_cpu_s_per_10k)),
                2,
            ),
            (
                format!("{connections} connections: requests/s"),
                Box::new(|s: &HttpSubjectReport| s.concurrent.as_ref().map(|r| r.rps)),
                0,
            ),
            (
                format!("{connections} connections: p50 latency (µs)"),
                Box::new(|s: &HttpSubjectReport| s.concurrent.as_ref().map(|r| r.latency.p50_us)),
                0,
            ),
            (
                format!("{connections} connections: p99 latency (µs)"),
                Box::new(|s: &HttpSubjectReport| s.concurrent.as_ref().map(|r| r.latency.p99_us)),
                0,
            ),
            (
                format!("{connections} connections: CPU s per 10k requests (both proxies)"),
                Box::new(|s: &HttpSubjectReport| s.cpu_s_per_10k(|p| p.concurrent_cpu_s_per_10k)),
                2,
            ),
            (
                "requests the server-side Tandem proxy decided per request".into(),
                Box::new(|s: &HttpSubjectReport| s.proxy_http_requests.map(|n| n as f64)),
                0,
            ),
            (
                format!(
                    "backend connections opened for the {} measured ones",
                    connections + 1
                ),
                Box::new(|s: &HttpSubjectReport| s.backend_connections.map(|n| n as f64)),
                0,
            ),
        ];
        for (label, pick, decimals) in rows {
            let values = subjects.map(|s| s.and_then(&pick));
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.decimals$}"));
            let of = |name: &str| {
                values[SUBJECTS
                    .iter()
                    .position(|n| *n == name)
                    .expect("a subject of SUBJECTS")]
            };
            let (tcp, l7, haproxy) = (of(TANDEM_TCP), of(TANDEM_HTTP), of(HAPROXY_TCP));
            let diff = match (l7, tcp) {
                (Some(a), Some(b)) => format!("{:+.decimals$}", a - b),
                _ => "-".into(),
            };
            let ratio = match (l7, haproxy) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            // One column per subject, in the order of SUBJECTS (the header's).
            let cells: Vec<String> = values.iter().map(|v| cell(*v)).collect();
            out.push_str(&format!(
                "| {label} | {} | {diff} | {ratio} |\n",
                cells.join(" | ")
            ));
        }
        out
    }

    /// `tandem-http`'s serial p50 minus `tandem-tcp`'s, in µs.
    pub fn l7_over_l4_p50_us(&self) -> Option<f64> {
        let p50 = |n: &str| Some(self.subject(n)?.serial.as_ref()?.latency.p50_us);
        Some(p50(TANDEM_HTTP)? - p50(TANDEM_TCP)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::http_load::LoadResult;
    use crate::http_scenario::{HttpProcessReport, RELAY_PAIR_TCP};
    use crate::stats::Percentiles;

    fn load(connections: usize, p50: f64, p99: f64, rps: f64) -> LoadResult {
        LoadResult {
            connections,
            requests: 10_000,
            seconds: 2.0,
            rps,
            latency: Percentiles {
                count: 10_000,
                p50_us: p50,
                p90_us: p50,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
            },
        }
    }

    fn subject(name: &str, serial: (f64, f64), rps: f64, cpu: Option<f64>) -> HttpSubjectReport {
        HttpSubjectReport {
            name: name.into(),
            serial: Some(load(1, serial.0, serial.1, 1e6 / serial.0)),
            concurrent: Some(load(4, serial.0 * 2.0, serial.1 * 2.0, rps)),
            processes: cpu
                .map(|c| {
                    ["client", "server"]
                        .map(|role| HttpProcessReport {
                            role: role.into(),
                            serial_cpu_s_per_10k: Some(c / 2.0),
                            concurrent_cpu_s_per_10k: Some(c / 4.0),
                        })
                        .to_vec()
                })
                .unwrap_or_default(),
            backend_connections: Some(5),
            ..Default::default()
        }
    }

    pub(crate) fn sample() -> HttpResult {
        HttpResult {
            request: "GET /bench/1k".into(),
            response_bytes: 1024,
            permissions: crate::l7::permissions(),
            subjects: vec![
                subject(DIRECT, (50.0, 90.0), 40_000.0, None),
                subject(TANDEM_TCP, (150.0, 250.0), 20_000.0, Some(1.0)),
                subject(TANDEM_HTTP, (170.0, 280.0), 16_000.0, Some(1.5)),
                subject(HAPROXY_TCP, (200.0, 300.0), 16_000.0, Some(1.2)),
                subject(RELAY_PAIR_TCP, (120.0, 200.0), 24_000.0, Some(0.8)),
            ],
        }
    }

    #[test]
    fn table_shows_added_latency_the_l7_difference_and_the_ratio() {
        let t = sample().table(4);
        let line = |prefix: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("| {prefix}")))
                .unwrap_or_else(|| panic!("no row {prefix:?} in\n{t}"))
                .to_string()
        };
        assert_eq!(
            line("serial, 1 connection: p50"),
            "| serial, 1 connection: p50 latency (µs) | 50 | 150 | 170 | 200 | 120 | - | +20 | 0.85 |"
        );
        assert_eq!(
            line("serial: added p99"),
            "| serial: added p99 over direct (µs) | 0 | 160 | 190 | 210 | 110 | - | +30 | 0.90 |"
        );
        assert_eq!(
            line("serial: CPU"),
            "| serial: CPU s per 10k requests (both proxies) | - | 1.00 | 1.50 | 1.20 | 0.80 | - | +0.50 | 1.25 |"
        );
        assert_eq!(
            line("4 connections: requests/s"),
            "| 4 connections: requests/s | 40000 | 20000 | 16000 | 16000 | 24000 | - | -4000 | 1.00 |"
        );
        assert!(line("backend connections opened for the 5").contains("| 5 | 5 | 5 | 5 | 5 |"));
        assert_eq!(sample().l7_over_l4_p50_us(), Some(20.0));
    }

    #[test]
    fn a_subject_that_did_not_start_shows_dashes_and_its_error() {
        let mut r = crate::report::tests::sample();
        let Outcome::Measured { result } = &mut r.http else {
            unreachable!("the sample report has an HTTP result")
        };
        result.subjects[2].error = Some("agent refused the intention".into());
        assert_eq!(result.l7_over_l4_p50_us(), None);
        let section = r.http_section();
        assert!(
            section.contains(
                "| serial, 1 connection: p50 latency (µs) | 50 | 150 | - | 200 | 120 | - | - | - |"
            ),
            "{section}"
        );
        assert!(section.contains("- **tandem-http** did not run: agent refused the intention\n"));
        assert!(section.contains("one L7 intention of 5 permissions"));
    }
}
