//! Upstream listeners: plaintext on `127.0.0.1:<port>` for the app; each connection goes to a
//! healthy instance over mTLS (our leaf, Consul's SNI, the server's identity verified), trying
//! the next instance if one refuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConfig;
use tandem_certs::spiffe::ServiceId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connections::{self, DataPath, End};
use crate::copy::{self, Stopper};
use crate::discovery::{Balancer, Endpoint};
use crate::listener;
use crate::metrics::Direction;
use crate::tunnel::{self, Reserved, Stream};

/// One upstream listener's shared state.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// The upstream as metrics and logs name it ([`crate::discovery::target`]).
    upstream: Arc<str>,
    balancer: Balancer,
    data: DataPath,
}

impl Outbound {
    /// The listener of `upstream` (its metrics label), dialing the instances `endpoints` lists.
    pub(crate) fn new(
        upstream: String,
        endpoints: watch::Receiver<Arc<Vec<Endpoint>>>,
        data: DataPath,
    ) -> Arc<Self> {
        Arc::new(Outbound {
            upstream: upstream.into(),
            balancer: Balancer::new(endpoints),
            data,
        })
    }

    /// Accepts on `listener` until `stop_accepting` fires.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop_accepting: CancellationToken,
        tasks: TaskTracker,
    ) {
        let name = format!("upstream {}", self.upstream);
        connections::tune(&listener);
        listener::serve(listener, &name, &stop_accepting, &tasks, |stream, client| {
            let slot = self.data.slot(Direction::Outbound, client)?;
            let this = self.clone();
            let span = tracing::info_span!("conn", direction = "outbound", client.addr = %client,
                upstream.service = %self.upstream);
            Some(
                async move {
                    this.handle(stream, client).await;
                    drop(slot);
                }
                .instrument(span),
            )
        })
        .await;
    }

    async fn handle(&self, app: TcpStream, client: SocketAddr) {
        let mut conn = self.data.track(Direction::Outbound, client);
        conn.set_upstream(self.upstream.clone());
        connections::tune_accepted(&app);
        let stopper = Stopper::new();
        conn.set_registered(self.data.connections.insert(
            Direction::Outbound,
            None,
            stopper.clone(),
        ));

        // Boxed: dialing (a handshake, or establishing a tunnel) needs far more state than
        // the copy after it, and the task keeps its largest state for the connection's life.
        let dialed = tokio::select! {
            d = Box::pin(self.dial()) => d,
            _ = stopper.cancelled() => None,
        };
        let Some((dialed, endpoint)) = dialed else {
            return conn.end(if stopper.is_stopped() {
                End::Stopped
            } else {
                End::NoInstanceReachable
            });
        };
        conn.set_target(endpoint.address());
        let idle = self.data.limits.idle_timeout;
        match dialed {
            Dialed::Tls(tls) => {
                if let Ok(peer) =
                    tandem_certs::tls::peer_service_id(tls.get_ref().1.peer_certificates())
                {
                    conn.set_peer(peer);
                }
                conn.finish(copy::bidirectional(app, tls, idle, &stopper).await);
            }
            Dialed::Stream(stream) => {
                let Stream { io, peer, guard } = stream;
                conn.set_peer(peer);
                conn.finish(copy::bidirectional(app, io, idle, &stopper).await);
                drop(guard);
            }
        }
    }

    /// Tries every current instance once, starting at the next in turn. With none listed (yet),
    /// holds the app's connection up to the connect timeout for discovery to list one.
    async fn dial(&self) -> Option<(Dialed, Endpoint)> {
        let candidates = self
            .balancer
            .candidates_within(self.data.limits.connect_timeout, || {
                self.data.metrics.upstream_waited(&self.upstream);
                tracing::info!(upstream.service = %self.upstream, wait.max_ms = self.data.limits.connect_timeout.as_millis() as u64,
                    "no healthy instance of the upstream yet: holding the connection until discovery lists one");
            })
            .await;
        if candidates.is_empty() {
            tracing::warn!(upstream.service = %self.upstream, "no healthy instance of the upstream");
            self.data
                .metrics
                .upstream_failed(&self.upstream, "no_instances");
            return None;
        }
        for endpoint in candidates {
            let started = Instant::now();
            match self.dial_one(&endpoint).await {
                Ok(dialed) => {
                    self.data
                        .metrics
                        .upstream_connected(&self.upstream, started.elapsed());
                    return Some((dialed, endpoint));
                }
                Err(reason) => {
                    self.data.metrics.upstream_failed(&self.upstream, reason);
                    tracing::info!(upstream.service = %self.upstream, upstream.addr = %endpoint.address(),
                        upstream.id = %endpoint.id, reason, "upstream instance failed; trying the next");
                }
            }
        }
        None
    }

    /// One instance: a stream of a tunnel when both ends offer it, else an mTLS connection.
    async fn dial_one(&self, endpoint: &Endpoint) -> Result<Dialed, &'static str> {
        if self.data.tunnel.enabled && endpoint.tunnel.is_some() {
            if let Some(dialed) = self.through_tunnel(endpoint).await? {
                return Ok(dialed);
            }
        }
        let state = self.data.tls.borrow().clone();
        let expected = state.expected(&endpoint.datacenter, &endpoint.service);
        let config = state
            .client_for(&expected, &endpoint.address())
            .map_err(config_failed)?;
        Ok(Dialed::Tls(Box::new(
            self.connect(endpoint, &expected, config).await?,
        )))
    }

    /// A stream of a tunnel to `endpoint`: on an open tunnel, or on one established now. When
    /// the instance does not select the tunnel, the connection dialed to find out is used as an
    /// ordinary one. `None`: dial it plainly (every tunnel it may have is full, or it declined
    /// the tunnel or establishing one failed recently).
    async fn through_tunnel(&self, endpoint: &Endpoint) -> Result<Option<Dialed>, &'static str> {
        let (pool, metrics) = (&self.data.tunnels, &self.data.metrics);
        let authority = endpoint.address();
        let timeout = self.data.limits.connect_timeout;
        let expected = self
            .data
            .tls
            .borrow()
            .expected(&endpoint.datacenter, &endpoint.service);
        // A tunnel found closed while opening the stream is retired: the second round finds
        // or establishes another.
        for _ in 0..2 {
            let slot = match pool
                .reserve(endpoint, &expected, &self.data.tls, timeout)
                .await
            {
                Reserved::Stream(slot) => slot,
                Reserved::Full => {
                    metrics.tunnel_fallback("full");
                    return Ok(None);
                }
                Reserved::Plain => {
                    metrics.tunnel_fallback("plain");
                    return Ok(None);
                }
                Reserved::Dial(dialing) => {
                    let config = dialing
                        .credentials
                        .tunnel_client_for(&expected, &authority)
                        .map_err(config_failed)?;
                    let tls = match self.connect(endpoint, &expected, config).await {
                        Ok(tls) => tls,
                        Err(reason) => {
                            dialing.failed();
                            return Err(reason);
                        }
                    };
                    if !tunnel::negotiated(tls.get_ref().1) {
                        metrics.tunnel_fallback("not_negotiated");
                        dialing.declined();
                        return Ok(Some(Dialed::Tls(Box::new(tls))));
                    }
                    let Some(peer) = tunnel::Peer::of(tls.get_ref().1) else {
                        dialing.failed();
                        return Err("bad_identity");
                    };
                    dialing
                        .establish(pool, tls, peer, metrics)
                        .await
                        .map_err(|e| e.reason)?
                }
            };
            match slot.open(&authority, timeout).await {
                Ok(stream) => {
                    metrics.tunnel_stream(Direction::Outbound);
                    return Ok(Some(Dialed::Stream(stream)));
                }
                Err(e) if e.retry => continue,
                Err(e) => return Err(e.reason),
            }
        }
        Err("tunnel_closed")
    }

    /// TCP connect and mTLS handshake with `config` to `endpoint`, which must present
    /// `expected`.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        expected: &ServiceId,
        config: Arc<ClientConfig>,
    ) -> Result<TlsStream<TcpStream>, &'static str> {
        let tcp = match tokio::time::timeout(
            self.data.limits.connect_timeout,
            TcpStream::connect(endpoint.address()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err("connection_refused")
            }
            Ok(Err(_)) => return Err("connect_error"),
            Err(_) => return Err("connect_timeout"),
        };
        connections::tune(&tcp);
        let server_name = tandem_certs::tls::server_name(expected);
        let connector = TlsConnector::from(config);
        match tokio::time::timeout(
            self.data.limits.handshake_timeout,
            connector.connect(server_name, tcp),
        )
        .await
        {
            Ok(Ok(tls)) => {
                let resumed =
                    tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                self.data
                    .metrics
                    .handshake_done(Direction::Outbound, resumed);
                Ok(tls)
            }
            Ok(Err(e)) => {
                let reason = connections::handshake_reason(&e);
                self.data
                    .metrics
                    .handshake_failed(Direction::Outbound, reason);
                tracing::warn!(upstream.service = %self.upstream, upstream.addr = %endpoint.address(),
                    expected.id = %expected, error = %e, "upstream handshake failed");
                Err(reason)
            }
            Err(_) => {
                self.data
                    .metrics
                    .handshake_failed(Direction::Outbound, "timeout");
                Err("handshake_timeout")
            }
        }
    }
}

/// What an app connection is carried on.
#[allow(
    clippy::large_enum_variant,
    reason = "a stream is moved into its copy at once; boxing it would cost an allocation per \
              connection for a value that lives for one match"
)]
enum Dialed {
    /// Its own mTLS connection. Boxed: the TLS stream is over 1 KB and moves through the
    /// connection's task, which would keep a slot for it at every step for the connection's
    /// life (the heap holds it either way once the copy splits it).
    Tls(Box<TlsStream<TcpStream>>),
    /// A stream of a tunnel.
    Stream(Stream),
}

fn config_failed(e: tandem_certs::tls::TlsError) -> &'static str {
    tracing::error!(error = %e, "cannot build the upstream TLS config");
    "tls_config"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::testing;

    /// Every open connection keeps its task's state for as long as it lives: dialing (and
    /// establishing a tunnel) must not make it larger (it is boxed while it runs).
    #[tokio::test]
    async fn an_outbound_connection_task_stays_small() {
        let (_tx, endpoints) = watch::channel(Arc::new(Vec::new()));
        let outbound = Outbound::new(
            "static-server".into(),
            endpoints,
            testing::data_path("static-client"),
        );
        let (_client, accepted, addr) = testing::tcp_pair().await;
        let task = outbound.handle(accepted, addr);
        let task = std::mem::size_of_val(&task);
        assert!(
            task <= testing::TASK_STATE_LIMIT,
            "an outbound connection's task keeps {task} bytes"
        );
    }
}
