//! The HTTP listener: our own accept loop so that pausing drops the listener *and* every live
//! connection (a paused agent refuses connections, like a stopped one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::state::{Agent, Settings};

/// A running dev agent (in-process API used by tests and the benchmark).
pub struct DevAgent {
    agent: Arc<Agent>,
    addr: SocketAddr,
    listener_task: Mutex<Option<JoinHandle<()>>>,
}

/// Builds the agent state and starts serving on `config.http_addr`; returns once bound.
pub async fn start(config: Config) -> anyhow::Result<DevAgent> {
    let settings = Settings {
        datacenter: config.datacenter.clone(),
        node_name: config.node_name.clone(),
        node_id: uuid::Uuid::new_v4().to_string(),
        default_allow: config.default_allow,
        leaf_ttl: config.leaf_ttl,
        require_token: config.require_token.clone(),
    };
    let agent = Agent::new(settings)?;
    let listener = bind(config.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --http-addr {}: {e}", config.http_addr))?;
    let addr = listener.local_addr()?;
    let task = spawn_accept_loop(listener, agent.clone());
    Ok(DevAgent {
        agent,
        addr,
        listener_task: Mutex::new(Some(task)),
    })
}

impl DevAgent {
    /// The address the HTTP API is bound to (the real port when `http_addr` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The number of requests parked in a blocking wait right now (`?index=` queries, the
    /// leaf endpoint and `?hash=` waits), as the blocking machinery counts them: a request
    /// counts from the moment it has found its result unchanged and waits for a write or its
    /// `wait` to run out, until it answers or its client hangs up. A write made after this
    /// reports a request parked always wakes that request, so tests can start a blocking
    /// request, wait until it shows here, then make their change without racing it.
    pub fn blocked_requests(&self) -> usize {
        self.agent.waiters.count()
    }

    /// Stops serving HTTP: the listener closes and open connections are dropped; state is kept.
    pub async fn pause(&self) {
        let task = self.listener_task.lock().await.take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
            tracing::info!(http.addr = %self.addr, "paused: not serving HTTP");
        }
    }

    /// Serves again on the same address. Like a restarted agent, local registrations, checks
    /// and cached leaves are gone; the CA and intentions are kept.
    pub async fn resume(&self) {
        let mut slot = self.listener_task.lock().await;
        if slot.is_some() {
            return;
        }
        self.agent.write(|state, tx| {
            state.catalog.clear(tx);
            state.ca.forget_leaves();
        });
        let mut delay = Duration::from_millis(10);
        loop {
            match bind(self.addr).await {
                Ok(listener) => {
                    *slot = Some(spawn_accept_loop(listener, self.agent.clone()));
                    tracing::info!(http.addr = %self.addr, "resumed: serving HTTP");
                    return;
                }
                Err(e) if delay < Duration::from_secs(5) => {
                    tracing::warn!(http.addr = %self.addr, error = %e, "cannot re-bind yet, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::error!(http.addr = %self.addr, error = %e, "cannot re-bind: staying paused");
                    return;
                }
            }
        }
    }

    /// Stops serving and drops all state (check tasks included).
    pub async fn shutdown(self) {
        self.pause().await;
        self.agent.write(|state, tx| state.catalog.clear(tx));
    }
}

impl Drop for DevAgent {
    /// A dropped agent stops serving even without `shutdown()` (tests that end early).
    fn drop(&mut self) {
        if let Ok(mut slot) = self.listener_task.try_lock() {
            if let Some(task) = slot.take() {
                task.abort();
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn spawn_accept_loop(listener: TcpListener, agent: Arc<Agent>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Owns every connection task: aborting this task drops the set and so every connection.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let agent = agent.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| crate::http::handle(agent.clone(), req));
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = conn.await {
                                tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}
