//! What happens when: the intention flips, rotations, restarts, pauses and readings of a run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long the agent stays stopped.
pub(super) const PAUSE: Duration = Duration::from_secs(20);

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
}
