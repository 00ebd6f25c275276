//! The backend of the HTTP scenario: HTTP/1.1 with keep-alive (hyper), answering every request
//! with `200 OK` and a [`BODY_SIZE`]-byte body, whatever its method or path. The proxies in
//! front decide what reaches it; it answers everything that does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Response body size: 1 kB, as the TCP scenarios' messages.
pub const BODY_SIZE: usize = 1024;

/// The running backend; stops accepting and closes every connection on
/// [`HttpBackend::shutdown`].
pub struct HttpBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl HttpBackend {
    /// Binds `127.0.0.1:0` and serves until shut down.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let body = Bytes::from(body());
        let n = accepted.clone();
        let serve_one = move |stream| {
            n.fetch_add(1, Ordering::Relaxed);
            serve(stream, body.clone())
        };
        tasks.spawn(crate::echo::accept_loop(
            listener,
            "http",
            cancel.clone(),
            tasks.clone(),
            serve_one,
        ));
        Ok(Self {
            addr,
            accepted,
            cancel,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (a proxy that keeps its app connection alive opens one).
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The body every answer carries: printable, so a captured exchange reads well.
pub fn body() -> Vec<u8> {
    (0..BODY_SIZE).map(|i| b'a' + (i % 26) as u8).collect()
}

async fn serve(stream: TcpStream, body: Bytes) -> Result<(), hyper::Error> {
    // Loopback, small answers: Nagle would hold the answer back for the client's ACK.
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::http_load::{parse_response, HttpConnection, Request};

    #[tokio::test]
    async fn answers_one_kilobyte_on_one_kept_alive_connection() {
        let backend = HttpBackend::start().await.unwrap();
        let addr = backend.addr();
        let statuses = tokio::task::spawn_blocking(move || {
            let mut conn = HttpConnection::connect(addr).unwrap();
            let mut out = Vec::new();
            for request in [
                Request::bench(),
                Request::new("DELETE", "/admin/x", &[("user-agent", "curl/8")]),
                Request::bench(),
            ] {
                let answer = conn.send(&request).unwrap();
                out.push((answer.status, answer.body_len, answer.close));
            }
            out
        })
        .await
        .unwrap();
        assert_eq!(statuses, vec![(200, BODY_SIZE, false); 3]);
        assert_eq!(
            backend.connections_accepted(),
            1,
            "one connection, kept alive"
        );

        // On the wire: a Content-Length framed answer with the body above.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(Request::bench().bytes()).await.unwrap();
        let mut raw = Vec::new();
        let parsed = loop {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the backend closed before answering");
            raw.extend_from_slice(&buf[..n]);
            if let Some(p) = parse_response(&raw).unwrap() {
                break p;
            }
        };
        let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
        assert!(text.contains("content-length: 1024\r\n"), "{text}");
        assert!(raw.ends_with(&body()));
        assert_eq!(parsed.consumed, raw.len());

        backend.shutdown().await;
    }
}
