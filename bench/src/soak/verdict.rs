//! The verdict: no unexpected failures, every action done, the client proxy flat.

use serde::{Deserialize, Serialize};

use super::outcome::Counts;
use super::report::MinuteRow;

/// The flatness allowed between minute 1 and the end of the run, for the client proxy.
pub const TOLERANCE: Tolerance = Tolerance {
    rss_fraction: 0.10,
    rss_floor_kb: 3 * 1024,
    fds: 4,
    tasks: 4,
};

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

pub(super) fn judge(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
