//! The HTTP/1.x server: every request, whatever its method, path or body, gets the same answer.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How long a client may take to send a request head before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer http-echo gives: `text` and a newline, as Go's `fmt.Fprintln` writes it.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    body: Bytes,
    status: StatusCode,
}

impl Reply {
    /// Answers `text` with `status`; fails unless `status` is 100-599.
    pub(crate) fn new(text: &str, status: u16) -> Result<Self, String> {
        let status = StatusCode::from_u16(status)
            .map_err(|_| format!("invalid status code {status}: expected 100-599"))?;
        Ok(Self {
            body: Bytes::from(format!("{text}\n")),
            status,
        })
    }

    /// The response to any request.
    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body.clone()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("x-app-name", HeaderValue::from_static("http-echo"));
        headers.insert(
            "x-app-version",
            HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
        );
        response
    }
}

/// A bound listener, ready to serve.
pub(crate) struct Server {
    listener: TcpListener,
    reply: Arc<Reply>,
}

impl Server {
    /// Binds `addr` (port 0 lets the OS pick).
    pub(crate) async fn bind(addr: SocketAddr, reply: Reply) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            reply: Arc::new(reply),
        })
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; open connections are dropped then.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let reply = Arc::clone(&self.reply);
                        connections.spawn(serve_connection(stream, peer, reply));
                    }
                    // Running out of file descriptors or a connection reset before accept:
                    // the listener itself is fine, keep accepting.
                    Err(err) => eprintln!("http-echo: accept failed: {err}"),
                },
            }
        }
        connections.shutdown().await;
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, reply: Arc<Reply>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let reply = Arc::clone(&reply);
        async move {
            let started = Instant::now();
            let response = reply.response();
            println!("{}", access_log(peer, &request, &reply, started.elapsed()));
            Ok::<_, Infallible>(response)
        }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = result {
        // Malformed requests, resets and timeouts are the client's business.
        eprintln!("http-echo: connection from {peer}: {err}");
    }
}

/// One line per request, in http-echo's spirit: host, request line, status, size, user agent.
fn access_log(
    peer: SocketAddr,
    request: &Request<Incoming>,
    reply: &Reply,
    elapsed: Duration,
) -> String {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
            .unwrap_or("-")
    };
    format!(
        "{} {} \"{} {} {:?}\" {} {} \"{}\" {:?}",
        peer,
        header(HOST),
        request.method(),
        request.uri(),
        request.version(),
        reply.status.as_u16(),
        reply.body.len(),
        header(USER_AGENT),
        elapsed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    async fn start(text: &str) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let reply = Reply::new(text, 200).expect("200 is a valid status");
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), reply)
            .await
            .expect("binding 127.0.0.1:0");
        let addr = server.local_addr().expect("bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    /// Sends raw bytes and reads until the server closes the connection.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        String::from_utf8(answer).expect("utf-8 answer")
    }

    fn body(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    #[test]
    fn reply_is_the_text_verbatim_and_a_newline() {
        let reply = Reply::new("\"hello world\"", 200).unwrap();
        let response = reply.response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(reply.body, Bytes::from_static(b"\"hello world\"\n"));
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.headers()["x-app-name"], "http-echo");
    }

    #[test]
    fn reply_refuses_an_impossible_status() {
        assert!(Reply::new("x", 1000).unwrap_err().contains("1000"));
    }

    #[tokio::test]
    async fn answers_http_1_0_and_closes() {
        let (addr, _stop, _task) = start("\"hello world\"").await;
        let answer = exchange(addr, "GET / HTTP/1.0\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
        assert!(answer.contains("content-length: 14\r\n"), "{answer}");
        assert_eq!(body(&answer), "\"hello world\"\n");
    }

    #[tokio::test]
    async fn answers_every_path_method_and_body_the_same() {
        let (addr, _stop, _task) = start("same").await;
        for request in [
            "GET /some/path?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde",
            "PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ] {
            let answer = exchange(addr, request).await;
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{request:?}: {answer}");
            assert_eq!(body(&answer), "same\n", "{request:?}");
        }
    }

    #[tokio::test]
    async fn keeps_http_1_1_connections_alive() {
        let (addr, _stop, _task) = start("again").await;
        let answer = exchange(
            addr,
            "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert_eq!(answer.matches("again\n").count(), 2, "{answer}");
    }

    #[tokio::test]
    async fn head_gets_headers_without_body() {
        let (addr, _stop, _task) = start("hidden").await;
        let answer = exchange(
            addr,
            "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(body(&answer), "");
    }

    #[tokio::test]
    async fn garbage_gets_400_not_a_crash() {
        let (addr, _stop, _task) = start("ok").await;
        let answer = exchange(addr, "NOT HTTP AT ALL\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        // ... and the server still answers the next client.
        let answer = exchange(addr, "GET / HTTP/1.0\r\n\r\n").await;
        assert_eq!(body(&answer), "ok\n");
    }

    #[tokio::test]
    async fn stops_when_asked() {
        let (addr, stop, task) = start("bye").await;
        stop.send(()).expect("server is running");
        task.await.expect("server task ends cleanly");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }
}
