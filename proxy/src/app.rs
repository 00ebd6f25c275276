//! Building and running a proxy: the start-up sequence, the tasks it owns, drain and stop.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigErrors, Settings};
use crate::connections::Connections;
use crate::consul::{ConsulClient, ConsulError};
use crate::discovery::{self, Balancer, Discovery};
use crate::identity::IdentityWatch;
use crate::inbound::{self, Inbound};
use crate::intentions;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::registration::{self, Registration};
use crate::watcher;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Consul(#[from] ConsulError),
    #[error("stopped before start-up finished")]
    Stopped,
    #[error("the agent's leaf certificate names no service SPIFFE ID")]
    NoIdentity,
}

/// A running proxy. Dropping it stops every task at once without deregistering (like a
/// crash); [`Proxy::shutdown`] and [`Proxy::drain`] stop it properly.
pub struct Proxy {
    settings: Arc<Settings>,
    public_addr: Option<SocketAddr>,
    /// Each upstream with its bound local listener, in `--upstreams` order.
    upstream_addrs: Vec<(crate::config::Upstream, SocketAddr)>,
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
    start_with(settings).await
}

/// Starts a proxy from already resolved settings.
pub async fn start_with(settings: Settings) -> Result<Proxy, StartError> {
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let client = ConsulClient::new(
        settings.consul_http_addr.clone(),
        settings.token.clone(),
        settings.consul_ca_pem.as_deref(),
    )?;
    let stop_all = CancellationToken::new();
    let tasks = TaskTracker::new();
    // A start-up that fails or is dropped half way (SIGTERM before ready) stops what it spawned.
    let unstarted = stop_all.clone().drop_guard();

    // Listeners first: a port in use is a start-up error, and port 0 must be known before
    // registering. Nothing is accepted until the proxy is ready.
    let admin_listener = bind("admin listener", settings.admin_listener).await?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "admin listener".into(),
            addr: settings.admin_listener,
            source,
        })?;
    // Bound even without --service-port, as Consul's own proxies do: the sidecar's TCP check
    // then passes, and a caller gets a refusal rather than nothing.
    let public_listener = bind("public listener", settings.public_listener).await?;
    let public_addr = public_listener.local_addr().ok();
    let mut upstream_listeners = Vec::new();
    for u in &settings.upstreams {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, u.local_port));
        let listener = bind(&format!("upstream {}", u.name), addr).await?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind {
            what: u.name.to_string(),
            addr,
            source,
        })?;
        upstream_listeners.push((u.clone(), listener, bound));
    }

    let state = Arc::new(AdminState::new(
        metrics.clone(),
        config_json(
            &settings,
            public_addr,
            &upstream_listeners,
            admin_addr,
            None,
        ),
    ));
    tasks.spawn(admin::serve(
        admin_listener,
        state.clone(),
        stop_all.clone(),
        tasks.clone(),
    ));
    tracing::info!(admin.addr = %admin_addr, consul = %settings.consul_http_addr, "waiting for the consul agent");

    // Certificates and roots first (retrying with backoff while the agent is down). The
    // datacenter comes from our own leaf's SPIFFE ID: `/v1/agent/self` needs `agent:read`,
    // which the token of a service identity (what consul-k8s gives a pod) does not grant.
    let identity = IdentityWatch::start(
        client.clone(),
        settings.service.to_string(),
        metrics.clone(),
        settings.retry_max,
        &stop_all,
    )
    .await
    .ok_or(StartError::Stopped)?;
    let datacenter = match identity.current().local.as_ref() {
        Some(id) => id.datacenter.clone(),
        None => return Err(StartError::NoIdentity),
    };
    tracing::info!(datacenter = %datacenter, "consul agent reached");
    state.set_config_json(config_json(
        &settings,
        public_addr,
        &upstream_listeners,
        admin_addr,
        Some(&datacenter),
    ));

    // Registration.
    let upstream_addrs: Vec<_> = upstream_listeners
        .iter()
        .map(|(u, _, a)| (u.clone(), *a))
        .collect();
    let registration = settings
        .register
        .then(|| registration::build(&settings, public_addr, &upstream_addrs));
    if let Some(reg) = &registration {
        watcher::retry(
            "registration",
            &metrics,
            settings.retry_max,
            &stop_all,
            || reg.register(&client, &metrics),
        )
        .await
        .ok_or(StartError::Stopped)?;
    }

    // Intentions, upstream instances.
    let (first_intentions, intentions_index) = intentions::first(
        &client,
        settings.service.as_str(),
        settings.default_intention_policy,
        &metrics,
        settings.retry_max,
        &stop_all,
    )
    .await
    .ok_or(StartError::Stopped)?;
    metrics.intentions(first_intentions.len());
    let (intentions_tx, intentions_rx) = watch::channel(Arc::new(first_intentions));
    let discovery = Discovery {
        client: client.clone(),
        local_dc: datacenter.clone(),
        metrics: metrics.clone(),
        retry_max: settings.retry_max,
        query_poll: settings.prepared_query_poll_interval,
        stop: stop_all.clone(),
    };
    let mut discoveries = Vec::new();
    for (u, listener, bound) in upstream_listeners {
        let found = discovery.first(&u).await.ok_or(StartError::Stopped)?;
        metrics.upstream_instances(&discovery::target(&u), found.endpoints.len());
        let (tx, rx) = watch::channel(Arc::new(found.endpoints.clone()));
        discoveries.push((u, listener, bound, tx, rx, found));
    }

    // The watches.
    tasks.spawn(identity.clone().watch_roots(stop_all.clone()));
    tasks.spawn(identity.clone().watch_leaf(stop_all.clone()));
    tasks.spawn(intentions::watch(
        client.clone(),
        settings.service.to_string(),
        intentions_tx,
        intentions_index,
        settings.default_intention_policy,
        metrics.clone(),
        settings.retry_max,
        stop_all.clone(),
    ));
    if let Some(reg) = registration.clone() {
        let (client, metrics, settings, stop) = (
            client.clone(),
            metrics.clone(),
            settings.clone(),
            stop_all.clone(),
        );
        tasks.spawn(async move {
            reg.keep(
                &client,
                &metrics,
                settings.registration_check_interval,
                settings.retry_max,
                stop,
            )
            .await
        });
    }

    // The data path.
    let connections = Arc::new(Connections::default());
    let limiter = Arc::new(Semaphore::new(settings.max_connections as usize));
    let stop_inbound = CancellationToken::new();
    let stop_outbound = CancellationToken::new();
    {
        let inbound = Arc::new(Inbound {
            service: settings.service.to_string(),
            app: settings
                .service_port
                .map(|port| SocketAddr::new(settings.service_address, port)),
            handshake_timeout: settings.handshake_timeout,
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            tls: identity.subscribe(),
            intentions: intentions_rx.clone(),
            metrics: metrics.clone(),
            limiter: limiter.clone(),
            connections: connections.clone(),
        });
        tasks.spawn(inbound.serve(public_listener, stop_inbound.clone(), tasks.clone()));
    }
    if settings.close_denied_connections {
        tasks.spawn(inbound::enforce(
            intentions_rx,
            connections.clone(),
            metrics.clone(),
            stop_all.clone(),
        ));
    }
    let mut upstream_map = Vec::new();
    for (u, listener, bound, tx, rx, found) in discoveries {
        tasks.spawn(discovery.clone().watch(u.clone(), tx, found));
        let outbound = Arc::new(Outbound {
            upstream: discovery::target(&u),
            balancer: Balancer::new(rx),
            handshake_timeout: settings.handshake_timeout,
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            tls: identity.subscribe(),
            metrics: metrics.clone(),
            limiter: limiter.clone(),
            connections: connections.clone(),
        });
        tasks.spawn(outbound.serve(listener, stop_outbound.clone(), tasks.clone()));
        upstream_map.push((u, bound));
    }

    unstarted.disarm();
    state.set_started();
    tracing::info!(
        service = %settings.service,
        public.addr = public_addr.map(|a| a.to_string()).as_deref().unwrap_or("-"),
        admin.addr = %admin_addr,
        upstreams = %upstream_map.iter().map(|(u, a)| format!("{u}={a}")).collect::<Vec<_>>().join(","),
        "proxy ready"
    );

    let proxy = Proxy {
        settings,
        public_addr,
        upstream_addrs: upstream_map,
        admin_addr,
        state,
        client,
        registration,
        connections,
        stop_inbound,
        stop_outbound,
        stop_all,
        tasks,
        stopped: CancellationToken::new(),
    };
    Ok(proxy)
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
    pub fn upstream_listeners(&self) -> &[(crate::config::Upstream, SocketAddr)] {
        &self.upstream_addrs
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

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
        self.connections.stop_all("shutdown");
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
                let n = self.connections.stop_all("drain_deadline");
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
            if let Err(e) =
                tokio::time::timeout(Duration::from_secs(5), reg.deregister(&self.client))
                    .await
                    .unwrap_or_else(|_| Err(ConsulError::Client("deregistration timed out".into())))
            {
                tracing::warn!(error = %e, "deregistration failed");
            }
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
            self.connections.stop_all("shutdown");
            self.stop_all.cancel();
        }
    }
}

/// Best-effort removal of the registrations a start-up interrupted by a signal may have made
/// (unknown IDs are fine; failures are only logged).
pub async fn deregister_unstarted(settings: &Settings) {
    if !settings.register {
        return;
    }
    let Ok(client) = ConsulClient::new(
        settings.consul_http_addr.clone(),
        settings.token.clone(),
        settings.consul_ca_pem.as_deref(),
    ) else {
        return;
    };
    let ids = [settings.sidecar_id(), settings.service_id.clone()];
    for id in ids {
        match tokio::time::timeout(Duration::from_secs(2), client.deregister_service(&id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(service.id = %id, error = %e, "deregistration failed"),
            Err(_) => tracing::warn!(service.id = %id, "deregistration timed out"),
        }
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: what.to_string(),
            addr,
            source,
        })
}

fn config_json(
    settings: &Settings,
    public: Option<SocketAddr>,
    upstreams: &[(crate::config::Upstream, TcpListener, SocketAddr)],
    admin: SocketAddr,
    datacenter: Option<&str>,
) -> String {
    let bound: serde_json::Map<String, serde_json::Value> = upstreams
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
