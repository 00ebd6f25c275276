//! The HTTPS admission webhook: `POST /mutate` and `GET /health/ready`.
//!
//! The serving certificate is a `watch` of `Arc<ServerConfig>`: each accepted connection takes
//! the current one, so a renewed certificate (files changed on disk, or a generated one
//! re-issued) is served without a restart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::review;
use crate::tls::{self, CertFiles, GeneratedCa, TlsError};
use crate::Injector;

/// Largest `AdmissionReview` accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client gets this long to send a request's headers, and again its body (the API server
/// gives up on a webhook after at most 30 s anyway).
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, polled every `reload_interval` and reloaded when they change.
    Files {
        /// The certificate and key files.
        files: CertFiles,
        /// How often they are read again to see whether they changed.
        reload_interval: Duration,
    },
    /// A CA made at start-up; its certificate is written to `ca_bundle_out`.
    Generated {
        /// DNS names and IP addresses the serving certificate is for.
        hosts: Vec<String>,
        /// Where the CA certificate (PEM, the webhook's `caBundle`) is written.
        ca_bundle_out: PathBuf,
        /// Lifetime of each serving certificate; a new one is issued after two thirds of it.
        validity: Duration,
    },
}

/// Everything [`start`] needs: `serve`'s flags, parsed.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address of the HTTPS listener (port 0 lets the OS pick).
    pub listen: SocketAddr,
    /// Where the serving certificate comes from.
    pub tls: TlsSource,
    /// What each admitted pod gets.
    pub injector: Injector,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate could not be loaded or made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The generated CA's certificate could not be written.
    #[error("cannot write the CA bundle to {path}: {source}")]
    WriteCaBundle {
        /// The `ca_bundle_out` path.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A running webhook; dropping it does not stop it, [`Webhook::shutdown`] does.
pub struct Webhook {
    addr: SocketAddr,
    ca_bundle: Option<PathBuf>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Webhook {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the generated CA bundle was written (with `--tls-auto-hosts`).
    pub fn ca_bundle_path(&self) -> Option<&PathBuf> {
        self.ca_bundle.as_ref()
    }

    /// Stops accepting, ends open connections and waits for every task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Loads or makes the certificate, binds, and serves until [`Webhook::shutdown`].
pub async fn start(config: ServeConfig) -> Result<Webhook, WebhookError> {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    let (initial, ca_bundle, renewer): (Arc<ServerConfig>, Option<PathBuf>, Option<_>) =
        match config.tls {
            TlsSource::Files {
                files,
                reload_interval,
            } => {
                let tls::LoadedPair {
                    config: server_config,
                    bytes: seen,
                } = files.load()?;
                (
                    server_config,
                    None,
                    Some(Renewer::Files(files, seen, reload_interval)),
                )
            }
            TlsSource::Generated {
                hosts,
                ca_bundle_out,
                validity,
            } => {
                let ca = GeneratedCa::generate(
                    "tandem-injector CA",
                    Duration::from_secs(10 * 365 * 86400),
                )?;
                let leaf = ca.issue_serving(&hosts, validity)?;
                write_ca_bundle(&ca_bundle_out, &ca.cert_pem())?;
                let server_config = tls::server_config(
                    leaf.cert_pem.as_bytes(),
                    leaf.key_pem.as_bytes(),
                    "generated certificate",
                )?;
                (
                    server_config,
                    Some(ca_bundle_out),
                    Some(Renewer::Generated(Arc::new(ca), hosts, validity)),
                )
            }
        };
    let (tx, rx) = watch::channel(initial);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| WebhookError::Bind {
        addr: config.listen,
        source,
    })?;

    match renewer {
        Some(Renewer::Files(files, seen, interval)) => {
            tasks.spawn(files.watch(seen, interval, tx, shutdown.clone()));
        }
        Some(Renewer::Generated(ca, hosts, validity)) => {
            tasks.spawn(tls::renew_generated(
                ca,
                hosts,
                validity,
                tx,
                shutdown.clone(),
            ));
        }
        None => {}
    }

    let injector = Arc::new(config.injector);
    tasks.spawn(accept_loop(
        listener,
        rx,
        injector,
        shutdown.clone(),
        tasks.clone(),
    ));

    Ok(Webhook {
        addr,
        ca_bundle,
        shutdown,
        tasks,
    })
}

enum Renewer {
    Files(CertFiles, Vec<u8>, Duration),
    Generated(Arc<GeneratedCa>, Vec<String>, Duration),
}

fn write_ca_bundle(path: &PathBuf, pem: &str) -> Result<(), WebhookError> {
    let err = |source| WebhookError::WriteCaBundle {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, pem).map_err(err)
}

async fn accept_loop(
    listener: TcpListener,
    configs: watch::Receiver<Arc<ServerConfig>>,
    injector: Arc<Injector>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let server_config = configs.borrow().clone();
        let span = tracing::debug_span!("connection", client.addr = %peer);
        let conn = connection(
            stream,
            peer,
            server_config,
            injector.clone(),
            shutdown.clone(),
        );
        tasks.spawn(conn.instrument(span));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    server_config: Arc<ServerConfig>,
    injector: Arc<Injector>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(client.addr = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client.addr = %peer, "TLS handshake timed out");
            return;
        }
    };
    let service = hyper::service::service_fn(move |req| {
        let injector = injector.clone();
        async move { Ok::<_, Infallible>(route(&injector, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

async fn route(injector: &Injector, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => mutate(injector, req).await,
        (_, "/mutate") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST for /mutate\n"),
        (&Method::GET, "/health/ready") => text(StatusCode::OK, "ok\n"),
        (_, path) => text(StatusCode::NOT_FOUND, &format!("no route for {path}\n")),
    }
}

async fn mutate(injector: &Injector, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let read = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    let body = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read).await {
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the AdmissionReview body was not received in time\n",
            )
        }
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the AdmissionReview is larger than {MAX_BODY_BYTES} bytes\n"),
                );
            }
            return text(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}\n"),
            );
        }
    };
    match review::respond(injector, &body) {
        Ok((review, _verdict)) => {
            let bytes = serde_json::to_vec(&review).expect("invariant: a Value serializes to JSON");
            Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(bytes)))
                .expect("invariant: static status and header are valid")
        }
        Err(e) => {
            tracing::info!(error = %e, "bad AdmissionReview");
            text(StatusCode::BAD_REQUEST, &format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("invariant: static status and header are valid")
}
