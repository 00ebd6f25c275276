//! The HTTP load generator: a minimal blocking HTTP/1.1 client that keeps its connection alive,
//! and a closed loop over a few such connections. Plain threads and blocking sockets, as in
//! [`crate::loadgen`], so the client costs every subject the same few microseconds and no
//! runtime's timer or scheduler sits between a request and its answer.
//!
//! The client writes one prepared request and reads one answer framed by `Content-Length` or
//! chunked encoding; it never pipelines, so what it reads after an answer is an error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::http_backend::BODY_SIZE;
use crate::stats::{nanos, new_histogram, Percentiles};

/// The path every measured request asks for.
pub const BENCH_PATH: &str = "/bench/1k";
/// The `Host` every request names (the server-side service).
const HOST: &str = "echo";
/// Socket timeout for every read and write: a subject that stops answering fails the run
/// instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer's header block may not be longer than this.
const MAX_HEAD: usize = 64 * 1024;

/// One request, serialised once and written as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    path: String,
    bytes: Vec<u8>,
}

impl Request {
    /// `method path` with `Host` and then `headers`, in order; no body.
    pub fn new(method: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut text = format!("{method} {path} HTTP/1.1\r\nhost: {HOST}\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        Self {
            method: method.into(),
            path: path.into(),
            bytes: text.into_bytes(),
        }
    }

    /// The measured request: `GET /bench/1k` with the headers a typical client sends.
    pub fn bench() -> Self {
        Self::new(
            "GET",
            BENCH_PATH,
            &[("user-agent", "tandem-bench"), ("accept", "*/*")],
        )
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `METHOD path`, for messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What the client learned from one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_len: usize,
    /// The server said `Connection: close`.
    pub close: bool,
}

/// One complete answer at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    pub body_len: usize,
    pub close: bool,
    /// Bytes of the buffer the answer took, head and framing included.
    pub consumed: usize,
}

/// Parses the answer at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_response(buf: &[u8]) -> anyhow::Result<Option<Parsed>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        anyhow::ensure!(
            buf.len() <= MAX_HEAD,
            "answer head longer than {MAX_HEAD} bytes"
        );
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body_start = head_end + 4;
    let body = &buf[body_start..];
    let framed = if matches!(status, 100..=199 | 204 | 304) {
        Some((0, 0))
    } else if chunked {
        dechunked_len(body)?
    } else {
        let len = content_length.context(
            "answer has neither Content-Length nor chunked framing (a keep-alive client cannot \
             tell where it ends)",
        )?;
        (body.len() >= len).then_some((len, len))
    };
    Ok(framed.map(|(body_len, wire_len)| Parsed {
        status,
        body_len,
        close,
        consumed: body_start + wire_len,
    }))
}

/// A chunked body at the start of `body`: `(decoded length, bytes on the wire)` once complete.
fn dechunked_len(body: &[u8]) -> anyhow::Result<Option<(usize, usize)>> {
    let mut at = 0;
    let mut decoded = 0;
    loop {
        let Some(line_end) = find(&body[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[at..at + line_end]).context("bad chunk size")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers (usually none), then the empty line.
            if body[at..].starts_with(b"\r\n") {
                return Ok(Some((decoded, at + 2)));
            }
            return Ok(find(&body[at..], b"\r\n\r\n").map(|end| (decoded, at + end + 4)));
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        anyhow::ensure!(
            &body[at + size..at + size + 2] == b"\r\n",
            "chunk not followed by CRLF"
        );
        decoded += size;
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One kept-alive HTTP/1.1 client connection.
pub struct HttpConnection {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
}

impl HttpConnection {
    /// Connects with `TCP_NODELAY` and the I/O timeouts set.
    pub fn connect(target: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            stream,
            buf: vec![0; 16 * 1024],
            filled: 0,
        })
    }

    /// Writes `request` and reads its whole answer.
    pub fn send(&mut self, request: &Request) -> anyhow::Result<Answer> {
        anyhow::ensure!(
            self.filled == 0,
            "{} bytes arrived that no request asked for",
            self.filled
        );
        self.stream
            .write_all(request.bytes())
            .with_context(|| format!("writing {}", request.line()))?;
        loop {
            if let Some(p) = parse_response(&self.buf[..self.filled])? {
                self.buf.copy_within(p.consumed..self.filled, 0);
                self.filled -= p.consumed;
                return Ok(Answer {
                    status: p.status,
                    body_len: p.body_len,
                    close: p.close,
                });
            }
            if self.filled == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.filled..])
                .with_context(|| format!("reading the answer to {}", request.line()))?;
            anyhow::ensure!(
                n > 0,
                "connection closed before the answer to {} was complete",
                request.line()
            );
            self.filled += n;
        }
    }

    /// [`HttpConnection::send`], and the answer must be the backend's: 200, 1 kB, kept alive.
    pub fn send_expecting_backend(&mut self, request: &Request) -> anyhow::Result<()> {
        let a = self.send(request)?;
        anyhow::ensure!(
            a.status == 200 && a.body_len == BODY_SIZE && !a.close,
            "{} answered {} with {} bytes{} (expected 200 with {BODY_SIZE}, kept alive)",
            request.line(),
            a.status,
            a.body_len,
            if a.close { ", connection: close" } else { "" }
        );
        Ok(())
    }
}

/// One request on a new connection; its answer's status.
pub fn status_on_new_connection(target: SocketAddr, request: &Request) -> anyhow::Result<u16> {
    Ok(HttpConnection::connect(target)?.send(request)?.status)
}

/// Requests, time and latencies of closed-loop slices, mergeable across slices.
#[derive(Debug, Clone)]
pub struct LoopRun {
    pub latency: Histogram<u64>,
    pub seconds: f64,
}

impl Default for LoopRun {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            seconds: 0.0,
        }
    }
}

impl LoopRun {
    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    pub fn merge(&mut self, other: &LoopRun) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.seconds += other.seconds;
    }

    pub fn result(&self, connections: usize) -> LoadResult {
        LoadResult {
            connections,
            requests: self.requests(),
            seconds: (self.seconds * 1000.0).round() / 1000.0,
            rps: (self.requests() as f64 / self.seconds.max(1e-9)).round(),
            latency: Percentiles::of(&self.latency),
        }
    }
}

/// Closed-loop requests over kept-alive connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadResult {
    pub connections: usize,
    pub requests: u64,
    /// Wall-clock seconds the slices took, summed.
    pub seconds: f64,
    /// Requests per second over all connections.
    pub rps: f64,
    /// From writing a request to having read its whole answer.
    pub latency: Percentiles,
}

/// Every connection sends `request` again as soon as the previous answer is in, for
/// `duration`; one connection is the serial case. Hands the connections back for the next
/// slice. Any failed request fails the slice.
pub fn closed_loop(
    conns: Vec<HttpConnection>,
    request: &Request,
    duration: Duration,
) -> anyhow::Result<(Vec<HttpConnection>, LoopRun)> {
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let request = request.clone();
            thread::spawn(
                move || -> anyhow::Result<(HttpConnection, Histogram<u64>)> {
                    let mut h = new_histogram();
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        conn.send_expecting_backend(&request)?;
                        h.saturating_record(nanos(t0.elapsed()));
                    }
                    Ok((conn, h))
                },
            )
        })
        .collect();
    let mut run = LoopRun::default();
    let mut back = Vec::with_capacity(handles.len());
    let mut first_error = None;
    for handle in handles {
        match handle.join().expect("load thread does not panic") {
            Ok((conn, h)) => {
                run.latency.add(&h).expect("histograms share bounds");
                back.push(conn);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    run.seconds = start.elapsed().as_secs_f64();
    match first_error {
        Some(e) => Err(e),
        None => Ok((back, run)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_host_and_headers_in_order() {
        let r = Request::bench();
        assert_eq!(
            String::from_utf8(r.bytes().to_vec()).unwrap(),
            "GET /bench/1k HTTP/1.1\r\nhost: echo\r\nuser-agent: tandem-bench\r\naccept: */*\r\n\r\n"
        );
        assert_eq!(r.line(), "GET /bench/1k");
    }

    #[test]
    fn content_length_answers_complete_only_with_the_whole_body() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\n\r\nhello";
        for cut in [0, 10, full.len() - 4, full.len() - 1] {
            assert_eq!(parse_response(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse_response(full).unwrap(),
            Some(Parsed {
                status: 200,
                body_len: 5,
                close: false,
                consumed: full.len()
            })
        );
        // Bytes after the answer are left for the caller.
        let mut two = full.to_vec();
        two.extend_from_slice(b"HTTP/1.1");
        assert_eq!(parse_response(&two).unwrap().unwrap().consumed, full.len());
    }

    #[test]
    fn chunked_answers_and_connection_close() {
        let full =
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                     4\r\nRBAC\r\n10;ext=1\r\n: access denied.\r\n0\r\n\r\n";
        assert_eq!(parse_response(&full[..full.len() - 2]).unwrap(), None);
        assert_eq!(
            parse_response(full).unwrap(),
            Some(Parsed {
                status: 403,
                body_len: 20,
                close: true,
                consumed: full.len()
            })
        );
        let trailers =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(
            parse_response(trailers).unwrap().unwrap().consumed,
            trailers.len()
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: many\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nunframed",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_response(&vec![b'a'; MAX_HEAD + 1]).is_err());
        let no_body = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(no_body).unwrap().unwrap().body_len, 0);
    }

    #[tokio::test]
    async fn closed_loop_keeps_its_connections_across_slices() {
        let backend = crate::http_backend::HttpBackend::start().await.unwrap();
        let addr = backend.addr();
        let (first, second) = tokio::task::spawn_blocking(move || {
            let conns = (0..2)
                .map(|_| HttpConnection::connect(addr).unwrap())
                .collect();
            let request = Request::bench();
            let (conns, a) = closed_loop(conns, &request, Duration::from_millis(50)).unwrap();
            let (conns, b) = closed_loop(conns, &request, Duration::from_millis(50)).unwrap();
            assert_eq!(conns.len(), 2);
            (a, b)
        })
        .await
        .unwrap();
        assert!(first.requests() >= 2 && second.requests() >= 2);
        let mut total = first.clone();
        total.merge(&second);
        let result = total.result(2);
        assert_eq!(result.requests, first.requests() + second.requests());
        assert_eq!(result.latency.count, result.requests);
        assert_eq!(
            backend.connections_accepted(),
            2,
            "no reconnects between slices"
        );
        backend.shutdown().await;
    }
}
