//! The one accept loop every listener of the proxy runs (public, upstreams, admin).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts on `listener` until `stop` fires, then closes it (so new connections are refused).
/// `admit` sees each accepted connection and returns the task that serves it, spawned on
/// `tasks`, or `None` to drop it (the connection limit; `admit` counts and logs that itself).
/// An accept error (out of file descriptors) is logged and retried after a short pause.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    name: &str,
    stop: &CancellationToken,
    tasks: &TaskTracker,
    mut admit: impl FnMut(TcpStream, SocketAddr) -> Option<F>,
) where
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, client) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if let Some(connection) = admit(stream, client) {
            tasks.spawn(connection);
        }
    }
    drop(listener);
    tracing::info!(listener = name, "listener closed");
}
