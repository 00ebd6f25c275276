//! What every proxied connection shares and goes through: the [`DataPath`] (credentials,
//! metrics, the connection limit, the registry), the registry of open connections (so a changed
//! intention, a drain deadline or a shutdown can end them), the admission of an inbound caller
//! (registered, then decided once), socket options, and the [`Tracked`] guard that counts a
//! connection and writes its one access-log line when it is dropped, however it ended.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_certs::spiffe::ServiceId;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Limits, TunnelSettings};
use crate::copy::{Stopper, Transfer};
use crate::identity::TlsState;
use crate::intentions::{Decision, IntentionSet, Source};
use crate::metrics::{Direction, Metrics};
use crate::tunnel::Pool;

/// What the inbound and outbound paths share; cheap to clone.
#[derive(Debug, Clone)]
pub struct DataPath {
    /// The current credentials, taken once per connection.
    pub tls: watch::Receiver<Arc<TlsState>>,
    /// Where every connection is counted.
    pub metrics: Arc<Metrics>,
    /// `--max-connections`, both directions together.
    pub limiter: Arc<Semaphore>,
    /// The registry of open connections.
    pub connections: Arc<Connections>,
    /// Timeouts.
    pub limits: Limits,
    /// `--tunnel` and its limits.
    pub tunnel: TunnelSettings,
    /// The open outbound tunnels, per upstream instance.
    pub(crate) tunnels: Arc<Pool>,
}

impl DataPath {
    /// Credentials, metrics and limits with an empty registry and a limiter of
    /// `limits.max_connections`.
    pub fn new(tls: watch::Receiver<Arc<TlsState>>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        DataPath {
            tls,
            metrics,
            limiter: Arc::new(Semaphore::new(limits.max_connections as usize)),
            connections: Arc::new(Connections::default()),
            limits,
            tunnel: TunnelSettings::OFF,
            tunnels: Arc::new(Pool::default()),
        }
    }

    /// The same, with tunnels as `tunnel` says (off unless `tunnel.enabled`): outbound
    /// tunnels run on `tasks` and all close when `stop` fires.
    pub fn with_tunnel(
        mut self,
        tunnel: TunnelSettings,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        self.tunnel = tunnel;
        self.tunnels = Arc::new(Pool::new(tunnel, tasks, stop));
        self
    }

    /// A slot for one more connection from `client`, or `None` (counted and logged) when
    /// `--max-connections` are open.
    pub(crate) fn slot(
        &self,
        direction: Direction,
        client: SocketAddr,
    ) -> Option<OwnedSemaphorePermit> {
        match self.limiter.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.metrics.refused(direction, "max_connections");
                tracing::warn!(client.addr = %client, direction = direction.as_str(),
                    "connection refused: --max-connections reached");
                None
            }
        }
    }

    /// Starts tracking a connection just accepted from `client`.
    pub(crate) fn track(&self, direction: Direction, client: SocketAddr) -> Tracked {
        self.metrics.connection_opened(direction);
        Tracked {
            direction,
            client,
            started: Instant::now(),
            peer: None,
            upstream: None,
            target: None,
            transfer: Transfer::empty(End::Stopped),
            metrics: self.metrics.clone(),
            registered: None,
        }
    }
}

/// Why a connection ended: the `end` of its access-log line and of
/// `tandem_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides finished.
    Completed,
    /// No traffic either way for `--idle-timeout`.
    IdleTimeout,
    /// The initiator's side failed.
    DownstreamError,
    /// The other side failed.
    UpstreamError,
    /// A changed intention denies the caller (`--close-denied-connections`).
    Revoked,
    /// The proxy shut down.
    Shutdown,
    /// The drain deadline passed with the connection still open.
    DrainDeadline,
    /// Ended from outside for no recorded reason (a task stopped with the proxy).
    Stopped,
    /// An inbound TCP connection that closed before sending a byte (a health probe).
    Probe,
    /// No finished mTLS handshake within `--handshake-timeout`.
    HandshakeTimeout,
    /// The mTLS handshake failed.
    HandshakeFailed,
    /// The caller's certificate names no mesh service.
    BadIdentity,
    /// Intentions deny the caller.
    Denied,
    /// This pod serves no port (no `--service-port`).
    NoServicePort,
    /// The local app refused or failed the connect.
    AppUnreachable,
    /// The connect to the local app timed out.
    AppConnectTimeout,
    /// No instance of the upstream accepted the connection.
    NoInstanceReachable,
    /// A tunnel ended (the app connections it carried are counted each on their own).
    Tunnel,
}

impl End {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Completed => "completed",
            End::IdleTimeout => "idle_timeout",
            End::DownstreamError => "downstream_error",
            End::UpstreamError => "upstream_error",
            End::Revoked => "revoked",
            End::Shutdown => "shutdown",
            End::DrainDeadline => "drain_deadline",
            End::Stopped => "stopped",
            End::Probe => "probe",
            End::HandshakeTimeout => "handshake_timeout",
            End::HandshakeFailed => "handshake_failed",
            End::BadIdentity => "bad_identity",
            End::Denied => "denied",
            End::NoServicePort => "no_service_port",
            End::AppUnreachable => "app_unreachable",
            End::AppConnectTimeout => "app_connect_timeout",
            End::NoInstanceReachable => "no_instance_reachable",
            End::Tunnel => "tunnel",
        }
    }
}

/// TCP keepalive idle time on every proxied socket.
const KEEPALIVE: Duration = Duration::from_secs(30);

struct Entry {
    direction: Direction,
    peer: Option<ServiceId>,
    stopper: Stopper,
}

/// Every open proxied connection, inbound and outbound.
#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    emptied: Notify,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.len())
            .finish()
    }
}

impl Connections {
    /// Registers an inbound connection from `peer`, then decides it once against the current
    /// intentions: registering first means an intention change that comes after the decision
    /// finds the connection in the registry (and closes it if it denies the caller). Denied,
    /// the connection leaves the registry when the returned decision's guard drops.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: &ServiceId,
        intentions: &watch::Receiver<Arc<IntentionSet>>,
        stopper: &Stopper,
    ) -> (Registered, Decision) {
        let registered = self.insert(Direction::Inbound, Some(peer.clone()), stopper.clone());
        let decision = intentions.borrow().authorize(&source(peer));
        (registered, decision)
    }

    /// Adds a connection; it leaves the registry when the returned guard is dropped.
    pub(crate) fn insert(
        self: &Arc<Self>,
        direction: Direction,
        peer: Option<ServiceId>,
        stopper: Stopper,
    ) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                direction,
                peer,
                stopper,
            },
        );
        Registered {
            id,
            registry: self.clone(),
        }
    }

    /// The number of open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every open connection with `reason`.
    pub fn stop_all(&self, reason: End) -> usize {
        let open = self.lock();
        for entry in open.values() {
            entry.stopper.stop(reason);
        }
        open.len()
    }

    /// The callers of every open inbound connection.
    pub(crate) fn inbound_peers(&self) -> Vec<(ServiceId, Stopper)> {
        self.lock()
            .values()
            .filter(|e| e.direction == Direction::Inbound && !e.stopper.is_stopped())
            .filter_map(|e| e.peer.clone().map(|p| (p, e.stopper.clone())))
            .collect()
    }

    /// Resolves once no connection is open.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open
            .lock()
            .expect("connection registry lock is never poisoned: no panics while held")
    }
}

/// The intentions' view of a caller.
pub(crate) fn source(peer: &ServiceId) -> Source<'_> {
    Source {
        partition: peer.partition.as_deref(),
        namespace: &peer.namespace,
        service: &peer.service,
    }
}

/// Removes its connection from the registry when dropped.
pub(crate) struct Registered {
    id: u64,
    registry: Arc<Connections>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let empty = {
            let mut open = self.registry.lock();
            open.remove(&self.id);
            open.is_empty()
        };
        if empty {
            self.registry.emptied.notify_waiters();
        }
    }
}

/// `TCP_NODELAY` and keepalives on a proxied socket, or on a listener of them. Failures only
/// cost performance.
pub(crate) fn tune(socket: &impl AsFd) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_tcp_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
}

/// [`tune`] for a socket accepted from a listener that was tuned: nothing on Linux, which
/// copies the listener's options into each socket it accepts (4 system calls fewer per
/// connection).
pub(crate) fn tune_accepted(stream: &TcpStream) {
    if !cfg!(target_os = "linux") {
        tune(stream);
    }
}

/// Why a TLS handshake failed, as a bounded metric label.
pub(crate) fn handshake_reason(error: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match error.kind() {
            io::ErrorKind::TimedOut => "timeout",
            io::ErrorKind::UnexpectedEof => "peer_closed",
            _ => "io",
        };
    };
    match tls {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_issuer",
            CertificateError::Other(other) => match other
                .0
                .downcast_ref::<tandem_certs::tls::TlsError>()
            {
                Some(tandem_certs::tls::TlsError::UnexpectedService { .. }) => "wrong_service",
                Some(tandem_certs::tls::TlsError::WrongTrustDomain { .. }) => "wrong_trust_domain",
                Some(_) => "bad_identity",
                None => "bad_certificate",
            },
            _ => "bad_certificate",
        },
        Error::AlertReceived(_) => "peer_alert",
        _ => "protocol",
    }
}

/// One connection from accept to close. Dropped, however the connection ended (a task stopped
/// with the proxy included), it leaves the registry, is counted in
/// `tandem_connections_closed_total` and writes its one access-log line (a probe writes none).
pub(crate) struct Tracked {
    direction: Direction,
    client: SocketAddr,
    started: Instant,
    peer: Option<ServiceId>,
    upstream: Option<Arc<str>>,
    target: Option<String>,
    transfer: Transfer,
    metrics: Arc<Metrics>,
    registered: Option<Registered>,
}

impl Tracked {
    /// Who connected (for a stream of a tunnel: the tunnel's caller).
    pub(crate) fn client(&self) -> SocketAddr {
        self.client
    }

    /// How long ago the connection was accepted.
    pub(crate) fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// The caller's (inbound) or the server's (outbound) verified identity.
    pub(crate) fn set_peer(&mut self, peer: ServiceId) {
        self.peer = Some(peer);
    }

    /// The upstream an outbound connection is for.
    pub(crate) fn set_upstream(&mut self, upstream: Arc<str>) {
        self.upstream = Some(upstream);
    }

    /// Where the connection goes: the app or an upstream instance.
    pub(crate) fn set_target(&mut self, target: String) {
        self.target = Some(target);
    }

    /// Keeps the connection in the registry for as long as it is tracked.
    pub(crate) fn set_registered(&mut self, registered: Registered) {
        self.registered = Some(registered);
    }

    /// Ends the connection before any byte was copied.
    pub(crate) fn end(mut self, end: End) {
        self.transfer = Transfer::empty(end);
    }

    /// Ends the connection with what the copy did.
    pub(crate) fn finish(mut self, transfer: Transfer) {
        self.transfer = transfer;
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.registered.take();
        let t = &self.transfer;
        let end = t.end.as_str();
        self.metrics
            .connection_closed(self.direction, end, t.received, t.sent);
        if t.end == End::Probe {
            return;
        }
        let peer = self.peer.as_ref().map(|p| p.to_string());
        tracing::info!(
            target: "tandem_proxy::access",
            direction = self.direction.as_str(),
            client.addr = %self.client,
            peer.id = peer.as_deref().unwrap_or("-"),
            upstream.service = self.upstream.as_deref().unwrap_or("-"),
            upstream.addr = self.target.as_deref().unwrap_or("-"),
            bytes.received = t.received,
            bytes.sent = t.sent,
            duration.ms = self.started.elapsed().as_millis() as u64,
            end,
            "connection closed"
        );
    }
}

/// What unit tests of the data path build on.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The most a connection's task may keep while it copies (test build). It was 11-12 KiB
    /// on either side before the handshake, dialing, the tunnel and HTTP were boxed, and
    /// 2-3 KiB after.
    pub(crate) const TASK_STATE_LIMIT: usize = 4096;

    /// A data path with `service`'s credentials from a fresh test PKI and 100 connections at
    /// most.
    pub(crate) fn data_path(service: &str) -> DataPath {
        use tandem_certs::testing::{TestIdentity, TestPki};
        let pki = TestPki::new();
        let state = TlsState::new(pki.tls_identity(TestIdentity::Valid, service), pki.roots())
            .expect("a test identity makes credentials");
        let (_tx, tls) = watch::channel(Arc::new(state));
        let limits = Limits {
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: None,
            max_connections: 100,
        };
        DataPath::new(tls, Arc::new(Metrics::new()), limits)
    }

    /// Both ends of a loopback TCP connection: (the connecting one, the accepted one).
    pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (accepted, peer) = accepted.unwrap();
        (client.unwrap(), accepted, peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `tune_accepted` relies on: a socket accepted from a tuned listener has its options.
    #[tokio::test]
    async fn an_accepted_socket_has_the_tuned_options() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tune(&listener);
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (accepted, _) = accepted.unwrap();
        tune_accepted(&accepted);
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap(), "TCP_NODELAY");
        assert!(socket.keepalive().unwrap(), "SO_KEEPALIVE");
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE);
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
    }
}
