//! The registry of open connections (so a changed intention, a drain deadline or a shutdown can
//! end them), socket options, and the one access-log line each connection gets when it ends.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_certs::spiffe::ServiceId;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::copy::{Stopper, Transfer};
use crate::metrics::Direction;

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
    /// Adds a connection; it leaves the registry when the returned guard is dropped.
    pub fn insert(
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

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every open connection with `reason`.
    pub fn stop_all(&self, reason: &'static str) -> usize {
        let open = self.lock();
        for entry in open.values() {
            entry.stopper.stop(reason);
        }
        open.len()
    }

    /// The callers of every open inbound connection.
    pub fn inbound_peers(&self) -> Vec<(ServiceId, Stopper)> {
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

/// Removes its connection from the registry when dropped.
pub struct Registered {
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

/// `TCP_NODELAY` and keepalives on a proxied socket. Failures only cost performance.
pub fn tune(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
}

/// Why a TLS handshake failed, as a bounded metric label.
pub fn handshake_reason(error: &io::Error) -> &'static str {
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

/// What the access log says about one connection.
pub struct AccessLog<'a> {
    pub direction: Direction,
    pub client: SocketAddr,
    pub peer: Option<&'a ServiceId>,
    pub upstream: Option<&'a str>,
    pub target: Option<&'a str>,
    pub started: Instant,
}

impl AccessLog<'_> {
    /// The one line per connection, when it ends.
    pub fn emit(&self, transfer: &Transfer) {
        let peer = self.peer.map(|p| p.to_string());
        tracing::info!(
            target: "tandem_proxy::access",
            direction = self.direction.as_str(),
            client.addr = %self.client,
            peer.id = peer.as_deref().unwrap_or("-"),
            upstream.service = self.upstream.unwrap_or("-"),
            upstream.addr = self.target.unwrap_or("-"),
            bytes.received = transfer.received,
            bytes.sent = transfer.sent,
            duration.ms = self.started.elapsed().as_millis() as u64,
            end = transfer.end,
            "connection closed"
        );
    }
}
