//! The public listener: accept, mTLS handshake against the current roots, authorize the
//! caller's SPIFFE service against the live intentions, then connect to the app and copy.
//! A denied or unverifiable caller gets its connection closed with no data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connections::{self, AccessLog, Connections};
use crate::copy::{self, Stopper, Transfer};
use crate::identity::TlsState;
use crate::intentions::{IntentionSet, Source};
use crate::metrics::{Direction, Metrics};

/// What the inbound path needs; shared by every connection.
pub struct Inbound {
    /// The local service name: the destination intentions are evaluated for.
    pub service: String,
    /// Where the app listens.
    pub app: SocketAddr,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub tls: watch::Receiver<Arc<TlsState>>,
    pub intentions: watch::Receiver<Arc<IntentionSet>>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Semaphore>,
    pub connections: Arc<Connections>,
}

impl Inbound {
    /// Accepts on `listener` until `stop_accepting` fires (then the listener is closed, so new
    /// connections are refused); connections are spawned on `tasks`.
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
                        tracing::warn!(error = %e, "inbound accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = self.limiter.clone().try_acquire_owned() else {
                self.metrics.refused(Direction::Inbound, "max_connections");
                tracing::warn!(client.addr = %client, "connection refused: --max-connections reached");
                continue;
            };
            let this = self.clone();
            let span = tracing::info_span!("conn", direction = "inbound", client.addr = %client);
            tasks.spawn(
                async move {
                    this.handle(stream, client).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        drop(listener);
        tracing::info!("inbound listener closed");
    }

    async fn handle(&self, stream: TcpStream, client: SocketAddr) {
        let started = Instant::now();
        self.metrics.connection_opened(Direction::Inbound);
        let app_addr = self.app.to_string();
        let mut log = AccessLog {
            direction: Direction::Inbound,
            client,
            peer: None,
            upstream: None,
            target: Some(&app_addr),
            started,
        };
        connections::tune(&stream);

        let tls = self.tls.borrow().clone();
        let acceptor = TlsAcceptor::from(tls.server.clone());
        let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await;
        let mut stream = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = connections::handshake_reason(&e);
                self.metrics.handshake_failed(Direction::Inbound, reason);
                tracing::debug!(client.addr = %client, error = %e, reason, "inbound handshake failed");
                self.refused(&log, "handshake_failed");
                return;
            }
            Err(_) => {
                self.metrics.handshake_failed(Direction::Inbound, "timeout");
                self.refused(&log, "handshake_timeout");
                return;
            }
        };

        let peer = match tandem_certs::tls::peer_service_id(stream.get_ref().1.peer_certificates())
        {
            Ok(p) => p,
            Err(e) => {
                self.metrics
                    .handshake_failed(Direction::Inbound, "bad_identity");
                tracing::debug!(client.addr = %client, error = %e, "inbound peer has no service identity");
                close(&mut stream).await;
                self.refused(&log, "bad_identity");
                return;
            }
        };
        let peer_log = peer.clone();
        log.peer = Some(&peer_log);

        let decision = self.intentions.borrow().authorize(&source(&peer));
        self.metrics.authorized(decision.allowed);
        if !decision.allowed {
            tracing::info!(client.addr = %client, peer.id = %peer, reason = %decision.reason, "connection denied by intentions");
            close(&mut stream).await;
            self.refused(&log, "denied");
            return;
        }

        let stopper = Stopper::new();
        let _registered =
            self.connections
                .insert(Direction::Inbound, Some(peer.clone()), stopper.clone());
        // An intention change between the decision and the registration must not be missed.
        if !self.intentions.borrow().authorize(&source(&peer)).allowed {
            close(&mut stream).await;
            self.refused(&log, "denied");
            return;
        }

        let app = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.app))
            .await
        {
            Ok(Ok(app)) => app,
            Ok(Err(e)) => {
                tracing::warn!(app.addr = %self.app, error = %e, "cannot connect to the local app");
                close(&mut stream).await;
                self.refused(&log, "app_unreachable");
                return;
            }
            Err(_) => {
                tracing::warn!(app.addr = %self.app, "connecting to the local app timed out");
                close(&mut stream).await;
                self.refused(&log, "app_connect_timeout");
                return;
            }
        };
        connections::tune(&app);
        let transfer = copy::bidirectional(stream, app, self.idle_timeout, &stopper).await;
        self.finish(&log, transfer);
    }

    /// Ends a connection that was closed before any byte was copied.
    fn refused(&self, log: &AccessLog<'_>, end: &'static str) {
        self.finish(log, Transfer::empty(end));
    }

    fn finish(&self, log: &AccessLog<'_>, transfer: Transfer) {
        self.metrics.connection_closed(
            Direction::Inbound,
            transfer.end,
            transfer.received,
            transfer.sent,
        );
        log.emit(&transfer);
    }
}

/// Closes every open inbound connection whose caller the new intentions deny, each time the
/// intentions change, until `stop` fires.
pub async fn enforce(
    mut intentions: watch::Receiver<Arc<IntentionSet>>,
    connections: Arc<Connections>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = intentions.changed() => if changed.is_err() { return },
        }
        let set = intentions.borrow_and_update().clone();
        for (peer, stopper) in connections.inbound_peers() {
            let decision = set.authorize(&source(&peer));
            if !decision.allowed {
                tracing::info!(peer.id = %peer, reason = %decision.reason, "closing an open connection a changed intention denies");
                metrics.revoked();
                stopper.stop("revoked");
            }
        }
    }
}

fn source(peer: &tandem_certs::spiffe::ServiceId) -> Source<'_> {
    Source {
        partition: peer.partition.as_deref(),
        namespace: &peer.namespace,
        service: &peer.service,
    }
}

/// Ends a TLS connection without sending data (close_notify, then FIN).
async fn close<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}
