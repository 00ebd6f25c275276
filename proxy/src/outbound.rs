//! Upstream listeners: plaintext on `127.0.0.1:<port>` for the app; each connection goes to a
//! healthy instance over mTLS (our leaf, Consul's SNI, the server's identity verified), trying
//! the next instance if one refuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connections::{self, AccessLog, Connections};
use crate::copy::{self, Stopper, Transfer};
use crate::discovery::{Balancer, Endpoint};
use crate::identity::TlsState;
use crate::metrics::{Direction, Metrics};

/// One upstream listener's shared state.
pub struct Outbound {
    pub upstream: String,
    pub balancer: Balancer,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub tls: watch::Receiver<Arc<TlsState>>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Semaphore>,
    pub connections: Arc<Connections>,
}

impl Outbound {
    /// Accepts on `listener` until `stop_accepting` fires.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop_accepting: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let (stream, client) = tokio::select! {
                _ = stop_accepting.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, upstream.service = %self.upstream, "upstream accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = self.limiter.clone().try_acquire_owned() else {
                self.metrics.refused(Direction::Outbound, "max_connections");
                tracing::warn!(client.addr = %client, "connection refused: --max-connections reached");
                continue;
            };
            let this = self.clone();
            let span = tracing::info_span!("conn", direction = "outbound", client.addr = %client,
                upstream.service = %self.upstream);
            tasks.spawn(
                async move {
                    this.handle(stream, client).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    async fn handle(&self, app: TcpStream, client: SocketAddr) {
        let started = Instant::now();
        self.metrics.connection_opened(Direction::Outbound);
        connections::tune(&app);
        let stopper = Stopper::new();
        let _registered = self
            .connections
            .insert(Direction::Outbound, None, stopper.clone());

        let dialed = tokio::select! {
            d = self.dial() => d,
            _ = stopper.cancelled() => None,
        };
        let Some((tls, endpoint)) = dialed else {
            let end = if stopper.is_stopped() {
                "stopped"
            } else {
                "no_instance_reachable"
            };
            let log = AccessLog {
                direction: Direction::Outbound,
                client,
                peer: None,
                upstream: Some(&self.upstream),
                target: None,
                started,
            };
            self.finish(&log, Transfer::empty(end));
            return;
        };
        let peer = tandem_certs::tls::peer_service_id(tls.get_ref().1.peer_certificates()).ok();
        let target = endpoint.address();
        let log = AccessLog {
            direction: Direction::Outbound,
            client,
            peer: peer.as_ref(),
            upstream: Some(&self.upstream),
            target: Some(&target),
            started,
        };
        let transfer = copy::bidirectional(app, tls, self.idle_timeout, &stopper).await;
        self.finish(&log, transfer);
    }

    /// Tries every current instance once, starting at the next in turn. With none listed (yet),
    /// holds the app's connection up to the connect timeout for discovery to list one.
    async fn dial(&self) -> Option<(TlsStream<TcpStream>, Endpoint)> {
        let candidates = self
            .balancer
            .candidates_within(self.connect_timeout, || {
                self.metrics.upstream_waited(&self.upstream);
                tracing::info!(upstream.service = %self.upstream, wait.max_ms = self.connect_timeout.as_millis() as u64,
                    "no healthy instance of the upstream yet: holding the connection until discovery lists one");
            })
            .await;
        if candidates.is_empty() {
            tracing::warn!(upstream.service = %self.upstream, "no healthy instance of the upstream");
            self.metrics.upstream_failed(&self.upstream, "no_instances");
            return None;
        }
        for endpoint in candidates {
            let started = Instant::now();
            match self.dial_one(&endpoint).await {
                Ok(tls) => {
                    self.metrics
                        .upstream_connected(&self.upstream, started.elapsed());
                    return Some((tls, endpoint));
                }
                Err(reason) => {
                    self.metrics.upstream_failed(&self.upstream, reason);
                    tracing::info!(upstream.service = %self.upstream, upstream.addr = %endpoint.address(),
                        upstream.id = %endpoint.id, reason, "upstream instance failed; trying the next");
                }
            }
        }
        None
    }

    async fn dial_one(&self, endpoint: &Endpoint) -> Result<TlsStream<TcpStream>, &'static str> {
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
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
        let state = self.tls.borrow().clone();
        let expected = state.expected(&endpoint.datacenter, &endpoint.service);
        let config = state.client_for(&expected).map_err(|e| {
            tracing::error!(error = %e, "cannot build the upstream TLS config");
            "tls_config"
        })?;
        let server_name = tandem_certs::tls::server_name(&expected);
        let connector = TlsConnector::from(config);
        match tokio::time::timeout(self.handshake_timeout, connector.connect(server_name, tcp))
            .await
        {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => {
                let reason = connections::handshake_reason(&e);
                self.metrics.handshake_failed(Direction::Outbound, reason);
                tracing::warn!(upstream.service = %self.upstream, upstream.addr = %endpoint.address(),
                    expected.id = %expected, error = %e, "upstream handshake failed");
                Err(reason)
            }
            Err(_) => {
                self.metrics
                    .handshake_failed(Direction::Outbound, "timeout");
                Err("handshake_timeout")
            }
        }
    }

    fn finish(&self, log: &AccessLog<'_>, transfer: Transfer) {
        self.metrics.connection_closed(
            Direction::Outbound,
            transfer.end,
            transfer.received,
            transfer.sent,
        );
        log.emit(&transfer);
    }
}
