//! The opt-in tunnel between two Tandem proxies (`--tunnel`): one long-lived mTLS connection
//! per upstream instance carries many app connections, each an HTTP/2 `CONNECT` stream with its
//! own flow control (as ztunnel's HBONE does). A new app connection then costs a stream, not a
//! TLS handshake with two signatures and two chain verifications.
//!
//! It stays wire-compatible with the rest of the Consul mesh. The tunnel is offered only to an
//! instance whose sidecar registration advertises it ([`META_KEY`]), and used only when the
//! ordinary Connect mTLS handshake selects its ALPN protocol ([`PROTOCOL`]). The public listener
//! selects that protocol only for a caller that offers it. Anyone else (Envoy, `consul connect
//! proxy`, a Tandem without `--tunnel`) gets one mTLS connection per app connection, as before.
//!
//! A stream is authorized by the tunnel's verified peer identity, exactly as a plain connection
//! from that peer is: it is the same inbound path ([`Inbound::serve_caller`]), so it is counted,
//! logged, limited by `--max-connections` and closed by a changed intention like one. Once a
//! changed intention denies the peer and no stream is left, the tunnel closes. When our
//! credentials rotate, the client opens new tunnels with the new leaf and lets the old ones
//! drain; the server sends `GOAWAY` on tunnels established with its old leaf.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::server::SendResponse;
use h2::{Ping, PingPong, RecvStream};
use http::{Method, Request, Response, StatusCode};
use tandem_certs::spiffe::ServiceId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::Instrument;

use crate::config::TunnelSettings;
use crate::connections::End;
use crate::copy::{Stopper, Transfer};
use crate::discovery::Endpoint;
use crate::identity::TlsState;
use crate::inbound::Inbound;
use crate::metrics::{Direction, Metrics};

mod io;
use io::Received;
pub(crate) use io::StreamIo;

/// The ALPN protocol of the tunnel.
pub(crate) const PROTOCOL: &str = "tandem-tunnel/1";

/// The sidecar registration's meta key that advertises the tunnel (its value lists
/// [`PROTOCOL`]).
pub(crate) const META_KEY: &str = "tandem-tunnel";

/// The meta key with the streams one tunnel to the instance may carry at once (its
/// `--tunnel-max-streams`): a client opens no more on one tunnel, so none waits for a slot.
pub(crate) const META_STREAMS_KEY: &str = "tandem-tunnel-max-streams";

/// The streams a client assumes when the instance does not say (HTTP/2's recommended minimum
/// for SETTINGS_MAX_CONCURRENT_STREAMS).
const ASSUMED_MAX_STREAMS: u32 = 100;

/// How long an instance that advertised the tunnel but did not select it in a handshake is
/// dialed without offering it.
const DECLINED_FOR: Duration = Duration::from_secs(60);

/// How long after a failed attempt to establish a tunnel the instance is dialed plainly: the
/// connections meanwhile each try on their own (at once) instead of queueing for the next
/// attempt.
const FAILED_FOR: Duration = Duration::from_secs(5);

/// HTTP/2 pings on a tunnel that received nothing for this long, so a peer that vanished is
/// noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the tunnel is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client tunnel that closes, idle, is given to write out what its last streams
/// queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The flow-control windows of both ends of a tunnel, and their send buffers.
///
/// A stream may have [`STREAM_WINDOW`] in flight towards an end before its app connection
/// reads it: enough to keep one bulk transfer going. The whole tunnel may have
/// [`CONNECTION_WINDOW`], many times that: a stream whose app stopped reading holds its window's
/// worth of the tunnel's, and with the two equal (hyper's server defaults, used before) one
/// such stream stopped every other stream of its tunnel. What is buffered is what the peer
/// sent; nothing is allocated up front.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
/// What one stream may queue for sending before its writer waits.
const SEND_BUFFER: usize = 512 << 10;
/// The largest DATA frame either end accepts: one read of the copy's largest (64 KiB) goes
/// out as one frame, not four of HTTP/2's default 16 KiB.
const MAX_FRAME: u32 = 64 << 10;

/// The largest header block either end accepts (a `CONNECT` carries a few dozen bytes; h2's
/// own default would be 16 MiB).
const MAX_HEADER_LIST: u32 = 16 << 10;

/// The streams per tunnel an instance accepts, if its meta advertises the tunnel.
pub(crate) fn advertised(meta: &BTreeMap<String, String>) -> Option<u32> {
    let protocols = meta.get(META_KEY)?;
    if !protocols.split(',').any(|p| p.trim() == PROTOCOL) {
        return None;
    }
    let streams = meta
        .get(META_STREAMS_KEY)
        .and_then(|n| n.trim().parse::<u32>().ok())
        .filter(|n| *n > 0);
    Some(streams.unwrap_or(ASSUMED_MAX_STREAMS))
}

/// Whether the handshake of `conn` selected the tunnel.
pub(crate) fn negotiated(conn: &rustls::CommonState) -> bool {
    conn.alpn_protocol() == Some(PROTOCOL.as_bytes())
}

/// Whether a ClientHello offers the tunnel.
pub(crate) fn offered(hello: &rustls::server::ClientHello<'_>) -> bool {
    hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == PROTOCOL.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// The client side: a pool of tunnels per upstream instance.

/// The open outbound tunnels, per upstream instance and expected identity.
pub(crate) struct Pool {
    settings: TunnelSettings,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    /// Where the tunnels' connection tasks run.
    tasks: TaskTracker,
    /// Closes every tunnel (the proxy stops).
    stop: CancellationToken,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(
            TunnelSettings::OFF,
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("instances", &self.lock().len())
            .finish_non_exhaustive()
    }
}

/// The tunnels to one instance.
#[derive(Default)]
struct Instance {
    /// Held while a tunnel to the instance is established, so that connections arriving
    /// meanwhile wait for it instead of each opening one.
    dialing: Arc<tokio::sync::Mutex<()>>,
    tunnels: Mutex<Vec<Arc<Tunnel>>>,
    /// Until when the instance is dialed without the tunnel: it declined the protocol, or
    /// establishing a tunnel failed.
    plain_until: Mutex<Option<Instant>>,
}

/// One outbound tunnel.
struct Tunnel {
    sender: SendRequest<Bytes>,
    /// The credentials it was established with: after a rotation it takes no new stream.
    credentials: Arc<TlsState>,
    /// The server's verified identity.
    peer: ServiceId,
    streams: AtomicUsize,
    /// No new stream (rotated, refused one, closing or closed); it closes once its streams
    /// end.
    retired: AtomicBool,
    /// Signalled when a stream ends.
    stream_ended: Notify,
    /// What its streams received.
    received: Received,
}

/// What [`Pool::reserve`] found.
pub(crate) enum Reserved {
    /// A stream slot on an open tunnel.
    Stream(Slot),
    /// No usable tunnel: the caller dials one and hands it to [`Dialing::establish`].
    Dial(Dialing),
    /// Every tunnel the instance may have is full.
    Full,
    /// The instance declined the tunnel, or establishing one failed, recently (or the turn to
    /// establish one did not come within the connect timeout): dial it plainly.
    Plain,
}

/// A reserved stream on a tunnel, not opened yet.
pub(crate) struct Slot {
    tunnel: Arc<Tunnel>,
    guard: StreamGuard,
}

/// The right to establish the instance's next tunnel (others wait meanwhile), with the
/// credentials to establish it with (the current ones once the turn came).
pub(crate) struct Dialing {
    instance: Arc<Instance>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    /// Present these.
    pub(crate) credentials: Arc<TlsState>,
}

/// An app connection's stream of a tunnel: read and write it as the connection.
pub(crate) struct Stream {
    /// The stream's bytes.
    pub(crate) io: StreamIo,
    /// The server's verified identity.
    pub(crate) peer: ServiceId,
    /// Counts the stream on its tunnel until dropped.
    pub(crate) guard: StreamGuard,
}

/// Counts one stream on its tunnel while it lives.
pub(crate) struct StreamGuard {
    tunnel: Arc<Tunnel>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.tunnel.streams.fetch_sub(1, Ordering::AcqRel);
        self.tunnel.stream_ended.notify_waiters();
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenError {
    /// The upstream-failure metric label.
    pub(crate) reason: &'static str,
    /// The tunnel is retired: reserving again finds or dials another one.
    pub(crate) retry: bool,
}

impl OpenError {
    fn on_tunnel(reason: &'static str) -> Self {
        OpenError {
            reason,
            retry: false,
        }
    }

    fn retired(reason: &'static str) -> Self {
        OpenError {
            reason,
            retry: true,
        }
    }
}

impl Pool {
    /// A pool that keeps tunnels as `settings` says, running them on `tasks` until `stop`.
    pub(crate) fn new(
        settings: TunnelSettings,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        Pool {
            settings,
            instances: Mutex::new(HashMap::new()),
            tasks,
            stop,
        }
    }

    /// A stream slot to `endpoint` (expected to present `expected`) on a tunnel of the current
    /// credentials (`tls`), or the turn to establish one, or why to dial plainly. Tunnels of
    /// older credentials are retired here. Waits at most `wait` for another connection's
    /// attempt to establish one.
    pub(crate) async fn reserve(
        &self,
        endpoint: &Endpoint,
        expected: &ServiceId,
        tls: &watch::Receiver<Arc<TlsState>>,
        wait: Duration,
    ) -> Reserved {
        let instance = {
            let key = format!("{expected}@{}", endpoint.address());
            self.lock().entry(key).or_default().clone()
        };
        let max = self
            .settings
            .max_streams
            .min(endpoint.tunnel.unwrap_or(ASSUMED_MAX_STREAMS));
        if let Some(slot) = instance.take_slot(&tls.borrow().clone(), max) {
            return Reserved::Stream(slot);
        }
        if instance.plain_now() {
            return Reserved::Plain;
        }
        let Ok(turn) = tokio::time::timeout(wait, instance.dialing.clone().lock_owned()).await
        else {
            return Reserved::Plain;
        };
        // Another connection may have established one while this one waited, or the
        // credentials rotated: read them again.
        let current = tls.borrow().clone();
        if let Some(slot) = instance.take_slot(&current, max) {
            return Reserved::Stream(slot);
        }
        if instance.plain_now() {
            return Reserved::Plain;
        }
        if instance.live(&current) >= self.settings.per_instance as usize {
            return Reserved::Full;
        }
        Reserved::Dial(Dialing {
            instance,
            _turn: turn,
            credentials: current,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Instance>>> {
        self.instances
            .lock()
            .expect("tunnel pool lock is never poisoned")
    }

    /// Forgets instances with no tunnel left and nothing to remember (an instance that went
    /// away).
    fn prune(&self) {
        self.lock().retain(|_, i| {
            Arc::strong_count(i) > 1
                || !i.lock().is_empty()
                || i.dialing.try_lock().is_err()
                || i.plain_now()
        });
    }
}

impl Instance {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Tunnel>>> {
        self.tunnels
            .lock()
            .expect("tunnel list lock is never poisoned")
    }

    /// A slot on the open tunnel of `current` carrying the fewest streams, if one is below
    /// `max`. Tunnels of other credentials, and those that open no stream any more (retired,
    /// told `GOAWAY`, closed), leave the list.
    fn take_slot(&self, current: &Arc<TlsState>, max: u32) -> Option<Slot> {
        let mut tunnels = self.lock();
        tunnels.retain(|t| {
            let keep = Arc::ptr_eq(&t.credentials, current) && t.opens_streams();
            if !keep {
                t.retire();
            }
            keep
        });
        let tunnel = tunnels
            .iter()
            .filter(|t| t.streams.load(Ordering::Acquire) < max as usize)
            .min_by_key(|t| t.streams.load(Ordering::Acquire))?
            .clone();
        tunnel.streams.fetch_add(1, Ordering::AcqRel);
        Some(Slot {
            guard: StreamGuard {
                tunnel: tunnel.clone(),
            },
            tunnel,
        })
    }

    fn plain_now(&self) -> bool {
        self.plain_until
            .lock()
            .expect("tunnel plain-until lock is never poisoned")
            .is_some_and(|until| Instant::now() < until)
    }

    fn plain_for(&self, period: Duration) {
        *self
            .plain_until
            .lock()
            .expect("tunnel plain-until lock is never poisoned") = Some(Instant::now() + period);
    }

    fn live(&self, current: &Arc<TlsState>) -> usize {
        self.lock()
            .iter()
            .filter(|t| Arc::ptr_eq(&t.credentials, current))
            .count()
    }

    /// Takes `tunnel` off the list if it carries no stream; whether it did.
    fn remove_if_unused(&self, tunnel: &Arc<Tunnel>) -> bool {
        let mut tunnels = self.lock();
        if tunnel.streams.load(Ordering::Acquire) != 0 {
            return false;
        }
        tunnels.retain(|t| !Arc::ptr_eq(t, tunnel));
        tunnel.retire();
        true
    }
}

impl Tunnel {
    /// Whether a new stream may be opened on it: it is not retired, and its connection has
    /// neither received a `GOAWAY` nor ended. Without the second check, a tunnel the server
    /// had told `GOAWAY` (its leaf rotated, it drains) was found unusable only by a stream
    /// refused on it, and with `--tunnels-per-instance` above 1 an app connection could be
    /// refused on each of its two tries and fail with a new tunnel never dialed.
    fn opens_streams(&self) -> bool {
        if self.retired.load(Ordering::Acquire) {
            return false;
        }
        // With no stream of its own waiting to open, a sender is ready at once, or failed:
        // h2 answers from what its connection has received so far, without waiting.
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.sender.clone().poll_ready(&mut cx), Poll::Ready(Ok(())))
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.stream_ended.notify_waiters();
    }
}

impl Dialing {
    /// The handshake did not select the tunnel: the instance is dialed plainly for a while
    /// (connections to it no longer wait for each other's handshakes).
    pub(crate) fn declined(self) {
        self.instance.plain_for(DECLINED_FOR);
    }

    /// The attempt failed (no connect, no handshake): the connections waiting for it, and
    /// those of the next few seconds, dial the instance on their own.
    pub(crate) fn failed(self) {
        self.instance.plain_for(FAILED_FOR);
    }

    /// Establishes a tunnel over `tls` (whose handshake selected [`PROTOCOL`]), adds it to the
    /// instance and reserves a stream on it.
    pub(crate) async fn establish<S>(
        self,
        pool: &Pool,
        tls: S,
        peer: Peer,
        metrics: &Arc<Metrics>,
    ) -> Result<Slot, OpenError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = h2::client::Builder::new();
        builder
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(SEND_BUFFER)
            .max_frame_size(MAX_FRAME)
            .max_header_list_size(MAX_HEADER_LIST);
        let (sender, mut connection) = match builder.handshake::<_, Bytes>(tls).await {
            Ok(handshake) => handshake,
            Err(e) => {
                tracing::info!(peer.id = %peer.id, error = %e, "tunnel handshake failed");
                self.failed();
                return Err(OpenError::on_tunnel("tunnel_handshake"));
            }
        };
        let expires = peer.expires();
        let tunnel = Arc::new(Tunnel {
            sender,
            credentials: self.credentials.clone(),
            peer: peer.id,
            streams: AtomicUsize::new(1),
            retired: AtomicBool::new(false),
            stream_ended: Notify::new(),
            received: Received::default(),
        });
        self.instance.lock().push(tunnel.clone());
        tracing::debug!(peer.id = %tunnel.peer, "tunnel established");
        let open = metrics.tunnel_opened(Direction::Outbound);
        let (instance, idle, stop) = (
            self.instance.clone(),
            pool.settings.idle_timeout,
            pool.stop.clone(),
        );
        let closing = tunnel.clone();
        let pings = connection
            .ping_pong()
            .expect("a new connection's pings are not taken yet");
        pool.tasks.spawn(async move {
            // What may close the tunnel is watched by a task of its own, so that the frames
            // this one is woken for, many per request, poll the connection alone.
            let (watched, of) = (closing.clone(), instance.clone());
            let mut watcher = AbortOnDropHandle::new(tokio::spawn(async move {
                tokio::select! {
                    _ = keepalive(pings, watched.received.clone()) => Closing::Unanswered,
                    _ = linger(&watched, &of, idle) => Closing::Unused,
                    never = retire_at(&watched, expires) => match never {},
                    _ = stop.cancelled() => Closing::Stopped,
                }
            }));
            tokio::select! {
                ended = &mut connection => if let Err(e) = ended {
                    tracing::debug!(peer.id = %closing.peer, error = %e, "tunnel ended with an error");
                },
                why = &mut watcher => match why {
                    // Its last streams ended, but what they wrote last (their ends among it)
                    // may still be queued: a moment to write it out.
                    Ok(Closing::Unused) => {
                        let _ = tokio::time::timeout(FLUSH_TIMEOUT, &mut connection).await;
                    }
                    Ok(Closing::Unanswered) => tracing::info!(
                        peer.id = %closing.peer,
                        "tunnel peer did not answer a ping: closing it"
                    ),
                    Ok(Closing::Stopped) => {}
                    Err(e) => tracing::warn!(peer.id = %closing.peer, error = %e, "tunnel watcher failed: closing the tunnel"),
                },
            }
            instance.lock().retain(|t| !Arc::ptr_eq(t, &closing));
            closing.retire();
            drop(open);
            tracing::debug!(peer.id = %closing.peer, "tunnel closed");
        });
        pool.prune();
        Ok(Slot {
            guard: StreamGuard {
                tunnel: tunnel.clone(),
            },
            tunnel,
        })
    }
}

/// Pings the tunnel's peer after each [`KEEPALIVE_INTERVAL`] in which its streams `received`
/// nothing, so that a peer that vanished is noticed; resolves once a ping goes unanswered for
/// [`KEEPALIVE_TIMEOUT`] (or cannot be sent: the connection is closing).
async fn keepalive(mut pings: PingPong, received: Received) {
    let mut seen = received.count();
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        let now = received.count();
        if std::mem::replace(&mut seen, now) != now {
            continue;
        }
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, pings.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Why a client tunnel closes, other than its connection ending.
enum Closing {
    /// It carries no stream and is retired, or carried none for the idle timeout.
    Unused,
    /// Its peer answered no ping.
    Unanswered,
    /// The proxy stops.
    Stopped,
}

/// Retires `tunnel` when the server's leaf expires (it takes no new stream after that, as no
/// new connection could be verified against that leaf), then waits for ever (its streams end
/// on their own, and then it is unused).
async fn retire_at(tunnel: &Tunnel, expires: Instant) -> Infallible {
    tokio::time::sleep_until(expires).await;
    tracing::debug!(peer.id = %tunnel.peer, "the tunnel's peer certificate expired: retiring it");
    tunnel.retire();
    std::future::pending().await
}

/// The verified peer of a tunnel.
pub(crate) struct Peer {
    /// Its service identity.
    pub(crate) id: ServiceId,
    /// Its leaf's NotAfter.
    pub(crate) not_after: Option<SystemTime>,
}

impl Peer {
    /// The peer of a finished handshake; `None` if its certificate names no service.
    pub(crate) fn of(conn: &rustls::CommonState) -> Option<Peer> {
        let certs = conn.peer_certificates();
        let id = tandem_certs::tls::peer_service_id(certs).ok()?;
        let not_after = certs
            .and_then(|c| c.first())
            .and_then(|leaf| tandem_certs::tls::leaf_info(leaf.as_ref()).ok())
            .map(|info| info.not_after);
        Some(Peer { id, not_after })
    }

    /// When its leaf expires, on the runtime's clock (now if it has; a year away if unknown).
    fn expires(&self) -> Instant {
        let left = match self.not_after {
            Some(t) => t
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
            None => Duration::from_secs(365 * 24 * 3600),
        };
        Instant::now() + left
    }
}

/// Resolves once `tunnel` should close: it carries no stream and is retired, or has carried
/// none for `idle`.
async fn linger(tunnel: &Arc<Tunnel>, instance: &Instance, idle: Duration) {
    let mut unused_since = Instant::now();
    loop {
        let ended = tunnel.stream_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if tunnel.streams.load(Ordering::Acquire) == 0 {
            let retired = tunnel.retired.load(Ordering::Acquire);
            if (retired || unused_since.elapsed() >= idle) && instance.remove_if_unused(tunnel) {
                return;
            }
        } else {
            unused_since = Instant::now();
        }
        tokio::select! {
            _ = ended => unused_since = Instant::now(),
            _ = tokio::time::sleep_until(unused_since + idle) => {}
        }
    }
}

impl Slot {
    /// Opens the stream: `CONNECT authority`, answered 200 by the server's proxy. A tunnel that
    /// cannot carry it any more is retired (the caller may reserve again).
    pub(crate) async fn open(
        self,
        authority: &str,
        timeout: Duration,
    ) -> Result<Stream, OpenError> {
        let Slot { tunnel, guard } = self;
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .map_err(|_| OpenError::on_tunnel("tunnel_request"))?;
        let sender = tunnel.sender.clone();
        let answered = tokio::time::timeout(timeout, async {
            let mut sender = sender.ready().await?;
            let (response, send) = sender.send_request(request, false)?;
            Ok::<_, h2::Error>((response.await?, send))
        })
        .await;
        let (response, send) = match answered {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(peer.id = %tunnel.peer, error = %e, "tunnel refused a stream");
                tunnel.retire();
                return Err(OpenError::retired("tunnel_closed"));
            }
            Err(_) => {
                tunnel.retire();
                return Err(OpenError::retired("tunnel_timeout"));
            }
        };
        match response.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                return Err(OpenError::on_tunnel("tunnel_unavailable"))
            }
            _ => return Err(OpenError::on_tunnel("tunnel_refused")),
        }
        Ok(Stream {
            io: StreamIo::new(send, response.into_body(), &tunnel.received),
            peer: tunnel.peer.clone(),
            guard,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The server side: one accepted tunnel.

/// The streams one accepted tunnel carries.
#[derive(Default)]
struct Carried {
    /// Open now.
    streams: AtomicUsize,
    /// Ever opened.
    total: AtomicUsize,
    ended: Notify,
}

/// Counts one accepted stream while it lives.
struct Carrying(Arc<Carried>);

impl Carrying {
    fn new(carried: &Arc<Carried>) -> Self {
        carried.streams.fetch_add(1, Ordering::AcqRel);
        carried.total.fetch_add(1, Ordering::AcqRel);
        Carrying(carried.clone())
    }
}

impl Drop for Carrying {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

/// What every stream of an accepted tunnel needs.
struct Accepted {
    inbound: Arc<Inbound>,
    peer: ServiceId,
    client: SocketAddr,
    tasks: TaskTracker,
    draining: CancellationToken,
    carried: Arc<Carried>,
    /// What its streams received.
    received: Received,
}

/// Serves one accepted tunnel from `peer` (its handshake, made with `used`, selected
/// [`PROTOCOL`]) until it closes: each `CONNECT` stream goes the way a plain connection from
/// `peer` goes. It closes gracefully (`GOAWAY`, streams finish) when the proxy drains, when our
/// credentials are no longer `used`, when the peer's leaf expires, when it has carried no
/// stream for the idle timeout, and when the intentions deny the peer (an HTTP service's
/// requests are decided one by one instead) once no stream is left; at once when `stopper`
/// fires.
#[allow(
    clippy::too_many_arguments,
    reason = "one accepted connection's parts, each used once"
)]
pub(crate) async fn serve<S>(
    inbound: Arc<Inbound>,
    tls: S,
    peer: Peer,
    used: Arc<TlsState>,
    client: SocketAddr,
    tasks: TaskTracker,
    draining: CancellationToken,
    stopper: &Stopper,
) -> Transfer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = inbound.data.tunnel;
    let _open = inbound.data.metrics.tunnel_opened(Direction::Inbound);
    let expires = peer.expires();
    let peer = peer.id;
    let mut credentials = inbound.data.tls.clone();
    // A rotation during the handshake counts: the tunnel then starts with the old leaf.
    let rotated = !Arc::ptr_eq(&credentials.borrow_and_update(), &used);
    let mut intentions = inbound.intentions.clone();
    intentions.mark_unchanged();
    let carried = Arc::new(Carried::default());
    let accepted = Arc::new(Accepted {
        inbound: inbound.clone(),
        peer: peer.clone(),
        client,
        tasks,
        draining: draining.clone(),
        carried: carried.clone(),
        received: Received::default(),
    });
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.max_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST);
    // The client's preface, within the idle timeout (a tunnel that never asks
    // for a stream is idle from the start).
    let handshake = tokio::time::timeout(settings.idle_timeout, builder.handshake::<_, Bytes>(tls));
    let mut connection = tokio::select! {
        shaken = handshake => match shaken {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                tracing::debug!(peer.id = %peer, error = %e, "tunnel handshake failed");
                return Transfer::empty(End::Tunnel);
            }
            Err(_) => {
                tracing::debug!(peer.id = %peer, "tunnel handshake timed out");
                return Transfer::empty(End::Tunnel);
            }
        },
        _ = stopper.cancelled() => return Transfer::empty(stopper.reason()),
    };
    let pings = connection
        .ping_pong()
        .expect("a new connection's pings are not taken yet");
    // Everything that may close the tunnel is watched by a task of its own, so that the frames
    // this one is woken for, many per request, poll the connection alone.
    let (close, mut closes) = tokio::sync::mpsc::channel(2);
    let watcher = AbortOnDropHandle::new(tokio::spawn(
        Watched {
            inbound,
            carried,
            peer: peer.clone(),
            rotated,
            credentials,
            intentions,
            expires,
            draining,
            stopper: stopper.clone(),
            pings,
            received: accepted.received.clone(),
        }
        .watch(close)
        .in_current_span(),
    ));
    let mut closing: Option<&'static str> = None;
    let end = loop {
        tokio::select! {
            // Accepting also drives the connection: every stream's frames go in and out here.
            next = poll_fn(|cx| connection.poll_accept(cx)) => match next {
                Some(Ok((request, respond))) => accepted.clone().stream(request, respond),
                Some(Err(e)) => {
                    tracing::debug!(peer.id = %peer, error = %e, "tunnel ended with an error");
                    break End::Tunnel;
                }
                None => break End::Tunnel,
            },
            why = closes.recv() => match why {
                Some(Close::Gracefully(reason)) => {
                    closing = Some(reason);
                    connection.graceful_shutdown();
                }
                Some(Close::Now(end)) => break end,
                // The watcher failed: nothing would close the tunnel any more.
                None => {
                    tracing::warn!(peer.id = %peer, "tunnel watcher failed: closing the tunnel");
                    break End::Tunnel;
                }
            },
        }
    };
    drop(watcher);
    tracing::debug!(peer.id = %peer, reason = closing.unwrap_or("closed by the peer"), "tunnel closed");
    Transfer::empty(end)
}

/// Why an accepted tunnel is to close.
enum Close {
    /// `GOAWAY`: no new stream, the open ones finish.
    Gracefully(&'static str),
    /// At once, its streams with it.
    Now(End),
}

/// What may close one accepted tunnel.
struct Watched {
    inbound: Arc<Inbound>,
    carried: Arc<Carried>,
    peer: ServiceId,
    /// Our credentials rotated during its handshake.
    rotated: bool,
    credentials: watch::Receiver<Arc<TlsState>>,
    intentions: watch::Receiver<Arc<crate::intentions::IntentionSet>>,
    /// When the peer's leaf expires.
    expires: Instant,
    draining: CancellationToken,
    stopper: Stopper,
    pings: PingPong,
    received: Received,
}

impl Watched {
    /// Tells `close` when and how the tunnel closes: gracefully when the proxy drains, when
    /// our credentials rotate, when the peer's leaf expires, when it has carried no stream for
    /// the idle timeout, and when the intentions deny the peer once no stream is left; at once
    /// when the peer answers no ping or the connection is stopped.
    async fn watch(self, close: tokio::sync::mpsc::Sender<Close>) {
        let Watched {
            inbound,
            carried,
            peer,
            rotated,
            mut credentials,
            mut intentions,
            expires,
            draining,
            stopper,
            pings,
            received,
        } = self;
        let idle_timeout = inbound.data.tunnel.idle_timeout;
        let keepalive = keepalive(pings, received);
        tokio::pin!(keepalive);
        let mut closing = rotated.then_some("rotated");
        if let Some(reason) = closing {
            let _ = close.send(Close::Gracefully(reason)).await;
        }
        let mut unused_since = Instant::now();
        // The deny rule applies once a stream was decided or the intentions changed: a caller
        // denied from the start gets its first stream refused as a plain connection would be
        // (counted and logged), not a tunnel closed before it could ask.
        let mut decided = false;
        let now = loop {
            let ended = carried.ended.notified();
            let unused = carried.streams.load(Ordering::Acquire) == 0;
            decided |= carried.total.load(Ordering::Acquire) > 0;
            if !unused {
                unused_since = Instant::now();
            }
            let mut decision = None;
            if closing.is_none() && unused {
                if unused_since.elapsed() >= idle_timeout {
                    decision = Some("idle");
                } else if decided && inbound.denies(&peer) {
                    decision = Some("denied");
                }
            }
            if decision.is_none() {
                decision = tokio::select! {
                    // A stream ended: the tunnel is in use until now.
                    _ = ended => {
                        unused_since = Instant::now();
                        None
                    }
                    _ = tokio::time::sleep_until(unused_since + idle_timeout), if unused && closing.is_none() => None,
                    changed = intentions.changed(), if closing.is_none() => {
                        if changed.is_err() { break End::Stopped }
                        decided = true;
                        None
                    }
                    _ = tokio::time::sleep_until(expires), if closing.is_none() => Some("peer_certificate_expired"),
                    _ = credentials.changed(), if closing.is_none() => Some("rotated"),
                    _ = draining.cancelled(), if closing.is_none() => Some("draining"),
                    _ = &mut keepalive => {
                        tracing::info!(peer.id = %peer, "tunnel peer did not answer a ping: closing it");
                        break End::Tunnel;
                    }
                    _ = stopper.cancelled() => break stopper.reason(),
                };
            }
            if let Some(reason) = decision {
                closing = Some(reason);
                let _ = close.send(Close::Gracefully(reason)).await;
            }
        };
        let _ = close.send(Close::Now(now)).await;
    }
}

impl Accepted {
    /// Answers one stream of the tunnel: a `CONNECT` becomes an inbound connection.
    fn stream(self: Arc<Self>, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let mut refuse = |status| {
            let answer = Response::builder()
                .status(status)
                .body(())
                .expect("a status and no body make a response");
            // The stream may have been reset meanwhile: nothing is left to refuse then.
            let _ = respond.send_response(answer, true);
        };
        if request.method() != Method::CONNECT {
            return refuse(StatusCode::METHOD_NOT_ALLOWED);
        }
        let data = &self.inbound.data;
        let Some(slot) = data.slot(Direction::Inbound, self.client) else {
            return refuse(StatusCode::SERVICE_UNAVAILABLE);
        };
        let send = match respond.send_response(Response::new(()), false) {
            Ok(send) => send,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel stream ended before it opened");
                return;
            }
        };
        let io = StreamIo::new(send, request.into_body(), &self.received);
        let carrying = Carrying::new(&self.carried);
        let span = tracing::info_span!("stream", direction = "inbound", client.addr = %self.client);
        let this = self.clone();
        self.tasks.spawn(
            async move {
                let conn = this.inbound.data.track(Direction::Inbound, this.client);
                this.inbound.data.metrics.tunnel_stream(Direction::Inbound);
                this.inbound
                    .clone()
                    .serve_caller(
                        io,
                        this.peer.clone(),
                        conn,
                        this.tasks.clone(),
                        this.draining.clone(),
                    )
                    .await;
                drop(carrying);
                drop(slot);
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A client's pings over an in-memory connection to `peer`'s end: how long (on the paused
    /// clock) until [`keepalive`] gave up, if it did within `within`.
    async fn keepalive_against(
        peer: impl FnOnce(tokio::io::DuplexStream) -> tokio::task::JoinHandle<()>,
        received: Received,
        within: Duration,
    ) -> Option<Duration> {
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        let _peer = peer(theirs);
        let (_sender, mut connection) = h2::client::handshake(ours).await.unwrap();
        let pings = connection.ping_pong().unwrap();
        tokio::spawn(async move {
            let _ = (&mut connection).await;
        });
        let start = Instant::now();
        tokio::time::timeout(within, keepalive(pings, received))
            .await
            .ok()
            .map(|()| start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_whose_peer_answers_no_ping_is_given_up_and_one_that_answers_is_kept() {
        let answering = |io| {
            tokio::spawn(async move {
                let mut server = h2::server::handshake(io).await.unwrap();
                while poll_fn(|cx| server.poll_accept(cx)).await.is_some() {}
            })
        };
        let ten_minutes = Duration::from_secs(600);
        let kept = keepalive_against(answering, Received::default(), ten_minutes).await;
        assert_eq!(kept, None, "pings answered for ten minutes");

        // Reads everything, answers nothing.
        let silent = |mut io: tokio::io::DuplexStream| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut sink = vec![0; 4096];
                while io.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            })
        };
        let given_up = keepalive_against(silent, Received::default(), ten_minutes)
            .await
            .expect("an unanswered ping ends the keepalive");
        assert!(
            given_up >= KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT
                && given_up < KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT + Duration::from_secs(1),
            "given up after {given_up:?}"
        );

        // A tunnel that receives is not pinged: its pong could be queued behind what it
        // receives. Once it stops (at 100 s), the first interval that received nothing, whole,
        // ends in a ping that goes unanswered.
        let received = Received::default();
        let receiving = received.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                receiving.record();
            }
        });
        let given_up = keepalive_against(silent, received, ten_minutes)
            .await
            .expect("an unanswered ping ends the keepalive");
        assert!(
            given_up >= Duration::from_secs(100) + KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT
                && given_up
                    <= Duration::from_secs(100) + 2 * KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT,
            "pinged only once nothing was received: given up after {given_up:?}"
        );
    }

    /// A client tunnel over an in-memory connection.
    struct InMemory {
        tunnel: Arc<Tunnel>,
        /// The client's connection task.
        connection: tokio::task::JoinHandle<()>,
        /// A stream kept open on a told tunnel, so that its connection stays up after the
        /// `GOAWAY` (as a draining server's does while its streams finish).
        _held: Option<(h2::SendStream<Bytes>, RecvStream)>,
    }

    /// A client tunnel over an in-memory connection, with `streams` counted on it. If `told`,
    /// one stream is opened and kept open on it, and then the server sends `GOAWAY`.
    async fn in_memory_tunnel(
        credentials: &Arc<TlsState>,
        peer: &ServiceId,
        streams: usize,
        told: bool,
    ) -> InMemory {
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        tokio::spawn(async move {
            let mut server = h2::server::handshake(theirs).await.unwrap();
            let mut held = Vec::new();
            if told {
                let (request, mut respond) =
                    poll_fn(|cx| server.poll_accept(cx)).await.unwrap().unwrap();
                let send = respond.send_response(Response::new(()), false).unwrap();
                held.push((request, send));
                server.graceful_shutdown();
            }
            while poll_fn(|cx| server.poll_accept(cx)).await.is_some() {}
        });
        let (sender, connection) = h2::client::handshake(ours).await.unwrap();
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut held = None;
        if told {
            let request = Request::builder()
                .method(Method::CONNECT)
                .uri("api:1")
                .body(())
                .unwrap();
            let (response, send) = sender
                .clone()
                .ready()
                .await
                .unwrap()
                .send_request(request, false)
                .unwrap();
            held = Some((send, response.await.unwrap().into_body()));
        }
        let tunnel = Arc::new(Tunnel {
            sender,
            credentials: credentials.clone(),
            peer: peer.clone(),
            streams: AtomicUsize::new(streams),
            retired: AtomicBool::new(false),
            stream_ended: Notify::new(),
            received: Received::default(),
        });
        InMemory {
            tunnel,
            connection,
            _held: held,
        }
    }

    /// Waits until `told` opens no stream any more (its `GOAWAY` arrived), and checks that its
    /// connection is still up: it is the `GOAWAY` that is seen, not the end of the connection.
    async fn until_told(told: &InMemory) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while told.tunnel.opens_streams() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a tunnel told GOAWAY stops opening streams within 5 s");
        assert!(
            !told.connection.is_finished(),
            "the told tunnel's connection is still up (its stream is open)"
        );
    }

    #[tokio::test]
    async fn a_tunnel_told_goaway_takes_no_new_stream_before_one_is_refused_on_it() {
        use tandem_certs::testing::{TestIdentity, TestPki};
        let pki = TestPki::new();
        let credentials = Arc::new(
            TlsState::new(pki.tls_identity(TestIdentity::Valid, "web"), pki.roots()).unwrap(),
        );
        let peer = pki.service_id("api");
        // The told one carries fewer streams: by count alone it would be picked.
        let told = in_memory_tunnel(&credentials, &peer, 0, true).await;
        let open = in_memory_tunnel(&credentials, &peer, 3, false).await;
        let instance = Instance::default();
        instance
            .lock()
            .extend([told.tunnel.clone(), open.tunnel.clone()]);
        until_told(&told).await;
        assert!(
            open.tunnel.opens_streams(),
            "a tunnel told nothing stays usable"
        );

        let slot = instance.take_slot(&credentials, 10).expect("a slot");
        assert!(
            Arc::ptr_eq(&slot.tunnel, &open.tunnel),
            "the slot is on the usable tunnel"
        );
        assert!(
            told.tunnel.retired.load(Ordering::Acquire),
            "the told tunnel is retired"
        );
        assert_eq!(instance.lock().len(), 1, "and off the list");
        assert_eq!(open.tunnel.streams.load(Ordering::Acquire), 4);

        // With every tunnel told, there is no slot: the caller dials a new tunnel.
        drop(slot);
        let told_too = in_memory_tunnel(&credentials, &peer, 0, true).await;
        let instance = Instance::default();
        instance.lock().push(told_too.tunnel.clone());
        until_told(&told_too).await;
        assert!(instance.take_slot(&credentials, 10).is_none());
        assert!(instance.lock().is_empty());
    }

    #[test]
    fn only_a_listed_protocol_advertises_the_tunnel_with_its_stream_limit() {
        assert_eq!(advertised(&meta(&[])), None);
        assert_eq!(advertised(&meta(&[(META_KEY, "tandem-tunnel/2")])), None);
        assert_eq!(
            advertised(&meta(&[(META_KEY, "tandem-tunnel/1")])),
            Some(100)
        );
        assert_eq!(
            advertised(&meta(&[
                (META_KEY, "x, tandem-tunnel/1"),
                (META_STREAMS_KEY, "250")
            ])),
            Some(250)
        );
        // A count that is not a positive number is the assumed one, not a refusal.
        for bad in ["0", "-1", "many", ""] {
            assert_eq!(
                advertised(&meta(&[(META_KEY, PROTOCOL), (META_STREAMS_KEY, bad)])),
                Some(100),
                "{bad:?}"
            );
        }
    }
}
