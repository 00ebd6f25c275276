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
    /// Where the app listens; `None` for a pod that serves nothing (no `--service-port`): the
    /// listener still answers Consul's TCP check, and an authorized caller is told no by a
    /// closed connection.
    pub app: Option<SocketAddr>,
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
        let first_byte = self.first_byte(&stream).await;
        if first_byte == FirstByte::None {
            // Counted as a probe and closed with end="probe"; no failure, no access log line.
            self.metrics.probed();
            self.metrics
                .connection_closed(Direction::Inbound, "probe", 0, 0);
            tracing::debug!(client.addr = %client, "probe: closed before sending a byte");
            return;
        }
        let app_addr = self
            .app
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".to_string());
        let mut log = AccessLog {
            direction: Direction::Inbound,
            client,
            peer: None,
            upstream: None,
            target: Some(&app_addr),
            started,
        };
        connections::tune(&stream);

        if first_byte == FirstByte::TimedOut {
            self.metrics.handshake_failed(Direction::Inbound, "timeout");
            self.refused(&log, "handshake_timeout");
            return;
        }
        let tls = self.tls.borrow().clone();
        let acceptor = TlsAcceptor::from(tls.server.clone());
        let remaining = self.handshake_timeout.saturating_sub(started.elapsed());
        let handshake = tokio::time::timeout(remaining, acceptor.accept(stream)).await;
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

        let Some(app_addr) = self.app else {
            tracing::info!(client.addr = %client, peer.id = %peer, "connection refused: this pod serves no port (no --service-port)");
            close(&mut stream).await;
            self.refused(&log, "no_service_port");
            return;
        };
        let app = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(app_addr))
            .await
        {
            Ok(Ok(app)) => app,
            Ok(Err(e)) => {
                tracing::warn!(app.addr = %app_addr, error = %e, "cannot connect to the local app");
                close(&mut stream).await;
                self.refused(&log, "app_unreachable");
                return;
            }
            Err(_) => {
                tracing::warn!(app.addr = %app_addr, "connecting to the local app timed out");
                close(&mut stream).await;
                self.refused(&log, "app_connect_timeout");
                return;
            }
        };
        connections::tune(&app);
        let transfer = copy::bidirectional(stream, app, self.idle_timeout, &stopper).await;
        self.finish(&log, transfer);
    }

    /// Waits (up to the handshake timeout) for the caller's first byte without consuming it. A
    /// health probe, such as Consul's TCP check, connects and closes without sending one: not
    /// a connection, and not a failed handshake.
    async fn first_byte(&self, stream: &TcpStream) -> FirstByte {
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.handshake_timeout, stream.peek(&mut first)).await {
            Ok(Ok(0)) => FirstByte::None,
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                FirstByte::None
            }
            Ok(Ok(_)) | Ok(Err(_)) => FirstByte::Arrived,
            Err(_) => FirstByte::TimedOut,
        }
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

/// What the caller sent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstByte {
    /// Data is waiting (or the socket has an error the handshake will report).
    Arrived,
    /// The connection ended before a byte: a probe.
    None,
    /// Nothing within the handshake timeout.
    TimedOut,
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
