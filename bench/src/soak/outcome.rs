//! Why a request failed: the windows in which failures are expected, and the counts by cause.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Failures still count as denied this long after the allow is answered: the proxies learn it
/// from a blocking query and a keep-alive worker reconnects at its next tick.
pub(super) const DENY_GRACE: Duration = Duration::from_secs(2);
/// Failures still count as a restart's this long after the new server proxy is ready.
pub(super) const RESTART_GRACE: Duration = Duration::from_secs(5);

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
    pub(super) fn add(&mut self, cause: Cause) {
        match cause {
            Cause::Denied => self.denied += 1,
            Cause::Restart => self.restart += 1,
            Cause::Other => self.other += 1,
        }
    }

    pub(super) fn plus(&self, o: &Counts) -> Counts {
        Counts {
            ok: self.ok + o.ok,
            denied: self.denied + o.denied,
            restart: self.restart + o.restart,
            other: self.other + o.other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
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
}
