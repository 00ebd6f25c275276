//! The backend every subject forwards to, and its wire protocol.
//!
//! A connection starts with one mode byte:
//! - [`MODE_ECHO`]: then any number of [`MESSAGE_SIZE`]-byte requests, each answered by the same
//!   bytes (persistent-connection request/response);
//! - [`MODE_ONCE`]: one request, one answer, then the server closes (new connection per request,
//!   like an HTTP/1.0 `curl`; the server closing first keeps TIME_WAIT off the client's ports);
//! - [`MODE_UPLOAD`]: the client streams until it half-closes; the server answers with the byte
//!   count as a big-endian `u64`;
//! - [`MODE_DOWNLOAD`]: the server streams until the client goes away (or [`DOWNLOAD_LIMIT`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Request and response size: 1 kB, as in the published mesh benchmarks.
pub const MESSAGE_SIZE: usize = 1024;
pub const MODE_ECHO: u8 = b'e';
pub const MODE_ONCE: u8 = b'o';
pub const MODE_UPLOAD: u8 = b'u';
pub const MODE_DOWNLOAD: u8 = b'd';
/// Bulk transfer chunk size.
pub const CHUNK: usize = 64 * 1024;
/// A download never runs longer than this, whatever the client does.
pub const DOWNLOAD_LIMIT: Duration = Duration::from_secs(60);

/// Accepts on `listener` until `cancel` fires, serving each connection with `serve` on `tasks`
/// (stopped too when `cancel` fires); `name` is for the logs. An accept error (EMFILE and
/// friends) backs off instead of spinning.
pub(crate) async fn accept_loop<F, Fut, E>(
    listener: TcpListener,
    name: &'static str,
    cancel: CancellationToken,
    tasks: TaskTracker,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (c, connection) = (cancel.clone(), serve(stream));
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = c.cancelled() => {}
                            r = connection => if let Err(e) = r {
                                tracing::debug!(error = %e, backend = name, "backend connection ended");
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, backend = name, "backend accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// The running backend; stops accepting and closes every connection on [`Backend::shutdown`].
pub struct Backend {
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Backend {
    /// Binds `127.0.0.1:0` and serves until shut down.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(
            listener,
            "backend",
            cancel.clone(),
            tasks.clone(),
            serve,
        ));
        Ok(Self {
            addr,
            cancel,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mode = match stream.read_u8().await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => return Err(e),
    };
    match mode {
        MODE_ECHO => {
            let mut buf = [0u8; MESSAGE_SIZE];
            loop {
                match stream.read_exact(&mut buf).await {
                    Ok(_) => stream.write_all(&buf).await?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        MODE_ONCE => {
            let mut buf = [0u8; MESSAGE_SIZE];
            stream.read_exact(&mut buf).await?;
            stream.write_all(&buf).await?;
            stream.shutdown().await
        }
        MODE_UPLOAD => {
            let mut buf = vec![0u8; CHUNK];
            let mut total: u64 = 0;
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            stream.write_u64(total).await?;
            stream.shutdown().await
        }
        MODE_DOWNLOAD => {
            let buf = vec![0x5au8; CHUNK];
            let deadline = tokio::time::Instant::now() + DOWNLOAD_LIMIT;
            while tokio::time::Instant::now() < deadline {
                // The client hanging up ends the download: that error is the normal way out.
                if stream.write_all(&buf).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown backend mode byte {other:#04x}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_once_upload_and_download_modes() {
        let backend = Backend::start().await.unwrap();
        let addr = backend.addr();
        // Open across the shutdown: the backend must close it.
        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_u8(MODE_ECHO).await.unwrap();

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_u8(MODE_ECHO).await.unwrap();
        for round in 0..3u8 {
            let req = [round; MESSAGE_SIZE];
            s.write_all(&req).await.unwrap();
            let mut resp = [0u8; MESSAGE_SIZE];
            s.read_exact(&mut resp).await.unwrap();
            assert_eq!(resp, req);
        }

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_u8(MODE_ONCE).await.unwrap();
        s.write_all(&[7u8; MESSAGE_SIZE]).await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        assert_eq!(resp, vec![7u8; MESSAGE_SIZE]);

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_u8(MODE_UPLOAD).await.unwrap();
        s.write_all(&vec![1u8; 300_000]).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(s.read_u64().await.unwrap(), 300_000);

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_u8(MODE_DOWNLOAD).await.unwrap();
        let mut got = vec![0u8; 3 * CHUNK];
        s.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&b| b == 0x5a));
        drop(s);

        backend.shutdown().await;
        // (Connecting to `addr` again is no proof: a parallel test may already have bound the
        // freed port.) The held connection is closed, not left hanging.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), held.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a connection open at shutdown is closed: {read:?}"
        );
    }
}
