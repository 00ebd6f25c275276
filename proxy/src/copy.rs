//! Copying bytes both ways between the two halves of a proxied connection, with half-close,
//! byte counts, an idle timeout and an outside stop (intention revoked, drain deadline).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use crate::connections::End;

/// How much one read of a direction takes: 2 KiB, 16 KiB after 32 KiB carried, 64 KiB after
/// 4 MiB. It bounds what a direction holds when its writer stalls (one read's worth), so a
/// connection that carried little holds little.
const READ_STEPS: [(u64, usize); 3] = [
    (0, 2 * 1024),
    (32 * 1024, 16 * 1024),
    (4 * 1024 * 1024, 64 * 1024),
];

fn read_size(carried: u64) -> usize {
    READ_STEPS
        .iter()
        .rev()
        .find(|(after, _)| carried >= *after)
        .map_or(READ_STEPS[0].1, |(_, size)| *size)
}

thread_local! {
    /// What every direction on this thread reads into. A read's bytes are written on at once
    /// from here, in the same poll; only what the writer does not take is copied into the
    /// direction's own buffer. So a connection waiting for data holds no buffer at all.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A handle that can end one connection from outside, saying why.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stopper {
    token: CancellationToken,
    reason: Arc<OnceLock<End>>,
}

impl Stopper {
    /// A handle not stopped yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Ends the connection; the first reason given is the one logged.
    pub(crate) fn stop(&self, reason: End) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves when the connection is told to stop.
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Whether the connection was told to stop.
    pub(crate) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why it was told to stop ([`End::Stopped`] if it was not).
    pub(crate) fn reason(&self) -> End {
        self.reason.get().copied().unwrap_or(End::Stopped)
    }
}

/// When a connection last carried a byte, for its idle timeout.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    /// Active now.
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Records traffic now.
    pub(crate) fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing was carried for `limit`; never without a limit.
    pub(crate) async fn idle(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// What happened on a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    /// Bytes from the initiator to the other side.
    pub received: u64,
    /// Bytes from the other side back to the initiator.
    pub sent: u64,
    /// Why it ended: completed, idle timeout, an error on either side, or the reason given to
    /// the [`Stopper`].
    pub end: End,
}

impl Transfer {
    /// A connection that ended, for `end`, before any byte was copied.
    pub(crate) fn empty(end: End) -> Self {
        Transfer {
            received: 0,
            sent: 0,
            end,
        }
    }
}

enum Failure {
    Downstream(io::Error),
    Upstream(io::Error),
}

/// Copies `downstream` (the initiator) to `upstream` and back until both directions have
/// ended. EOF on one side is passed on as a shutdown of the other's write half, so each
/// direction closes on its own (half-close).
///
/// Both streams are moved to the heap (split into halves) before the copy starts, so the
/// returned future holds only the halves: it is what an open connection's task keeps for the
/// connection's whole life, and a TLS stream is over 1 KB.
pub(crate) fn bidirectional<'a, D, U>(
    downstream: D,
    upstream: U,
    idle: Option<Duration>,
    stopper: &'a Stopper,
) -> impl std::future::Future<Output = Transfer> + 'a
where
    D: AsyncRead + AsyncWrite + Unpin + 'a,
    U: AsyncRead + AsyncWrite + Unpin + 'a,
{
    let downstream = tokio::io::split(downstream);
    let upstream = tokio::io::split(upstream);
    copy_halves(downstream, upstream, idle, stopper)
}

async fn copy_halves<D, U>(
    (mut d_read, mut d_write): (ReadHalf<D>, WriteHalf<D>),
    (mut u_read, mut u_write): (ReadHalf<U>, WriteHalf<U>),
    idle: Option<Duration>,
    stopper: &Stopper,
) -> Transfer
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let received = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let activity = Activity::new();

    let forward = async {
        pipe(&mut d_read, &mut u_write, &received, &activity)
            .await
            .map_err(|(read, e)| {
                if read {
                    Failure::Downstream(e)
                } else {
                    Failure::Upstream(e)
                }
            })
    };
    let backward = async {
        pipe(&mut u_read, &mut d_write, &sent, &activity)
            .await
            .map_err(|(read, e)| {
                if read {
                    Failure::Upstream(e)
                } else {
                    Failure::Downstream(e)
                }
            })
    };

    let end = tokio::select! {
        result = futures::future::try_join(forward, backward) => match result {
            Ok(_) => End::Completed,
            Err(Failure::Downstream(e)) => {
                tracing::debug!(error = %e, "downstream connection failed");
                End::DownstreamError
            }
            Err(Failure::Upstream(e)) => {
                tracing::debug!(error = %e, "upstream connection failed");
                End::UpstreamError
            }
        },
        _ = activity.idle(idle) => End::IdleTimeout,
        _ = stopper.token.cancelled() => stopper.reason(),
    };
    Transfer {
        received: received.load(Ordering::Relaxed),
        sent: sent.load(Ordering::Relaxed),
        end,
    }
}

/// One direction. Errors say whether the read (true) or the write (false) side failed.
fn pipe<'a, R, W>(
    reader: &'a mut R,
    writer: &'a mut W,
    count: &'a AtomicU64,
    activity: &'a Activity,
) -> Pipe<'a, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    Pipe {
        reader,
        writer,
        count,
        activity,
        carried: 0,
        state: State::Reading,
        unwritten: Vec::new(),
        written: 0,
    }
}

/// [`pipe`]'s future.
struct Pipe<'a, R, W> {
    reader: &'a mut R,
    writer: &'a mut W,
    count: &'a AtomicU64,
    activity: &'a Activity,
    /// Bytes read so far.
    carried: u64,
    state: State,
    /// What the writer has not taken of the last read, from `written` on.
    unwritten: Vec<u8>,
    written: usize,
}

#[derive(Clone, Copy)]
enum State {
    Reading,
    /// Writing `unwritten`.
    Writing,
    Flushing,
    /// The reader ended: shutting the writer down.
    Closing,
}

type PipeResult = Result<(), (bool, io::Error)>;

impl<R, W> Future for Pipe<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    type Output = PipeResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PipeResult> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Reading => {
                    this.state = ready!(this.poll_read(cx))?;
                }
                State::Writing => {
                    while this.written < this.unwritten.len() {
                        let rest = &this.unwritten[this.written..];
                        let n = ready!(Pin::new(&mut *this.writer).poll_write(cx, rest))
                            .and_then(written)
                            .map_err(|e| (false, e))?;
                        this.written += n;
                    }
                    this.count
                        .fetch_add(this.unwritten.len() as u64, Ordering::Relaxed);
                    this.unwritten.clear();
                    this.written = 0;
                    this.state = State::Flushing;
                }
                State::Flushing => {
                    ready!(Pin::new(&mut *this.writer).poll_flush(cx)).map_err(|e| (false, e))?;
                    this.state = State::Reading;
                }
                State::Closing => {
                    // Half-close: tell the other side we are done writing; errors here mean
                    // it is gone.
                    let _ = ready!(Pin::new(&mut *this.writer).poll_shutdown(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<R, W> Pipe<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Reads into the thread's scratch buffer and writes what it got on at once; the state
    /// to go on with.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<State, (bool, io::Error)>> {
        let size = read_size(self.carried);
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                if scratch.len() < size {
                    scratch.resize(size, 0);
                }
                self.read_and_write(cx, &mut scratch[..size])
            }
            // Never expected (nothing polled here polls another direction), but a second
            // direction in the same poll would still copy correctly, through its own buffer.
            Err(_) => self.read_and_write(cx, &mut vec![0; size]),
        })
    }

    fn read_and_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<State, (bool, io::Error)>> {
        let mut read = ReadBuf::new(buf);
        let n = match Pin::new(&mut *self.reader).poll_read(cx, &mut read) {
            Poll::Pending => {
                // Waiting for data: keep no buffer while idle.
                self.unwritten = Vec::new();
                return Poll::Pending;
            }
            Poll::Ready(Ok(())) => read.filled().len(),
            // A TLS peer that closes TCP without close_notify: treat as the end of its stream.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Poll::Ready(Err(e)) => return Poll::Ready(Err((true, e))),
        };
        self.activity.touch();
        if n == 0 {
            return Poll::Ready(Ok(State::Closing));
        }
        self.carried += n as u64;
        let data = &read.filled()[..n];
        let mut sent = 0;
        while sent < n {
            match Pin::new(&mut *self.writer).poll_write(cx, &data[sent..]) {
                Poll::Ready(result) => {
                    sent += result.and_then(written).map_err(|e| (false, e))?;
                }
                Poll::Pending => break,
            }
        }
        if sent == n {
            self.count.fetch_add(n as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(State::Flushing));
        }
        // The writer is full: keep the rest until it takes it (and read nothing meanwhile,
        // so a stalled writer holds back the reader).
        self.count.fetch_add(sent as u64, Ordering::Relaxed);
        self.unwritten.reserve_exact(n - sent);
        self.unwritten.extend_from_slice(&data[sent..]);
        Poll::Ready(Ok(State::Writing))
    }
}

/// A write's count; a writer that takes nothing of a non-empty buffer is gone.
fn written(n: usize) -> io::Result<usize> {
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_lets_the_reply_through_and_counts_bytes() {
        let (client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, server) = tokio::io::duplex(1024);
        let stopper = Stopper::new();
        let copy =
            tokio::spawn(async move { bidirectional(proxy_down, proxy_up, None, &stopper).await });
        // A server that answers only after the request side is closed.
        let server_task = tokio::spawn(async move {
            let mut server = server;
            let mut request = Vec::new();
            server.read_to_end(&mut request).await.unwrap();
            server.write_all(b"reply:").await.unwrap();
            server.write_all(&request).await.unwrap();
            server.shutdown().await.unwrap();
        });
        let mut client = client;
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply:hello");
        server_task.await.unwrap();
        let t = copy.await.unwrap();
        assert_eq!((t.received, t.sent, t.end), (5, 11, End::Completed));
    }

    #[test]
    fn reads_grow_with_the_traffic() {
        assert_eq!(read_size(0), 2 * 1024);
        assert_eq!(read_size(32 * 1024 - 1), 2 * 1024);
        assert_eq!(read_size(32 * 1024), 16 * 1024);
        assert_eq!(read_size(5 * 1024 * 1024), 64 * 1024);
    }

    #[tokio::test]
    async fn large_transfers_arrive_intact() {
        let (client, proxy_down) = tokio::io::duplex(64 * 1024);
        let (proxy_up, server) = tokio::io::duplex(64 * 1024);
        let copy = tokio::spawn(async move {
            bidirectional(proxy_down, proxy_up, None, &Stopper::new()).await
        });
        let data: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            client_write.write_all(&data).await.unwrap();
            client_write.shutdown().await.unwrap();
        });
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(server);
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        client_read.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        echo.await.unwrap();
        assert!(back == expected, "6 MiB came back byte for byte");
        let t = copy.await.unwrap();
        assert_eq!(
            (t.received, t.sent, t.end),
            (expected.len() as u64, expected.len() as u64, End::Completed)
        );
    }

    /// A stream that takes at most 7 bytes per write and is full on every other call.
    struct Trickle {
        inner: tokio::io::DuplexStream,
        full: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.full = !self.full;
            if self.full {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(7);
            Pin::new(&mut self.inner).poll_write(cx, &buf[..n])
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// What a writer does not take at once is kept and written later, in order.
    #[tokio::test]
    async fn a_slow_writer_gets_every_byte_in_order() {
        let (client, proxy_down) = tokio::io::duplex(64 * 1024);
        let (proxy_up, server) = tokio::io::duplex(64 * 1024);
        let upstream = Trickle {
            inner: proxy_up,
            full: false,
        };
        let copy = tokio::spawn(async move {
            bidirectional(proxy_down, upstream, None, &Stopper::new()).await
        });
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let expected = data.clone();
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            client_write.write_all(&data).await.unwrap();
            client_write.shutdown().await.unwrap();
        });
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let mut got = Vec::new();
        server_read.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "100 kB arrived byte for byte");
        server_write.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_read.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        let t = copy.await.unwrap();
        assert_eq!((t.received, t.sent, t.end), (100_000, 0, End::Completed));
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (_client, proxy_down) = tokio::io::duplex(64);
        let (proxy_up, _server) = tokio::io::duplex(64);
        let t = bidirectional(
            proxy_down,
            proxy_up,
            Some(Duration::from_millis(100)),
            &Stopper::new(),
        )
        .await;
        assert_eq!(t.end, End::IdleTimeout);
    }

    #[tokio::test]
    async fn a_stopper_ends_the_copy_with_its_first_reason() {
        let (_client, proxy_down) = tokio::io::duplex(64);
        let (proxy_up, _server) = tokio::io::duplex(64);
        let stopper = Stopper::new();
        stopper.stop(End::Revoked);
        stopper.stop(End::Shutdown);
        let t = bidirectional(proxy_down, proxy_up, None, &stopper).await;
        assert_eq!(t.end, End::Revoked);
    }
}
