//! The shared shape of every agent watch: run a (blocking) query, record success or failure in
//! the metrics, back off with jitter on failure, stop when told to.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::consul::{self, Answer, Backoff, Blocking, ConsulError};
use crate::metrics::Metrics;

/// First retry after this long; later ones double up to the configured maximum.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// Consecutive answers closer than this are spaced out (protects against a churning agent).
const MIN_SPACING: Duration = Duration::from_millis(20);

pub struct Watcher<'a> {
    name: &'static str,
    metrics: &'a Metrics,
    backoff: Backoff,
    stop: CancellationToken,
    last_answer: Option<Instant>,
}

impl<'a> Watcher<'a> {
    pub fn new(
        name: &'static str,
        metrics: &'a Metrics,
        retry_max: Duration,
        stop: CancellationToken,
    ) -> Self {
        Watcher {
            name,
            metrics,
            backoff: Backoff::new(RETRY_BASE, retry_max),
            stop,
            last_answer: None,
        }
    }

    /// Runs `f` unless the watch is stopped first (then `None`).
    pub async fn run<F: Future>(&mut self, f: F) -> Option<F::Output> {
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
    pub async fn next_answer<T, F, Fut>(&mut self, index: u64, mut query: F) -> Option<T>
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
    pub async fn next_change<T, F, Fut>(
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
            *index = consul::next_index(previous, answer.meta.index);
            if *index != previous {
                return Some(answer);
            }
        }
    }

    /// The index for the next blocking query: after a failure, 0 (an immediate answer) so the
    /// watch knows at once that the agent is back and catches up on what it missed.
    pub fn query_index(&self, index: u64) -> u64 {
        if self.backoff.failures() > 0 {
            0
        } else {
            index
        }
    }

    /// Records a good answer.
    pub fn succeeded(&mut self) {
        if self.backoff.failures() > 0 {
            tracing::info!(watch = self.name, "consul agent reachable again");
        }
        self.backoff.reset();
        self.metrics.watch_succeeded(self.name);
    }

    /// Records a failure, logs what the proxy waits for, and sleeps the backoff delay.
    /// Returns false if the watch was stopped meanwhile.
    pub async fn failed(&mut self, error: &ConsulError) -> bool {
        self.metrics.watch_failed(self.name);
        let delay = self.backoff.next_delay();
        let stale = self.metrics.watch_staleness(self.name);
        if self.backoff.failures() <= 1 {
            tracing::warn!(watch = self.name, error = %error, retry.in_ms = delay.as_millis() as u64,
                "consul query failed; serving with the last good state and retrying");
        } else {
            tracing::warn!(watch = self.name, error = %error, retry.in_ms = delay.as_millis() as u64,
                failures = self.backoff.failures(), stale.secs = stale.map(|d| d.as_secs()),
                "waiting for the consul agent");
        }
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// Runs `f` until it succeeds (retrying with backoff) or `stop` fires.
pub async fn retry<T, F, Fut>(
    name: &'static str,
    metrics: &Metrics,
    retry_max: Duration,
    stop: &CancellationToken,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConsulError>>,
{
    // A one-shot query does not block: it ignores the blocking parameters.
    Watcher::new(name, metrics, retry_max, stop.clone())
        .next_answer(0, |_| f())
        .await
}
