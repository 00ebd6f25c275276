//! Consul's blocking queries: `?index=N&wait=D` holds the request until the result's index
//! passes N or the wait (capped at 10 minutes, plus up to wait/16 jitter) runs out, then
//! answers with the current result either way.
//!
//! Every request that has to wait holds a [`Parked`] guard from [`Waiters::park`] while it
//! waits, so the agent can say how many requests are parked right now
//! ([`crate::DevAgent::blocked_requests`]); tests use that to make a change only once the
//! request is really waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::state::{Agent, State};

/// `default_query_time`.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// `max_query_time`.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);
/// The leaf endpoint's own default and maximum (`leafcert.DefaultQueryTimeout`).
pub(crate) const LEAF_WAIT: Duration = Duration::from_secs(600);

/// The number of requests parked in a blocking wait (one per agent).
#[derive(Debug, Default)]
pub(crate) struct Waiters(AtomicUsize);

impl Waiters {
    /// Requests parked right now.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts the caller as parked until the guard is dropped. Take it only after the
    /// request has subscribed to changes and found its result not ready, so that a write
    /// made after [`Waiters::count`] shows it parked always wakes it.
    pub(crate) fn park(&self) -> Parked<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Parked(&self.0)
    }
}

/// A request counted as parked (see [`Waiters::park`]); uncounted on drop, which also covers
/// a client that hangs up while waiting.
pub(crate) struct Parked<'a>(&'a AtomicUsize);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a blocking query may hold: `wait` (default 5 min) capped at 10 min, plus jitter of
/// up to a sixteenth, as Consul's `RPCQueryTimeout` does.
pub(crate) fn query_timeout(wait: Option<Duration>) -> Duration {
    let base = match wait {
        Some(w) if !w.is_zero() => w.min(MAX_WAIT),
        _ => DEFAULT_WAIT,
    };
    let jitter_max = base.as_nanos() as u64 / 16;
    let jitter = if jitter_max == 0 {
        0
    } else {
        rand::rng().random_range(0..jitter_max)
    };
    base + Duration::from_nanos(jitter)
}

/// The leaf endpoint's timeout: `wait` capped at (and defaulting to) 10 minutes, no jitter.
pub(crate) fn leaf_timeout(wait: Option<Duration>) -> Duration {
    match wait {
        Some(w) if !w.is_zero() => w.min(LEAF_WAIT),
        _ => LEAF_WAIT,
    }
}

/// Waits until `index_of` passes `min_index` (absent or 0: at once) or the [`query_timeout`] for
/// `wait` passes, then evaluates `query` once and returns its result with the index at that
/// moment (never 0). Only the cheap index is recomputed on every wake-up.
pub(crate) async fn block_on_index<T>(
    agent: &Agent,
    min_index: Option<u64>,
    wait: Option<Duration>,
    index_of: impl Fn(&State) -> u64,
    query: impl FnOnce(&State) -> T,
) -> (u64, T) {
    let min = min_index.unwrap_or(0);
    if min != 0 {
        block_until(
            agent,
            query_timeout(wait),
            |state| index_of(state),
            |index| *index > min,
        )
        .await;
    }
    let (index, value) = agent.read(|state| (index_of(state), query(state)));
    (index.max(1), value)
}

/// Evaluates `query` until `ready` accepts its result or the timeout passes.
pub(crate) async fn block_until<T>(
    agent: &Agent,
    timeout: Duration,
    mut query: impl FnMut(&State) -> T,
    ready: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut changes = agent.subscribe();
    let mut parked = None;
    loop {
        changes.borrow_and_update();
        let result = agent.read(&mut query);
        if ready(&result) || Instant::now() >= deadline {
            return result;
        }
        parked.get_or_insert_with(|| agent.waiters.park());
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return result;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_guards_count_until_dropped() {
        let waiters = Waiters::default();
        let first = waiters.park();
        let second = waiters.park();
        assert_eq!(waiters.count(), 2);
        drop(first);
        assert_eq!(waiters.count(), 1);
        drop(second);
        assert_eq!(waiters.count(), 0);
    }

    #[test]
    fn wait_is_capped_and_jittered() {
        for _ in 0..50 {
            let t = query_timeout(Some(Duration::from_secs(3600)));
            assert!(t >= MAX_WAIT && t <= MAX_WAIT + MAX_WAIT / 16);
            let t = query_timeout(None);
            assert!(t >= DEFAULT_WAIT && t <= DEFAULT_WAIT + DEFAULT_WAIT / 16);
        }
        assert_eq!(leaf_timeout(Some(Duration::from_secs(3600))), LEAF_WAIT);
        assert_eq!(
            leaf_timeout(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }
}
