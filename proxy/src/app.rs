//! Building and running a proxy: the start-up sequence, the tasks it owns, drain and stop.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigErrors, Settings, Upstream};
use crate::connections::{Connections, DataPath, End};
use crate::consul::{ConsulClient, ConsulError};
use crate::discovery::{self, Discovery};
use crate::identity::{self, TlsState};
use crate::inbound::{self, Inbound};
use crate::intentions;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::protocol;
use crate::registration::{self, Registration};
use crate::watcher::{AgentLink, WatchContext};

/// Why a proxy did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The command line or environment is malformed.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The Consul client could not be built (a bad CA bundle).
    #[error("{0}")]
    Consul(#[from] ConsulError),
    /// Interrupted, or stopped, before start-up finished.
    #[error("stopped before start-up finished")]
    Stopped,
    /// The agent's leaf certificate names no service SPIFFE ID.
    #[error("the agent's leaf certificate names no service SPIFFE ID")]
    NoIdentity,
}

/// A running proxy. Dropping it stops every task at once without deregistering (like a
/// crash); [`Proxy::shutdown`] and [`Proxy::drain`] stop it properly.
pub struct Proxy {
    settings: Arc<Settings>,
    public_addr: Option<SocketAddr>,
    /// Each upstream with its bound local listener, in `--upstreams` order.
    upstream_addrs: Vec<(Upstream, SocketAddr)>,
    admin_addr: SocketAddr,
    state: Arc<AdminState>,
    client: ConsulClient,
    registration: Option<Registration>,
    connections: Arc<Connections>,
    /// Stops accepting inbound connections.
    stop_inbound: CancellationToken,
    /// Stops the upstream listeners.
    stop_outbound: CancellationToken,
    /// Stops the watches and the admin listener.
    stop_all: CancellationToken,
    tasks: TaskTracker,
    /// Fired when the proxy has fully stopped.
    stopped: CancellationToken,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("service", &self.settings.service)
            .field("public_addr", &self.public_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Resolves `config` (reading the process environment) and starts a proxy; returns once it is
/// ready: registered, certificates and roots loaded, listeners bound, first intentions known.
pub async fn start(config: Config) -> Result<Proxy, StartError> {
    let settings = config.resolve(&|name| std::env::var(name).ok())?;
    start_with(settings, CancellationToken::new()).await
}

/// Starts a proxy from already resolved settings, in the start-up order of
/// `docs/ARCHITECTURE.md`. Cancelling `interrupt` before it is ready (a SIGTERM during
/// start-up) ends the start-up with [`StartError::Stopped`], its registrations removed and its
/// tasks stopped; once it is ready, `interrupt` is ignored (drain or shut the proxy down).
pub async fn start_with(
    settings: Settings,
    interrupt: CancellationToken,
) -> Result<Proxy, StartError> {
    let settings = Arc::new(settings);
    let client = ConsulClient::new(
        settings.consul.http_addr.clone(),
        settings.consul.token.clone(),
        settings.consul.ca_pem.as_deref(),
    )?;
    let ctx = WatchContext {
        client: client.clone(),
        metrics: Arc::new(Metrics::new()),
        link: AgentLink::default(),
        retry_max: settings.retry_max,
        stop: CancellationToken::new(),
    };
    let tasks = TaskTracker::new();
    // A start-up that fails, is interrupted or is dropped half way stops what it spawned.
    let unstarted = ctx.stop.clone().drop_guard();
    let ready = CancellationToken::new();
    tasks.spawn(forward_interrupt(
        interrupt,
        ctx.stop.clone(),
        ready.clone(),
    ));

    let (admin_listener, listeners) = Listeners::bind(&settings).await?;
    let state = Arc::new(AdminState::new(
        ctx.metrics.clone(),
        config_json(&settings, &listeners, None),
        tasks.clone(),
    ));
    tasks.spawn(admin::serve(
        admin_listener,
        state.clone(),
        ctx.stop.clone(),
        tasks.clone(),
    ));
    tracing::info!(admin.addr = %listeners.admin_addr, consul = %settings.consul.http_addr, "waiting for the consul agent");

    // The datacenter comes from our own leaf's SPIFFE ID: `/v1/agent/self` needs `agent:read`,
    // which the token of a service identity (what consul-k8s gives a pod) does not grant.
    let identity = identity::start(&ctx, settings.service.as_str(), settings.tls_resumption)
        .await
        .ok_or(StartError::Stopped)?;
    let datacenter = match identity.state.borrow().local.as_ref() {
        Some(id) => id.datacenter.clone(),
        None => return Err(StartError::NoIdentity),
    };
    tasks.spawn(identity.task);
    tracing::info!(datacenter = %datacenter, "consul agent reached");
    state.set_config_json(config_json(&settings, &listeners, Some(&datacenter)));

    let registration = settings.registration.register.then(|| {
        registration::build(
            &settings,
            listeners.public_addr,
            &listeners.upstream_addrs(),
        )
    });
    if let Some(reg) = &registration {
        match reg.start(&ctx, settings.registration.check_interval).await {
            Some(keep) => tasks.spawn(keep),
            None => {
                // Interrupted while registering: one of the two may be registered already.
                deregister(reg, &client).await;
                return Err(StartError::Stopped);
            }
        };
    }

    let serving = serve(
        &settings,
        &ctx,
        &tasks,
        listeners,
        identity.state,
        &datacenter,
    )
    .await;
    let (data, upstreams, public_addr, admin_addr) = match serving {
        Ok(serving) => serving,
        Err(e) => {
            if let Some(reg) = &registration {
                deregister(reg, &client).await;
            }
            return Err(e);
        }
    };

    unstarted.disarm();
    ready.cancel();
    state.set_started();
    tracing::info!(
        service = %settings.service,
        public.addr = public_addr.map(|a| a.to_string()).as_deref().unwrap_or("-"),
        admin.addr = %admin_addr,
        upstreams = %upstreams.iter().map(|(u, a)| format!("{u}={a}")).collect::<Vec<_>>().join(","),
        "proxy ready"
    );
    Ok(Proxy {
        settings,
        public_addr,
        upstream_addrs: upstreams,
        admin_addr,
        state,
        client,
        registration,
        connections: data.connections,
        stop_inbound: data.stop_inbound,
        stop_outbound: data.stop_outbound,
        stop_all: ctx.stop,
        tasks,
        stopped: CancellationToken::new(),
    })
}

/// Ends the start-up when `interrupt` fires before the proxy is `ready`.
async fn forward_interrupt(
    interrupt: CancellationToken,
    stop: CancellationToken,
    ready: CancellationToken,
) {
    tokio::select! {
        _ = interrupt.cancelled() => stop.cancel(),
        _ = stop.cancelled() => {}
        _ = ready.cancelled() => {}
    }
}

/// The listeners, bound first: a port in use is a start-up error, and a port 0 must be known
/// before registering. Nothing is accepted until the proxy is ready.
struct Listeners {
    admin_addr: SocketAddr,
    /// Bound even without --service-port, as Consul's own proxies do: the sidecar's TCP check
    /// then passes, and a caller gets a refusal rather than nothing.
    public: TcpListener,
    public_addr: Option<SocketAddr>,
    upstreams: Vec<(Upstream, TcpListener, SocketAddr)>,
}

impl Listeners {
    /// Binds every listener; the admin listener is returned on its own (it serves at once).
    async fn bind(settings: &Settings) -> Result<(TcpListener, Self), StartError> {
        let (admin, admin_addr) = bind("admin listener", settings.admin_listener).await?;
        let (public, public_addr) = bind("public listener", settings.inbound.listener).await?;
        let mut upstreams = Vec::new();
        for u in &settings.outbound.upstreams {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, u.local_port));
            let (listener, bound) = bind(&format!("upstream {}", u.name), addr).await?;
            upstreams.push((u.clone(), listener, bound));
        }
        let listeners = Listeners {
            admin_addr,
            public,
            public_addr: Some(public_addr),
            upstreams,
        };
        Ok((admin, listeners))
    }

    fn upstream_addrs(&self) -> Vec<(Upstream, SocketAddr)> {
        self.upstreams
            .iter()
            .map(|(u, _, a)| (u.clone(), *a))
            .collect()
    }
}

/// What [`serve`] started: the data path's handles and the bound addresses.
type Serving = (
    Stopping,
    Vec<(Upstream, SocketAddr)>,
    Option<SocketAddr>,
    SocketAddr,
);

/// The data path's handles a [`Proxy`] stops with.
struct Stopping {
    connections: Arc<Connections>,
    /// Stops accepting inbound connections.
    stop_inbound: CancellationToken,
    /// Stops the upstream listeners.
    stop_outbound: CancellationToken,
}

/// First intentions and the service's protocol → first instances of each upstream → the
/// watches and accept loops.
async fn serve(
    settings: &Settings,
    ctx: &WatchContext,
    tasks: &TaskTracker,
    listeners: Listeners,
    tls: watch::Receiver<Arc<TlsState>>,
    datacenter: &str,
) -> Result<Serving, StartError> {
    let service = settings.service.as_str();
    let intentions = intentions::start(ctx, service, settings.inbound.default_intention_policy)
        .await
        .ok_or(StartError::Stopped)?;
    let protocol = protocol::start(ctx, service)
        .await
        .ok_or(StartError::Stopped)?;
    let discovery = Discovery::new(
        ctx,
        datacenter,
        settings.outbound.prepared_query_poll_interval,
    );
    let mut upstreams = Vec::new();
    for (u, listener, bound) in listeners.upstreams {
        let endpoints = discovery.start(&u).await.ok_or(StartError::Stopped)?;
        upstreams.push((u, listener, bound, endpoints));
    }

    tasks.spawn(intentions.task);
    tasks.spawn(protocol.task);
    let data = DataPath::new(tls, ctx.metrics.clone(), settings.limits).with_tunnel(
        settings.tunnel,
        tasks.clone(),
        ctx.stop.clone(),
    );
    let stopping = Stopping {
        connections: data.connections.clone(),
        stop_inbound: CancellationToken::new(),
        stop_outbound: CancellationToken::new(),
    };
    if settings.inbound.close_denied_connections {
        tasks.spawn(inbound::enforce(
            intentions.state.clone(),
            data.connections.clone(),
            ctx.metrics.clone(),
            ctx.stop.clone(),
        ));
    }
    let inbound = Inbound::with_protocol(
        &settings.inbound,
        intentions.state,
        protocol.state,
        data.clone(),
    );
    tasks.spawn(inbound.serve(
        listeners.public,
        stopping.stop_inbound.clone(),
        tasks.clone(),
    ));
    let mut bound = Vec::new();
    for (u, listener, addr, endpoints) in upstreams {
        tasks.spawn(endpoints.task);
        let outbound = Outbound::new(discovery::target(&u), endpoints.state, data.clone());
        tasks.spawn(outbound.serve(listener, stopping.stop_outbound.clone(), tasks.clone()));
        bound.push((u, addr));
    }
    Ok((stopping, bound, listeners.public_addr, listeners.admin_addr))
}

impl Proxy {
    /// The bound inbound mTLS listener (bound with or without `--service-port`).
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public_addr
    }

    /// The bound local listener of upstream `name` (the first, if it is listed more than once).
    pub fn upstream_addr(&self, name: &str) -> Option<SocketAddr> {
        self.upstream_addrs
            .iter()
            .find(|(u, _)| u.name.as_str() == name)
            .map(|(_, a)| *a)
    }

    /// Every upstream with its bound local listener, in `--upstreams` order.
    pub fn upstream_listeners(&self) -> &[(Upstream, SocketAddr)] {
        &self.upstream_addrs
    }

    /// The bound admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The settings the proxy runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Open proxied connections (both directions).
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Resolves when `POST /shutdown` (or `/quitquitquit`) was called on the admin listener.
    pub async fn shutdown_requested(&self) {
        self.state.shutdown_requested.cancelled().await
    }

    /// Stops now: not ready, deregister, close listeners and every connection, stop the
    /// watches.
    pub async fn shutdown(self) {
        self.state.set_draining();
        self.stop_inbound.cancel();
        self.deregister().await;
        self.stop_outbound.cancel();
        self.connections.stop_all(End::Shutdown);
        self.finish().await;
    }

    /// Graceful drain (SIGTERM): not ready, stop accepting inbound, deregister, let open
    /// connections finish until `deadline` while the upstream listeners keep working for the
    /// app, then close what is left and stop.
    pub async fn drain(self, deadline: Duration) {
        tracing::info!(deadline = %humantime::format_duration(deadline), open = self.connections.len(), "draining");
        self.state.set_draining();
        self.stop_inbound.cancel();
        let until = tokio::time::Instant::now() + deadline;
        tokio::select! {
            _ = self.deregister() => {}
            _ = tokio::time::sleep_until(until) => tracing::warn!("deregistration did not finish before the drain deadline"),
        }
        tokio::select! {
            _ = self.connections.wait_empty() => tracing::info!("every connection finished"),
            _ = tokio::time::sleep_until(until) => {
                let n = self.connections.stop_all(End::DrainDeadline);
                tracing::warn!(open = n, "drain deadline reached: closing the remaining connections");
            }
        }
        self.stop_outbound.cancel();
        self.finish().await;
    }

    /// The drain deadline from the configuration.
    pub fn drain_deadline(&self) -> Duration {
        self.settings.drain_deadline
    }

    async fn deregister(&self) {
        if let Some(reg) = &self.registration {
            deregister(reg, &self.client).await;
        }
    }

    async fn finish(self) {
        self.stop_all.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 5s");
        }
        self.stopped.cancel();
        tracing::info!("proxy stopped");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !self.stopped.is_cancelled() {
            self.stop_inbound.cancel();
            self.stop_outbound.cancel();
            self.connections.stop_all(End::Shutdown);
            self.stop_all.cancel();
        }
    }
}

/// Removes both registrations, giving up (logged) after 5 s.
async fn deregister(registration: &Registration, client: &ConsulClient) {
    match tokio::time::timeout(Duration::from_secs(5), registration.deregister(client)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "deregistration failed"),
        Err(_) => tracing::warn!("deregistration did not finish within 5s"),
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let error = |source| StartError::Bind {
        what: what.to_string(),
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// What `/config` shows: the settings, the datacenter once known, the bound addresses.
fn config_json(settings: &Settings, listeners: &Listeners, datacenter: Option<&str>) -> String {
    let (public, admin) = (listeners.public_addr, listeners.admin_addr);
    let bound: serde_json::Map<String, serde_json::Value> = listeners
        .upstreams
        .iter()
        .map(|(u, _, a)| (u.to_string(), a.to_string().into()))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "settings": settings,
        "datacenter": datacenter,
        "bound": { "public": public.map(|a| a.to_string()), "admin": admin.to_string(), "upstreams": bound },
        "token": if settings.has_token() { "set (not shown)" } else { "none" },
    }))
    .expect("settings serialise to JSON")
}
