//! One stream of a tunnel read and written as a byte stream: the two halves of an HTTP/2
//! `CONNECT` stream (the h2 crate's) behind `AsyncRead` and `AsyncWrite`.
//!
//! The task that copies the app connection drives the stream itself: a write hands its bytes
//! to h2 within the window the peer granted, and a read takes the frames h2 received and opens
//! the window again by as much. There is no other task per stream and no channel between the
//! copy and h2 (hyper's upgraded HTTP/2 streams have both).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A tunnel stream as a byte stream.
pub(crate) struct StreamIo {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not read yet (what the last read did not take of a frame).
    unread: Bytes,
    /// END_STREAM is sent: the write half is closed.
    shut: bool,
    /// Counts the frames this tunnel's streams received.
    received: Received,
}

/// How many DATA frames a tunnel's streams received: a tunnel that receives needs no ping to
/// tell that its peer is there (a ping's answer may wait behind megabytes of them).
#[derive(Clone, Default)]
pub(crate) struct Received(Arc<AtomicU64>);

impl Received {
    /// The count so far.
    pub(super) fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more.
    pub(super) fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl StreamIo {
    /// The stream whose halves these are, on the tunnel that counts with `received`.
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, received: &Received) -> Self {
        StreamIo {
            send,
            recv,
            unread: Bytes::new(),
            shut: false,
            received: received.clone(),
        }
    }
}

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => {
                    this.received.record();
                    this.unread = data;
                }
                Some(Err(e)) => return Poll::Ready(read_ended(e)),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        if n == this.unread.len() {
            // Even emptied, the frame's bytes would keep h2's whole read buffer they are a
            // slice of, for as long as the stream waits for its next frame.
            this.unread = Bytes::new();
        } else {
            this.unread.advance(n);
        }
        // The app connection took them: the peer may send as many again. A stream that ended
        // meanwhile has no window left to open, which is not this read's failure.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        // Asked for only now, with bytes to send: a window reserved while the stream is idle
        // would be held back from the tunnel's other streams. What h2 has buffered and not
        // written out yet counts against the capacity, so a slow tunnel holds the writer back.
        this.send.reserve_capacity(buf.len());
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(write_failed)?;
                return Poll::Ready(Ok(n));
            }
            // Woken when the peer opens the window, the send buffer drains, or the stream
            // ends (reset by the peer, or the tunnel closed).
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(write_failed(e))),
                None => return Poll::Ready(Err(this.no_longer_writable(cx))),
            }
        }
    }

    /// Written bytes are h2's to send: the tunnel's connection task writes them out.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Ends the stream's write half (an empty DATA frame with END_STREAM, after what is
    /// buffered): the peer reads the end, and may go on writing.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.shut {
            this.send.reserve_capacity(0);
            this.send
                .send_data(Bytes::new(), true)
                .map_err(write_failed)?;
            this.shut = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl StreamIo {
    /// Why the stream takes no more data: the peer's reset, named, if it was one.
    fn no_longer_writable(&mut self, cx: &mut Context<'_>) -> io::Error {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => write_failed(h2::Error::from(reason)),
            Poll::Ready(Err(e)) => write_failed(e),
            Poll::Pending => io::ErrorKind::BrokenPipe.into(),
        }
    }
}

/// What a failed read means to the app connection: the peer's clean end (NO_ERROR) or
/// cancellation (CANCEL: its side of the connection went away) is an end of the stream, as a
/// TCP FIN would be; a stream closed under it is a broken pipe.
fn read_ended(e: h2::Error) -> io::Result<()> {
    match e.reason() {
        Some(h2::Reason::NO_ERROR) | Some(h2::Reason::CANCEL) => Ok(()),
        Some(h2::Reason::STREAM_CLOSED) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
        _ => Err(into_io(e)),
    }
}

/// What a failed write means to the app connection: the peer no longer reading (it ended or
/// cancelled the stream) is a broken pipe, as a TCP reset would be.
fn write_failed(e: h2::Error) -> io::Error {
    match e.reason() {
        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL | h2::Reason::STREAM_CLOSED) => {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        }
        _ => into_io(e),
    }
}

/// The tunnel connection's own I/O error as it was, anything else (a reset, a protocol error)
/// as an error naming it.
fn into_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("tunnel connection failed"))
    } else {
        io::Error::other(e)
    }
}
