//! The inbound path of a service whose protocol is `http`, `http2` or `grpc`: after the mTLS
//! handshake the proxy speaks HTTP to both sides (HTTP/1.1 with keep-alive or h2, detected
//! per connection; gRPC is h2) and decides every request against the current intentions, so an
//! intention change applies to the next request of an open connection. A denied request gets
//! `403 RBAC: access denied` (gRPC: `grpc-status: 7`), and the connection stays open. Each
//! request is counted and timed to the end of its response; with `--http-access-log` it gets a
//! log line. An HTTP/1.1 WebSocket upgrade to an `http` app is decided like any request, sent on
//! an app connection of its own, and once the app switches protocols the two connections are
//! relayed as bytes until both sides have closed. No other upgrade is made (an `h2c` one would
//! carry requests no permission decides): it is forwarded without its `Upgrade` header.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem_certs::spiffe::ServiceId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connections::{self, End};
use crate::copy::{self, Activity, Stopper, Transfer};
use crate::inbound::Inbound;
use crate::intentions::Action;
use crate::metrics::Metrics;
use crate::permissions::{normalize_path, RequestView};
use crate::protocol::Protocol;

/// The body every answer has: the app's, or the proxy's own (a denial, an app failure).
type AnswerBody = BoxBody<Bytes, hyper::Error>;

/// What the requests of one inbound connection share.
pub(crate) struct Requests {
    inbound: Arc<Inbound>,
    peer: ServiceId,
    protocol: Protocol,
    app: SocketAddr,
    /// Where the app connections' tasks run (they end with their last sender).
    tasks: TaskTracker,
    /// The connection to the app, opened at the first allowed request and again after the
    /// app closed it.
    app_conn: Mutex<Option<AppSender>>,
    /// An upgrade the app accepted, for [`Requests::serve`] to relay once hyper hands the
    /// connection over.
    upgraded: std::sync::Mutex<Option<Upgrade>>,
}

/// A WebSocket the app accepted: both sides, and the request that was decided.
struct Upgrade {
    caller: OnUpgrade,
    app: OnUpgrade,
    /// What the intentions decided on (no body), decided again when they change.
    request: Request<()>,
}

/// A connection to the app, in the version the service's protocol asks for.
enum AppSender {
    Http1(hyper::client::conn::http1::SendRequest<Incoming>),
    Http2(hyper::client::conn::http2::SendRequest<Incoming>),
}

/// Why a request could not be forwarded to the app.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("cannot connect to the app at {0}: {1}")]
    Connect(SocketAddr, io::Error),
    #[error("connecting to the app at {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("the app's connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the app answered 101 Switching Protocols to a request that asked no WebSocket")]
    UnaskedSwitch,
}

impl Requests {
    /// The requests of one connection from `peer` to the app at `app`.
    pub(crate) fn new(
        inbound: Arc<Inbound>,
        peer: ServiceId,
        protocol: Protocol,
        app: SocketAddr,
        tasks: TaskTracker,
    ) -> Self {
        Requests {
            inbound,
            peer,
            protocol,
            app,
            tasks,
            app_conn: Mutex::new(None),
            upgraded: std::sync::Mutex::new(None),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.inbound.data.metrics
    }

    /// Serves HTTP on `downstream` until the caller closes it, it is idle for `idle`, or
    /// `stopper` fires. Once `draining` fires (the proxy drains) the connection is shut down
    /// gracefully: requests in flight finish, then it closes (HTTP/1.1 `Connection: close`,
    /// h2 `GOAWAY`).
    pub(crate) async fn serve<S>(
        self: Arc<Self>,
        downstream: S,
        idle: Option<Duration>,
        stopper: &Stopper,
        draining: &CancellationToken,
    ) -> Transfer
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let meter = Arc::new(Meter::default());
        let io = Metered {
            inner: downstream,
            meter: meter.clone(),
        };
        let this = self.clone();
        let service = hyper::service::service_fn(move |req| this.clone().answer(req));
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // No header read timeout: hyper's (30 s once it has a timer) runs from the end of the
        // previous answer, so it closed every kept-alive connection idle for 30 s, which a
        // client pool then found dead. An idle connection lives for `--idle-timeout`, as in
        // Envoy (whose request-headers timeout is off by default); a caller trickling a head
        // is one of `--max-connections` and, like any connection, closed after the idle time.
        builder
            .http1()
            .header_read_timeout(Option::<Duration>::None);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut shutting_down = false;
        let end = loop {
            tokio::select! {
                served = conn.as_mut() => break match served {
                    Ok(()) => End::Completed,
                    Err(e) => {
                        tracing::debug!(error = %e, "inbound HTTP connection ended with an error");
                        End::DownstreamError
                    }
                },
                _ = draining.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = meter.activity.idle(idle) => break End::IdleTimeout,
                _ = stopper.cancelled() => break stopper.reason(),
            }
        };
        let upgraded = self
            .upgraded
            .lock()
            .expect("the upgrade slot lock is never poisoned")
            .take();
        let end = match (end, upgraded) {
            (End::Completed, Some(up)) => {
                let revoked = self.revoked(&up.request);
                relay(up.caller, up.app, &meter.activity, idle, stopper, revoked).await
            }
            (end, _) => end,
        };
        Transfer {
            received: meter.received.load(Ordering::Relaxed),
            sent: meter.sent.load(Ordering::Relaxed),
            end,
        }
    }

    /// Resolves once changed intentions deny `request`, the request of a relayed WebSocket
    /// (with `--close-denied-connections`; never without).
    async fn revoked(&self, request: &Request<()>) {
        if !self.inbound.close_denied {
            return std::future::pending().await;
        }
        let mut intentions = self.inbound.intentions.clone();
        // Decided once more first: the intentions may have changed since the upgrade request
        // was decided.
        loop {
            let decision = intentions
                .borrow_and_update()
                .authorize_request(&connections::source(&self.peer), &RequestView::of(request));
            if decision.action == Action::Deny {
                tracing::info!(peer.id = %self.peer, by = decision.by.as_str(),
                    "closing a WebSocket a changed intention denies");
                self.metrics().revoked();
                return;
            }
            if intentions.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// One request: decided, then forwarded or answered here; counted when its answer ends.
    async fn answer(
        self: Arc<Self>,
        mut request: Request<Incoming>,
    ) -> Result<Response<Timed>, Infallible> {
        let started = Instant::now();
        let upgrading = self.protocol == Protocol::Http && is_websocket_upgrade(&request);
        // An upgrade carries no body: one the app did not read would be taken for a request on
        // its connection that nothing decided.
        let malformed = normalize(&mut request).err().or_else(|| {
            (upgrading && !request.body().is_end_stream())
                .then_some("a WebSocket upgrade request with a body")
        });
        let method = request.method().clone();
        let version = request.version();
        let access_log = self.inbound.access_log;
        let path = access_log.then(|| request.uri().path().to_string());
        let decision = {
            let view = RequestView::of(&request);
            self.inbound
                .intentions
                .borrow()
                .authorize_request(&connections::source(&self.peer), &view)
        };
        let mut answer = if let Some(reason) = malformed {
            tracing::debug!(peer.id = %self.peer, reason, "malformed request refused");
            bad_request(reason)
        } else if decision.action == Action::Deny {
            self.metrics().http_denied(decision.by.as_str());
            tracing::debug!(peer.id = %self.peer, method = %method, by = decision.by.as_str(),
                "request denied by intentions");
            denied(is_grpc(request.headers()))
        } else {
            let forwarded = if upgrading {
                let decided = head_of(&request);
                self.forward_upgrade(request, decided).await
            } else {
                self.forward(request).await
            };
            match forwarded {
                Ok(answer) if answer.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrading => {
                    tracing::warn!(peer.id = %self.peer, "the app switched protocols unasked");
                    app_failed(&AppError::UnaskedSwitch)
                }
                Ok(mut answer) => {
                    remove_hop_by_hop(answer.headers_mut());
                    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
                        let headers = answer.headers_mut();
                        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    }
                    answer.map(BodyExt::boxed)
                }
                Err(e) => {
                    tracing::warn!(peer.id = %self.peer, error = %e, "request not forwarded");
                    app_failed(&e)
                }
            }
        };
        *answer.version_mut() = version;
        let code = answer.status().as_u16();
        let metrics = self.inbound.data.metrics.clone();
        let peer = access_log.then(|| self.peer.to_string());
        let done = move || {
            let took = started.elapsed();
            metrics.http_request(&method, code, took);
            if let (Some(path), Some(peer)) = (path, peer) {
                tracing::info!(
                    target: "tandem_proxy::access",
                    method = %method,
                    path = %path,
                    status = code,
                    duration.us = took.as_micros() as u64,
                    peer.id = %peer,
                    "request"
                );
            }
        };
        Ok(answer.map(|body| Timed {
            inner: body,
            done: Some(Box::new(done)),
        }))
    }

    /// Sends `request` to the app in the version the protocol asks for.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
    ) -> Result<Response<Incoming>, AppError> {
        let mut conn = self.app_conn.lock().await;
        let usable = match conn.as_mut() {
            Some(AppSender::Http1(s)) => s.ready().await.is_ok(),
            Some(AppSender::Http2(s)) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *conn = Some(self.connect().await?);
        }
        match conn
            .as_mut()
            .expect("a usable app connection was just made")
        {
            AppSender::Http1(s) => {
                to_http1(&mut request);
                Ok(s.send_request(request).await?)
            }
            AppSender::Http2(s) => {
                let mut s = s.clone();
                drop(conn);
                to_http2(&mut request);
                Ok(s.send_request(request).await?)
            }
        }
    }

    /// Sends an HTTP/1.1 WebSocket upgrade request to the app on a connection of its own, with
    /// `Upgrade: websocket`. When the app answers `101 Switching Protocols` to a WebSocket, both
    /// sides and `decided` (the request as the intentions saw it) are left in
    /// [`Requests::upgraded`] for [`Requests::serve`] to relay.
    async fn forward_upgrade(
        &self,
        mut request: Request<Incoming>,
        decided: Request<()>,
    ) -> Result<Response<Incoming>, AppError> {
        let headers = request.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let caller = hyper::upgrade::on(&mut request);
        let io = TokioIo::new(self.dial_app().await?);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        self.tasks.spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "app connection of an upgrade ended with an error");
            }
        });
        to_http1(&mut request);
        let mut answer = sender.send_request(request).await?;
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
            if !is_websocket(answer.headers()) {
                return Err(AppError::UnaskedSwitch);
            }
            let app = hyper::upgrade::on(&mut answer);
            *self
                .upgraded
                .lock()
                .expect("the upgrade slot lock is never poisoned") = Some(Upgrade {
                caller,
                app,
                request: decided,
            });
        }
        Ok(answer)
    }

    async fn dial_app(&self) -> Result<TcpStream, AppError> {
        let timeout = self.inbound.data.limits.connect_timeout;
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(self.app)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(AppError::Connect(self.app, e)),
            Err(_) => return Err(AppError::ConnectTimeout(self.app)),
        };
        connections::tune(&tcp);
        Ok(tcp)
    }

    async fn connect(&self) -> Result<AppSender, AppError> {
        let io = TokioIo::new(self.dial_app().await?);
        if self.protocol == Protocol::Http {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            self.tasks.spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "app connection ended with an error");
                }
            });
            Ok(AppSender::Http1(sender))
        } else {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            self.tasks.spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "app connection ended with an error");
                }
            });
            Ok(AppSender::Http2(sender))
        }
    }
}

/// Whether the request asks its HTTP/1.1 connection to become a WebSocket: `Upgrade: websocket`
/// named in `Connection`. Other upgrades (`h2c`, `TLS/1.0`) are not made.
fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && is_websocket(request.headers())
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether `Upgrade` is the one token `websocket` (any case).
fn is_websocket(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    matches!(
        (upgrades.next(), upgrades.next()),
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
    )
}

/// The method, target, version and headers of `request`, without its body.
fn head_of<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    head
}

/// Relays the bytes of an upgraded connection both ways until both sides have closed, either
/// side fails, it is idle for `idle`, `stopper` fires or `revoked` resolves.
async fn relay(
    caller: OnUpgrade,
    app: OnUpgrade,
    activity: &Activity,
    idle: Option<Duration>,
    stopper: &Stopper,
    revoked: impl std::future::Future<Output = ()>,
) -> End {
    let copy = async {
        let (caller, app) = match tokio::try_join!(caller, app) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "an upgraded connection was not handed over");
                return End::DownstreamError;
            }
        };
        // The L4 copy: no buffer while the connection waits (a WebSocket mostly does), and
        // the failing side named. The idle timeout is the meter's, below.
        copy::bidirectional(TokioIo::new(caller), TokioIo::new(app), None, stopper)
            .await
            .end
    };
    tokio::select! {
        end = copy => end,
        _ = activity.idle(idle) => End::IdleTimeout,
        _ = stopper.cancelled() => stopper.reason(),
        () = revoked => End::Revoked,
    }
}

/// Whether the request is gRPC (a denial is then a gRPC status, not a 403).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The answer to a denied request, as Envoy's RBAC filter gives it.
fn denied(grpc: bool) -> Response<AnswerBody> {
    const TEXT: &str = "RBAC: access denied";
    let builder = Response::builder();
    let builder = if grpc {
        builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", "7")
            .header("grpc-message", TEXT)
    } else {
        builder
            .status(StatusCode::FORBIDDEN)
            .header(header::CONTENT_TYPE, "text/plain")
    };
    let body = if grpc { "" } else { TEXT };
    builder
        .body(full(body))
        .expect("static response parts are valid")
}

/// The answer to a request whose target or Host cannot be decided on.
fn bad_request(reason: &'static str) -> Response<AnswerBody> {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(reason))
        .expect("static response parts are valid")
}

/// The answer when the app could not be reached or failed mid-request.
fn app_failed(error: &AppError) -> Response<AnswerBody> {
    let status = match error {
        AppError::Connect(..) | AppError::ConnectTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        AppError::Http(_) | AppError::UnaskedSwitch => StatusCode::BAD_GATEWAY,
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(
            "upstream connect error or disconnect/reset before headers",
        ))
        .expect("static response parts are valid")
}

fn full(text: &'static str) -> AnswerBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

/// Headers that describe one hop, not the request (RFC 9110 7.6.1); `te: trailers` stays, as
/// gRPC needs it.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| header::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        // `Connection: host` must not take away the authority a permission decided on.
        if name != header::HOST {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// The request as it is decided and forwarded: its path normalized as Envoy's `normalize_path`
/// does (dot segments removed, unreserved characters decoded), and the cookies of an h2 caller
/// joined into one header (RFC 9113 8.2.3), as an HTTP/1 app and the permissions expect them.
fn normalize<B>(request: &mut Request<B>) -> Result<(), &'static str> {
    // What is decided is what is forwarded: hop-by-hop headers go first, and the authority is
    // one. The target's (h2's `:authority`, an HTTP/1 absolute-form target) replaces a `Host`
    // that differs (RFC 9112 3.2.2, RFC 9113 8.3.1); else the one `Host` must be an authority
    // (no path, no user info), as the h2 target built from it will be.
    remove_hop_by_hop(request.headers_mut());
    if request.headers().get_all(header::HOST).iter().count() > 1 {
        return Err("more than one Host header");
    }
    if let Some(authority) = request.uri().authority() {
        if authority.as_str().contains('@') {
            return Err("user info in the request target");
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the request target's authority is not a valid Host")?;
        request.headers_mut().insert(header::HOST, host);
    } else if let Some(host) = request.headers().get(header::HOST) {
        let authority = http::uri::Authority::try_from(host.as_bytes())
            .map_err(|_| "the Host header is not an authority")?;
        if authority.as_str().contains('@') {
            return Err("user info in the Host header");
        }
    }
    let path = request.uri().path();
    let normal = normalize_path(path);
    if normal != path {
        let target = match request.uri().query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(pq) = target.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    if request.headers().get_all(header::COOKIE).iter().count() > 1 {
        let joined = request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        if let Ok(value) = HeaderValue::from_str(&joined) {
            request.headers_mut().insert(header::COOKIE, value);
        }
    }
    Ok(())
}

/// An HTTP/1.1 request to the app: origin-form target, the authority as `Host`.
fn to_http1<B>(request: &mut Request<B>) {
    if request.version() == Version::HTTP_2 {
        if let Some(authority) = request.uri().authority().map(|a| a.to_string()) {
            if let Ok(host) = HeaderValue::from_str(&authority) {
                request.headers_mut().entry(header::HOST).or_insert(host);
            }
        }
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Ok(uri) = target.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    if request.version() != Version::HTTP_10 {
        *request.version_mut() = Version::HTTP_11;
    }
}

/// An h2 request to the app: an absolute target (its authority from `Host` for a request that
/// came as HTTP/1).
fn to_http2<B>(request: &mut Request<B>) {
    if request.uri().authority().is_none() {
        // [`normalize`] checked that a Host is an authority; it is parsed as one, never pasted
        // into a target string (where a `/` in it would change the path).
        let authority = request
            .headers()
            .get(header::HOST)
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
        let target = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        if let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(target)
            .build()
        {
            *request.uri_mut() = uri;
        }
    }
    request.headers_mut().remove(header::HOST);
    *request.version_mut() = Version::HTTP_2;
}

/// An answer's body that reports once when it is done (sent whole, or dropped with its
/// connection): the request's duration runs to the end of its response.
pub(crate) struct Timed {
    inner: AnswerBody,
    done: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Body for Timed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(done) = self.done.take() {
                done();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done();
        }
    }
}

/// Bytes both ways and the last activity of the downstream connection.
#[derive(Debug)]
struct Meter {
    received: AtomicU64,
    sent: AtomicU64,
    activity: Activity,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            activity: Activity::new(),
        }
    }
}

/// The downstream stream, counted.
struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.meter.received.fetch_add(n as u64, Ordering::Relaxed);
            self.meter.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.meter.sent.fetch_add(n as u64, Ordering::Relaxed);
            self.meter.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.meter.sent.fetch_add(n as u64, Ordering::Relaxed);
            self.meter.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Host that is not one authority is refused before anything is decided: a path in it
    /// would become the path of the h2 target built from it, user info would reach the app.
    #[test]
    fn a_host_must_be_one_authority() {
        let with_host = |hosts: &[&str]| {
            let mut request = Request::get("/ok");
            for host in hosts {
                request = request.header(header::HOST, *host);
            }
            request.body(()).unwrap()
        };
        for bad in [
            &["x/admin?"][..],
            &["allowed@admin.internal"],
            &["a.internal", "b.internal"],
        ] {
            assert!(normalize(&mut with_host(bad)).is_err(), "{bad:?}");
        }
        let mut good = with_host(&["web.internal:8080"]);
        assert_eq!(normalize(&mut good), Ok(()));
        to_http2(&mut good);
        assert_eq!(good.uri().to_string(), "http://web.internal:8080/ok");
        assert!(good.headers().get(header::HOST).is_none());
        let mut user_info = Request::get("http://u@web.internal/").body(()).unwrap();
        assert!(normalize(&mut user_info).is_err());
    }

    /// What is decided is what is forwarded: headers `Connection` names are gone before the
    /// decision, and `Connection: host` does not take the Host away.
    #[test]
    fn connection_named_headers_go_before_the_decision_but_host_stays() {
        let mut request = Request::get("/ok")
            .header(header::HOST, "web.internal")
            .header(header::CONNECTION, "host, x-role")
            .header("x-role", "admin")
            .body(())
            .unwrap();
        assert_eq!(normalize(&mut request), Ok(()));
        assert_eq!(request.headers()[header::HOST], "web.internal");
        assert!(request.headers().get("x-role").is_none());
        assert!(request.headers().get(header::CONNECTION).is_none());
    }

    /// A `Host` that differs from the target's authority is replaced by it, so the authority a
    /// permission decided on is the one the app sees.
    #[test]
    fn the_target_authority_replaces_a_differing_host() {
        let mut absolute = Request::get("http://public.internal/x")
            .header(header::HOST, "admin.internal")
            .body(())
            .unwrap();
        assert_eq!(normalize(&mut absolute), Ok(()));
        assert_eq!(absolute.headers()[header::HOST], "public.internal");
        let view = RequestView::of(&absolute);
        assert_eq!(view.authority, Some("public.internal"));
        let mut origin = Request::get("/x")
            .header(header::HOST, "web.internal")
            .body(())
            .unwrap();
        assert_eq!(normalize(&mut origin), Ok(()));
        assert_eq!(origin.headers()[header::HOST], "web.internal");
    }

    #[test]
    fn only_a_websocket_upgrade_is_made() {
        let request = |upgrade: &str, connection: &str, version| {
            Request::get("/chat")
                .version(version)
                .header(header::UPGRADE, upgrade)
                .header(header::CONNECTION, connection)
                .body(())
                .unwrap()
        };
        assert!(is_websocket_upgrade(&request(
            "websocket",
            "Upgrade",
            Version::HTTP_11
        )));
        assert!(is_websocket_upgrade(&request(
            "WebSocket",
            "keep-alive, upgrade",
            Version::HTTP_11
        )));
        for (upgrade, connection, version) in [
            ("h2c", "Upgrade, HTTP2-Settings", Version::HTTP_11),
            ("websocket, h2c", "upgrade", Version::HTTP_11),
            ("websocket", "keep-alive", Version::HTTP_11),
            ("websocket", "upgrade", Version::HTTP_10),
            ("websocket", "upgrade", Version::HTTP_2),
        ] {
            assert!(
                !is_websocket_upgrade(&request(upgrade, connection, version)),
                "{upgrade} / {connection} / {version:?}"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_te_trailers_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-end", "2".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert!(h.get("x-hop").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-end").unwrap(), "2");
    }

    #[test]
    fn a_request_is_decided_and_forwarded_with_its_path_normalized_and_cookies_joined() {
        let mut request = Request::get("/public/../%61dmin?x=1")
            .header(header::COOKIE, "a=1")
            .header(header::COOKIE, "b=2")
            .body(())
            .unwrap();
        request
            .headers_mut()
            .append(header::COOKIE, "c=3".parse().unwrap());
        assert_eq!(normalize(&mut request), Ok(()));
        assert_eq!(request.uri().path(), "/admin");
        assert_eq!(request.uri().query(), Some("x=1"));
        assert_eq!(request.headers()[header::COOKIE], "a=1; b=2; c=3");
    }

    #[test]
    fn a_denial_is_a_403_or_a_grpc_permission_denied() {
        let plain = denied(false);
        assert_eq!(plain.status(), StatusCode::FORBIDDEN);
        let grpc = denied(true);
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "7");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        assert!(is_grpc(&h));
    }
}
