//! The public listener: accept, mTLS handshake against the current roots, authorize the
//! caller's SPIFFE service against the live intentions, then connect to the app and copy.
//! A denied or unverifiable caller gets its connection closed with no data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use tandem_certs::spiffe::ServiceId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::InboundSettings;
use crate::connections::{self, Connections, DataPath, End, Tracked};
use crate::copy::{self, Stopper};
use crate::identity::TlsState;
use crate::intentions::IntentionSet;
use crate::l7::Requests;
use crate::listener;
use crate::metrics::{Direction, Metrics};
use crate::protocol::Protocol;
use crate::tunnel;

/// What the inbound path needs; shared by every connection.
#[derive(Debug)]
pub struct Inbound {
    /// Where the app listens; `None` for a pod that serves nothing (no `--service-port`): the
    /// listener still answers Consul's TCP check, and an authorized caller is told no by a
    /// closed connection.
    app: Option<SocketAddr>,
    /// The app's address as the access log shows it.
    app_label: String,
    pub(crate) intentions: watch::Receiver<Arc<IntentionSet>>,
    /// The service's protocol: `tcp` decides a connection once, the HTTP ones each request.
    protocol: watch::Receiver<Arc<Protocol>>,
    /// `--http-access-log`: a log line per HTTP request.
    pub(crate) access_log: bool,
    /// `--close-denied-connections`: a relayed WebSocket is closed too once its request is
    /// denied (a `tcp` caller's connection by [`enforce`]).
    pub(crate) close_denied: bool,
    pub(crate) data: DataPath,
}

impl Inbound {
    /// The inbound path of `settings` for a `tcp` service, deciding callers by `intentions`.
    pub fn new(
        settings: &InboundSettings,
        intentions: watch::Receiver<Arc<IntentionSet>>,
        data: DataPath,
    ) -> Arc<Self> {
        Self::with_protocol(settings, intentions, watch::channel(Arc::default()).1, data)
    }

    /// The inbound path of `settings`, for the service's live `protocol`.
    pub(crate) fn with_protocol(
        settings: &InboundSettings,
        intentions: watch::Receiver<Arc<IntentionSet>>,
        protocol: watch::Receiver<Arc<Protocol>>,
        data: DataPath,
    ) -> Arc<Self> {
        let app = settings.app();
        Arc::new(Inbound {
            app,
            app_label: app.map_or_else(|| "-".to_string(), |a| a.to_string()),
            intentions,
            protocol,
            access_log: settings.http_access_log,
            close_denied: settings.close_denied_connections,
            data,
        })
    }

    /// Accepts on `listener` until `stop_accepting` fires (then the listener is closed, so new
    /// connections are refused); connections are spawned on `tasks`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop_accepting: CancellationToken,
        tasks: TaskTracker,
    ) {
        connections::tune(&listener);
        listener::serve(
            listener,
            "inbound",
            &stop_accepting,
            &tasks,
            |stream, client| {
                let slot = self.data.slot(Direction::Inbound, client)?;
                let this = self.clone();
                let (tasks, draining) = (tasks.clone(), stop_accepting.clone());
                let span =
                    tracing::info_span!("conn", direction = "inbound", client.addr = %client);
                Some(
                    async move {
                        this.handle(stream, client, tasks, draining).await;
                        drop(slot);
                    }
                    .instrument(span),
                )
            },
        )
        .await;
    }

    /// One connection. `draining` is the listener's stop: an HTTP connection then shuts down
    /// gracefully.
    async fn handle(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        tasks: TaskTracker,
        draining: CancellationToken,
    ) {
        let mut conn = self.data.track(Direction::Inbound, client);
        // Boxed, as the tunnel is below: the handshake needs far more state than the copy of a
        // plain connection, and a task keeps its largest state for the connection's life (an
        // idle connection costs that much).
        let accepted = match Box::pin(self.accept(stream, &mut conn)).await {
            Ok(accepted) => accepted,
            Err(end) => return conn.end(end),
        };
        match accepted {
            Accepted::Caller(stream, peer) => {
                self.serve_caller(stream, peer, conn, tasks, draining).await
            }
            Accepted::Tunnel(stream, peer, tls) => {
                let stopper = Stopper::new();
                conn.set_registered(self.data.connections.insert(
                    Direction::Inbound,
                    None,
                    stopper.clone(),
                ));
                let transfer = Box::pin(tunnel::serve(
                    self.clone(),
                    stream,
                    peer,
                    tls,
                    client,
                    tasks,
                    draining,
                    &stopper,
                ))
                .await;
                conn.finish(transfer);
            }
        }
    }

    /// A connection up to its verified caller: waits for the first byte, makes the mTLS
    /// handshake and reads the caller's identity; how it ended otherwise.
    async fn accept(&self, stream: TcpStream, conn: &mut Tracked) -> Result<Accepted, End> {
        let limits = &self.data.limits;
        let metrics = &self.data.metrics;
        let client = conn.client();
        let first_byte = first_byte(&stream, limits.handshake_timeout).await;
        if first_byte == FirstByte::None {
            // Counted as a probe and closed with end="probe"; no failure, no access log line.
            metrics.probed();
            tracing::debug!(client.addr = %client, "probe: closed before sending a byte");
            return Err(End::Probe);
        }
        conn.set_target(self.app_label.clone());
        connections::tune_accepted(&stream);

        if first_byte == FirstByte::TimedOut {
            metrics.handshake_failed(Direction::Inbound, "timeout");
            return Err(End::HandshakeTimeout);
        }
        let tls = self.data.tls.borrow().clone();
        let remaining = limits.handshake_timeout.saturating_sub(conn.age());
        let handshake = tokio::time::timeout(remaining, async {
            if !self.data.tunnel.enabled {
                return TlsAcceptor::from(tls.server.clone()).accept(stream).await;
            }
            // The tunnel's ALPN protocol is selected only for a caller that offers it: any
            // other caller sees the same handshake as without --tunnel.
            let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
            let config = if tunnel::offered(&start.client_hello()) {
                tls.tunnel_server.clone()
            } else {
                tls.server.clone()
            };
            start.into_stream(config).await
        })
        .await;
        let mut stream = match handshake {
            Ok(Ok(s)) => {
                let resumed =
                    s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                metrics.handshake_done(Direction::Inbound, resumed);
                // Boxed: it moves on to the task's serving state, which should stay small.
                Box::new(s)
            }
            Ok(Err(e)) => {
                let reason = connections::handshake_reason(&e);
                metrics.handshake_failed(Direction::Inbound, reason);
                tracing::debug!(client.addr = %client, error = %e, reason, "inbound handshake failed");
                return Err(End::HandshakeFailed);
            }
            Err(_) => {
                metrics.handshake_failed(Direction::Inbound, "timeout");
                return Err(End::HandshakeTimeout);
            }
        };

        let peer = match tandem_certs::tls::peer_service_id(stream.get_ref().1.peer_certificates())
        {
            Ok(p) => p,
            Err(e) => {
                metrics.handshake_failed(Direction::Inbound, "bad_identity");
                tracing::debug!(client.addr = %client, error = %e, "inbound peer has no service identity");
                close(&mut stream).await;
                return Err(End::BadIdentity);
            }
        };
        conn.set_peer(peer.clone());
        if tunnel::negotiated(stream.get_ref().1) {
            let Some(tunnel_peer) = tunnel::Peer::of(stream.get_ref().1) else {
                return Err(End::BadIdentity);
            };
            return Ok(Accepted::Tunnel(stream, tunnel_peer, tls));
        }
        Ok(Accepted::Caller(stream, peer))
    }

    /// Whether the live intentions deny `peer` at L4 (for a `tcp` service; an HTTP service
    /// decides each request instead, so this is false for one).
    pub(crate) fn denies(&self, peer: &ServiceId) -> bool {
        !self.protocol.borrow().is_http()
            && !self
                .intentions
                .borrow()
                .authorize(&connections::source(peer))
                .is_allowed()
    }

    /// An authenticated caller's connection (a plain one, or a stream of a tunnel): decided
    /// against the intentions (`tcp`) or served request by request (HTTP), then carried to the
    /// app.
    pub(crate) async fn serve_caller<S>(
        self: Arc<Self>,
        mut stream: S,
        peer: ServiceId,
        mut conn: Tracked,
        tasks: TaskTracker,
        draining: CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = &self.data.limits;
        let metrics = &self.data.metrics;
        let client = conn.client();
        conn.set_target(self.app_label.clone());
        conn.set_peer(peer.clone());
        let stopper = Stopper::new();
        let protocol = **self.protocol.borrow();
        if protocol.is_http() {
            // Every request is decided on its own; the connection is only registered (so a
            // drain or shutdown can end it).
            let Some(app) = self.app else {
                tracing::info!(client.addr = %client, peer.id = %peer, "connection refused: this pod serves no port (no --service-port)");
                close(&mut stream).await;
                return conn.end(End::NoServicePort);
            };
            conn.set_registered(self.data.connections.insert(
                Direction::Inbound,
                None,
                stopper.clone(),
            ));
            let idle = limits.idle_timeout;
            let requests = Arc::new(Requests::new(self.clone(), peer, protocol, app, tasks));
            let served = Box::pin(requests.serve(stream, idle, &stopper, &draining)).await;
            return conn.finish(served);
        }
        let (registered, decision) = self
            .data
            .connections
            .admit(&peer, &self.intentions, &stopper);
        metrics.authorized(decision.is_allowed());
        if !decision.is_allowed() {
            tracing::info!(client.addr = %client, peer.id = %peer, reason = %decision.reason, "connection denied by intentions");
            drop(registered);
            close(&mut stream).await;
            return conn.end(End::Denied);
        }
        conn.set_registered(registered);

        let Some(app_addr) = self.app else {
            tracing::info!(client.addr = %client, peer.id = %peer, "connection refused: this pod serves no port (no --service-port)");
            close(&mut stream).await;
            return conn.end(End::NoServicePort);
        };
        let app = match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(app_addr))
            .await
        {
            Ok(Ok(app)) => app,
            Ok(Err(e)) => {
                tracing::warn!(app.addr = %app_addr, error = %e, "cannot connect to the local app");
                close(&mut stream).await;
                return conn.end(End::AppUnreachable);
            }
            Err(_) => {
                tracing::warn!(app.addr = %app_addr, "connecting to the local app timed out");
                close(&mut stream).await;
                return conn.end(End::AppConnectTimeout);
            }
        };
        connections::tune(&app);
        conn.finish(copy::bidirectional(stream, app, limits.idle_timeout, &stopper).await);
    }
}

/// A connection whose caller is verified.
enum Accepted {
    /// A caller's own connection, and who it is.
    Caller(Box<TlsStream<TcpStream>>, ServiceId),
    /// A tunnel from a peer, and the credentials its handshake used.
    Tunnel(Box<TlsStream<TcpStream>>, tunnel::Peer, Arc<TlsState>),
}

/// Waits (up to `timeout`) for the caller's first byte without consuming it. A health probe,
/// such as Consul's TCP check, connects and closes without sending one: not a connection, and
/// not a failed handshake.
async fn first_byte(stream: &TcpStream, timeout: Duration) -> FirstByte {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
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
pub(crate) async fn enforce(
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
            let decision = set.authorize(&connections::source(&peer));
            if !decision.is_allowed() {
                tracing::info!(peer.id = %peer, reason = %decision.reason, "closing an open connection a changed intention denies");
                metrics.revoked();
                stopper.stop(End::Revoked);
            }
        }
    }
}

/// Ends a TLS connection without sending data (close_notify, then FIN).
async fn close<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::testing;
    use crate::intentions::Action;

    /// Every open connection keeps its task's state for as long as it lives, so that state is
    /// what an idle connection costs: the rarely taken branches (the tunnel, HTTP) must not
    /// make it larger (they are boxed when taken).
    #[tokio::test]
    async fn an_inbound_connection_task_stays_small() {
        let settings = InboundSettings {
            listener: "127.0.0.1:0".parse().unwrap(),
            service_port: Some(9),
            service_address: [127, 0, 0, 1].into(),
            close_denied_connections: true,
            default_intention_policy: None,
            http_access_log: false,
        };
        let (_tx, intentions) = watch::channel(Arc::new(IntentionSet::new(vec![], Action::Allow)));
        let inbound = Inbound::new(&settings, intentions, testing::data_path("static-server"));
        let (_client, accepted, addr) = testing::tcp_pair().await;
        let (tasks, draining) = (TaskTracker::new(), CancellationToken::new());
        let task = inbound
            .clone()
            .handle(accepted, addr, tasks.clone(), draining.clone());
        // A tunnel's stream, whose task is mostly this (never called: only its type is read).
        let (_client, _accepted, addr) = testing::tcp_pair().await;
        let caller = future_size(|stream: crate::tunnel::StreamIo| {
            inbound.clone().serve_caller(
                stream,
                "spiffe://test/ns/default/dc/dc1/svc/static-client"
                    .parse()
                    .unwrap(),
                inbound.data.track(Direction::Inbound, addr),
                tasks,
                draining,
            )
        });
        let task = std::mem::size_of_val(&task);
        assert!(
            task <= testing::TASK_STATE_LIMIT && caller <= testing::TASK_STATE_LIMIT,
            "an inbound connection's task keeps {task} bytes, a tunnel stream's caller {caller}"
        );
    }

    /// The size of the future `make` would return.
    fn future_size<A, F>(_make: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
}
