//! The admin listener (loopback by default): `/live`, `/ready`, `/metrics`, `/config`, and
//! `POST /shutdown` (alias `/quitquitquit`) so a Job's main container can end the sidecar.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener;
use crate::metrics::Metrics;

/// What the admin endpoints report on, shared with the rest of the proxy.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Every start-up step is done (registration, certificates, roots, listeners, intentions).
    started: AtomicBool,
    /// Drain has begun: not ready any more.
    draining: AtomicBool,
    /// The effective configuration as JSON (no secrets).
    config_json: std::sync::Mutex<String>,
    /// Fired by `POST /shutdown`.
    pub shutdown_requested: CancellationToken,
    /// Every task of the proxy, counted at each scrape.
    tasks: TaskTracker,
}

impl AdminState {
    pub(crate) fn new(metrics: Arc<Metrics>, config_json: String, tasks: TaskTracker) -> Self {
        AdminState {
            metrics,
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            config_json: std::sync::Mutex::new(config_json),
            shutdown_requested: CancellationToken::new(),
            tasks,
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.started.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn set_started(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.metrics.set_ready(self.is_ready());
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.set_ready(false);
    }

    pub(crate) fn set_config_json(&self, json: String) {
        *self
            .config_json
            .lock()
            .expect("config lock is never poisoned: no panics while held") = json;
    }

    fn config_json(&self) -> String {
        self.config_json
            .lock()
            .expect("config lock is never poisoned")
            .clone()
    }
}

/// Serves the admin endpoints on `listener` until `stop` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    listener::serve(listener, "admin", &stop, &tasks, |stream, _| {
        let state = state.clone();
        let stop = stop.clone();
        Some(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                result = conn => if let Err(e) = result { tracing::debug!(error = %e, "admin connection ended") },
            }
        })
    })
    .await;
}

fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/live") | (&Method::HEAD, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") | (&Method::HEAD, "/ready") => {
            if state.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if state.draining.load(Ordering::SeqCst) {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: start-up not finished\n",
                )
            }
        }
        (&Method::GET, "/metrics") => Response::builder()
            .status(StatusCode::OK)
            .header(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from({
                state.metrics.set_tasks(state.tasks.len());
                state.metrics.encode()
            })))
            .expect("static response parts are valid"),
        (&Method::GET, "/config") => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(state.config_json())))
            .expect("static response parts are valid"),
        (&Method::POST, "/shutdown") | (&Method::POST, "/quitquitquit") => {
            tracing::info!(path, "shutdown requested on the admin listener");
            state.shutdown_requested.cancel();
            text(StatusCode::OK, "shutting down\n")
        }
        (_, "/shutdown") | (_, "/quitquitquit") => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            r.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            r
        }
        (_, "/live") | (_, "/ready") | (_, "/metrics") | (_, "/config") => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /ready, /live, /metrics, /config, POST /shutdown\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

/// `--check-ready`: GET /ready on the admin listener; true if it answers 200.
pub async fn check_ready(admin: SocketAddr) -> bool {
    let target = if admin.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if admin.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, admin.port())
    } else {
        admin
    };
    let url = format!("http://{target}/ready");
    tandem_certs::tls::install_default();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    matches!(client.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK)
}
