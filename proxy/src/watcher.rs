//! The shared shape of every agent watch: run a (blocking) query, record success or failure in
//! the metrics, back off with jitter on failure, stop when told to.
//!
//! Every watch is started the same way: `start(&WatchContext, ...)` fetches the first answer
//! (retrying while the agent is down), and returns a [`Watched`]: the live value and the task
//! that keeps it current. The composition root (`app`) only spawns the task and hands the
//! receiver on.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::consul::{self, Answer, Blocking, ConsulClient, ConsulError};
use crate::metrics::Metrics;

/// What every watch of one proxy shares.
#[derive(Debug, Clone)]
pub(crate) struct WatchContext {
    pub(crate) client: ConsulClient,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) link: AgentLink,
    /// The longest backoff between two attempts.
    pub(crate) retry_max: Duration,
    /// Ends every watch.
    pub(crate) stop: CancellationToken,
}

/// The task that keeps a watched value current, until the context's stop token fires.
pub(crate) type WatchTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A started watch: its live value and the task to spawn.
pub(crate) struct Watched<T> {
    pub(crate) state: watch::Receiver<Arc<T>>,
    pub(crate) task: WatchTask,
}

/// A failure a watch retries: logged in the watch's own words.
pub(crate) trait WatchError: fmt::Display + Sync {
    /// Whether the agent could not be reached at all (then its next good answer is news for
    /// the other watches).
    fn agent_unreachable(&self) -> bool {
        false
    }

    /// The kind of failure: a watch logs the first failure of each kind at `warn` and the
    /// retries that fail the same way at `debug`, so an agent that is down for an hour is one
    /// line, not one per retry.
    fn kind(&self) -> String;
}

impl WatchError for ConsulError {
    fn agent_unreachable(&self) -> bool {
        matches!(self, ConsulError::Unreachable { .. })
    }

    fn kind(&self) -> String {
        match self {
            ConsulError::Unreachable { .. } => "unreachable".to_string(),
            ConsulError::Status { status, .. } => format!("status {}", status.as_u16()),
            ConsulError::Decode { .. } => "undecodable answer".to_string(),
            ConsulError::Client(_) => "client".to_string(),
        }
    }
}

/// First retry after this long; later ones double up to the configured maximum.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// Consecutive answers closer than this are spaced out (protects against a churning agent).
const MIN_SPACING: Duration = Duration::from_millis(20);

/// What every watch of one proxy learns about the agent together: when one watch finds the
/// agent answering again after failures, or sees an index go backwards (a restarted agent,
/// which forgot our registrations and may have a new CA), the others stop waiting out their
/// backoff and ask at once, and the registration watch checks its registrations.
#[derive(Debug, Clone)]
pub(crate) struct AgentLink {
    generation: Arc<watch::Sender<u64>>,
}

impl Default for AgentLink {
    fn default() -> Self {
        AgentLink {
            generation: Arc::new(watch::channel(0).0),
        }
    }
}

impl AgentLink {
    /// Tells every watch that the agent is back (or was replaced).
    pub(crate) fn agent_back(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes each time [`AgentLink::agent_back`] is called.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// One watch's loop state: its backoff, its spacing, what it told the other watches.
pub(crate) struct Watcher<'a> {
    name: &'static str,
    ctx: &'a WatchContext,
    backoff: Backoff,
    stop: CancellationToken,
    last_answer: Option<Instant>,
    agent_back: watch::Receiver<u64>,
    /// Whether the failures since the last good answer include the agent being unreachable
    /// (only then is a good answer news for the other watches).
    was_unreachable: bool,
    /// The kinds of failure logged at `warn` since the last good answer.
    logged_kinds: std::collections::HashSet<String>,
}

impl<'a> Watcher<'a> {
    pub(crate) fn new(name: &'static str, ctx: &'a WatchContext) -> Self {
        Watcher {
            name,
            ctx,
            backoff: Backoff::new(RETRY_BASE, ctx.retry_max),
            stop: ctx.stop.clone(),
            last_answer: None,
            agent_back: ctx.link.subscribe(),
            was_unreachable: false,
            logged_kinds: Default::default(),
        }
    }

    /// Runs `f` unless the watch is stopped first (then `None`).
    pub(crate) async fn run<F: Future>(&mut self, f: F) -> Option<F::Output> {
        if let Some(last) = self.last_answer {
            let since = last.elapsed();
            if since < MIN_SPACING {
                tokio::select! {
                    _ = self.stop.cancelled() => return None,
                    _ = tokio::time::sleep(MIN_SPACING - since) => {}
                }
            }
        }
        tokio::select! {
            _ = self.stop.cancelled() => None,
            out = f => { self.last_answer = Some(Instant::now()); Some(out) }
        }
    }

    /// The next good answer to the blocking query `query` makes, asked to wait for a change
    /// after `index`; failures are recorded and retried with backoff. `None` once stopped.
    pub(crate) async fn next_answer<T, F, Fut>(&mut self, index: u64, mut query: F) -> Option<T>
    where
        F: FnMut(Blocking) -> Fut,
        Fut: Future<Output = Result<T, ConsulError>>,
    {
        loop {
            let blocking = Blocking::after(self.query_index(index), consul::DEFAULT_WAIT);
            match self.run(query(blocking)).await? {
                Ok(answer) => {
                    self.succeeded();
                    return Some(answer);
                }
                Err(e) => {
                    if !self.failed(&e).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Like [`Watcher::next_answer`], but only an answer whose index moved on from `*index`,
    /// which it advances by Consul's rule ([`consul::next_index`]).
    pub(crate) async fn next_change<T, F, Fut>(
        &mut self,
        index: &mut u64,
        mut query: F,
    ) -> Option<Answer<T>>
    where
        F: FnMut(Blocking) -> Fut,
        Fut: Future<Output = Result<Answer<T>, ConsulError>>,
    {
        loop {
            let answer = self.next_answer(*index, &mut query).await?;
            let previous = *index;
            *index = self.next_index(previous, answer.meta.index);
            if *index != previous {
                return Some(answer);
            }
        }
    }

    /// The index for the next blocking query: after a failure, 0 (an immediate answer) so the
    /// watch knows at once that the agent is back and catches up on what it missed.
    pub(crate) fn query_index(&self, index: u64) -> u64 {
        if self.backoff.failures() > 0 {
            0
        } else {
            index
        }
    }

    /// [`consul::next_index`], telling the other watches when the index went backwards (the
    /// agent was restarted or replaced).
    pub(crate) fn next_index(&mut self, previous: u64, returned: u64) -> u64 {
        let next = consul::next_index(previous, returned);
        if next == 0 && previous > 1 {
            tracing::info!(
                watch = self.name,
                index.previous = previous,
                index.returned = returned,
                "the agent's index went backwards: it was restarted or replaced"
            );
            self.announce_agent_back();
        }
        next
    }

    fn announce_agent_back(&mut self) {
        self.ctx.link.agent_back();
        self.agent_back.borrow_and_update();
    }

    /// Whether the last attempt failed.
    pub(crate) fn failing(&self) -> bool {
        self.backoff.failures() > 0
    }

    /// Records a good answer.
    pub(crate) fn succeeded(&mut self) {
        let failures = self.backoff.failures();
        if std::mem::take(&mut self.was_unreachable) {
            tracing::info!(watch = self.name, failures, "consul agent reachable again");
            self.announce_agent_back();
        } else if !self.logged_kinds.is_empty() {
            tracing::info!(watch = self.name, failures, "consul query answered again");
        }
        self.logged_kinds.clear();
        self.backoff.reset();
        self.ctx.metrics.watch_succeeded(self.name);
    }

    /// Records a failure, logs what the proxy waits for, and sleeps the backoff delay.
    /// Returns false if the watch was stopped meanwhile.
    pub(crate) async fn failed(&mut self, error: &dyn WatchError) -> bool {
        self.was_unreachable |= error.agent_unreachable();
        self.ctx.metrics.watch_failed(self.name);
        let delay = self.backoff.next_delay();
        let stale = self.ctx.metrics.watch_staleness(self.name);
        let kind = error.kind();
        if !self.logged_kinds.contains(&kind) {
            tracing::warn!(watch = self.name, error = %error, retry.in_ms = delay.as_millis() as u64,
                failures = self.backoff.failures(), stale.secs = stale.map(|d| d.as_secs()),
                "consul query failed; serving with the last good state and retrying (further failures of this kind are logged at debug)");
            self.logged_kinds.insert(kind);
        } else {
            tracing::debug!(watch = self.name, error = %error, retry.in_ms = delay.as_millis() as u64,
                failures = self.backoff.failures(), stale.secs = stale.map(|d| d.as_secs()),
                "waiting for the consul agent");
        }
        // Another watch seeing the agent back ends the wait early.
        self.agent_back.borrow_and_update();
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
            _ = self.agent_back.changed() => true,
        }
    }
}

/// Runs `f` until it succeeds (retrying with backoff) or the context's stop token fires.
pub(crate) async fn retry<T, F, Fut>(name: &'static str, ctx: &WatchContext, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConsulError>>,
{
    // A one-shot query does not block: it ignores the blocking parameters.
    Watcher::new(name, ctx).next_answer(0, |_| f()).await
}

/// Exponential backoff with full jitter, for retrying the agent.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The delay before the next attempt (grows with each failure, capped, jittered 50-100 %).
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self
            .base
            .saturating_mul(1u32 << self.failures.min(16).saturating_sub(1));
        let capped = exp.min(self.max);
        let jitter = rand::random_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(50));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert_eq!(b.failures(), 0);
    }
}
