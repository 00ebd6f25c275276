//! Prometheus metrics (text format on the admin listener's `/metrics`). Every label has a
//! bounded set of values: directions, fixed reasons, the configured upstream names, watch names.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which side of the proxy a connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From another proxy over mTLS to our app.
    Inbound,
    /// From our app to an upstream over mTLS.
    Outbound,
}

impl Direction {
    /// The `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    direction: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    direction: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamReasonLabels {
    upstream: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeniedLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchLabels {
    watch: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 50 us .. ~13 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 18))
}

fn connect_histogram() -> Histogram {
    // 0.5 ms .. ~8 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The proxy's metrics, served on `/metrics`.
pub struct Metrics {
    registry: Registry,
    opened: Family<DirectionLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
    active: Family<DirectionLabels, Gauge>,
    bytes_received: Family<DirectionLabels, Counter>,
    bytes_sent: Family<DirectionLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    handshakes: Family<KindLabels, Counter>,
    authorizations: Family<DecisionLabels, Counter>,
    revoked: Counter,
    refused: Family<ReasonLabels, Counter>,
    upstream_connect: HistogramFamily<UpstreamLabels>,
    upstream_failures: Family<UpstreamReasonLabels, Counter>,
    cert_expiry: Gauge<f64, AtomicU64>,
    roots: Gauge,
    leaf_rotations: Counter,
    root_updates: Counter,
    upstream_instances: Family<UpstreamLabels, Gauge>,
    intentions: Gauge,
    watch_errors: Family<WatchLabels, Counter>,
    watch_staleness: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    watch_last_success: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    stale_since: Mutex<HashMap<&'static str, Instant>>,
    registrations: Counter,
    ready: Gauge,
    probes: Counter,
    upstream_waits: Family<UpstreamLabels, Counter>,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Histogram,
    http_denied: Family<DeniedLabels, Counter>,
    tunnels_opened: Family<DirectionLabels, Counter>,
    tunnels_active: Family<DirectionLabels, Gauge>,
    tunnel_streams: Family<DirectionLabels, Counter>,
    tunnel_fallbacks: Family<ReasonLabels, Counter>,
    tasks: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tandem");
        let m = Metrics {
            registry: Registry::default(),
            opened: Family::default(),
            closed: Family::default(),
            active: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            handshake_failures: Family::default(),
            handshakes: Family::default(),
            authorizations: Family::default(),
            revoked: Counter::default(),
            refused: Family::default(),
            upstream_connect: Family::new_with_constructor(connect_histogram as fn() -> Histogram),
            upstream_failures: Family::default(),
            cert_expiry: Gauge::default(),
            roots: Gauge::default(),
            leaf_rotations: Counter::default(),
            root_updates: Counter::default(),
            upstream_instances: Family::default(),
            intentions: Gauge::default(),
            watch_errors: Family::default(),
            watch_staleness: Family::default(),
            watch_last_success: Family::default(),
            stale_since: Mutex::new(HashMap::new()),
            registrations: Counter::default(),
            ready: Gauge::default(),
            probes: Counter::default(),
            upstream_waits: Family::default(),
            http_requests: Family::default(),
            http_duration: request_histogram(),
            http_denied: Family::default(),
            tasks: Gauge::default(),
            tunnels_opened: Family::default(),
            tunnels_active: Family::default(),
            tunnel_streams: Family::default(),
            tunnel_fallbacks: Family::default(),
        };
        registry.register(
            "tunnels_opened",
            "Tunnels (one mTLS HTTP/2 connection carrying many app connections, --tunnel) established, by direction",
            m.tunnels_opened.clone(),
        );
        registry.register(
            "tunnels_active",
            "Tunnels open now, by direction",
            m.tunnels_active.clone(),
        );
        registry.register(
            "tunnel_streams",
            "App connections carried as a stream of a tunnel, by direction (each is also counted in connections_opened)",
            m.tunnel_streams.clone(),
        );
        registry.register(
            "tunnel_fallbacks",
            "Outbound connections to a tunnel-advertising instance that got their own mTLS connection instead, by reason: not_negotiated (its handshake did not select the tunnel protocol), plain (it declined the tunnel, or establishing one failed, recently), full (every allowed tunnel at its stream limit)",
            m.tunnel_fallbacks.clone(),
        );
        registry.register(
            "tasks",
            "Live tasks of the proxy (watches, accept loops, one or two per connection): flat under a steady load, or something is leaking",
            m.tasks.clone(),
        );
        registry.register(
            "http_requests",
            "Inbound HTTP requests of a service whose protocol is http, http2 or grpc, by method and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Inbound HTTP requests, from the request's start to the end of its response",
            m.http_duration.clone(),
        );
        registry.register(
            "http_requests_denied",
            "Inbound HTTP requests answered 403 (gRPC: PERMISSION_DENIED), by what decided: an L4 intention, an L7 permission, or the default",
            m.http_denied.clone(),
        );
        registry.register(
            "connections_opened",
            "Connections accepted, by direction",
            m.opened.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections ended, by direction and end reason",
            m.closed.clone(),
        );
        registry.register(
            "connections_active",
            "Connections open now, by direction",
            m.active.clone(),
        );
        registry.register(
            "bytes_received",
            "Bytes read from the connection's initiator (inbound: the calling proxy; outbound: the local app)",
            m.bytes_received.clone(),
        );
        registry.register(
            "bytes_sent",
            "Bytes written back to the connection's initiator",
            m.bytes_sent.clone(),
        );
        registry.register(
            "tls_handshakes",
            "Finished mTLS handshakes, by direction and kind: full (certificates sent and verified) or resumed (a session ticket of an earlier full handshake)",
            m.handshakes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes, by direction and reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "authorizations",
            "Inbound intention decisions (allowed or denied)",
            m.authorizations.clone(),
        );
        registry.register(
            "connections_revoked",
            "Open inbound connections closed because a changed intention denies them",
            m.revoked.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused before any work, by reason",
            m.refused.clone(),
        );
        registry.register(
            "upstream_connect_duration_seconds",
            "Time to connect and complete mTLS with an upstream instance",
            m.upstream_connect.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Failed attempts to reach an upstream instance, by upstream and reason",
            m.upstream_failures.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which the current leaf certificate expires",
            m.cert_expiry.clone(),
        );
        registry.register(
            "inbound_probes",
            "Inbound TCP connections closed before sending a byte (health checks such as Consul's TCP check); their end is \"probe\", never a handshake failure",
            m.probes.clone(),
        );
        registry.register(
            "upstream_waits",
            "App connections held because the upstream had no usable instance yet, per upstream",
            m.upstream_waits.clone(),
        );
        registry.register("trust_roots", "CA roots currently trusted", m.roots.clone());
        registry.register(
            "leaf_rotations",
            "New leaf certificates taken into use after start-up",
            m.leaf_rotations.clone(),
        );
        registry.register(
            "root_updates",
            "Changes of the trusted CA roots after start-up",
            m.root_updates.clone(),
        );
        registry.register(
            "agent_watch_errors",
            "Failed queries to the Consul agent, by watch",
            m.watch_errors.clone(),
        );
        registry.register(
            "agent_watch_staleness_seconds",
            "Seconds since the watch last had a good answer, 0 while it is healthy",
            m.watch_staleness.clone(),
        );
        registry.register(
            "agent_watch_last_success_timestamp_seconds",
            "Unix time of the watch's last good answer",
            m.watch_last_success.clone(),
        );
        registry.register(
            "upstream_instances",
            "Instances of each upstream the proxy can dial (the last known list is kept when the agent lists none)",
            m.upstream_instances.clone(),
        );
        registry.register(
            "intentions",
            "Intentions that apply to this service as a destination",
            m.intentions.clone(),
        );
        registry.register(
            "registrations",
            "Service registrations sent to the agent",
            m.registrations.clone(),
        );
        registry.register(
            "ready",
            "1 when every start-up step is done and the proxy is not draining",
            m.ready.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        {
            let stale = self
                .stale_since
                .lock()
                .expect("metrics lock is never poisoned: no panics while held");
            for (watch, since) in stale.iter() {
                self.watch_staleness
                    .get_or_create(&WatchLabels { watch })
                    .set(since.elapsed().as_secs_f64());
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn connection_opened(&self, d: Direction) {
        let l = DirectionLabels {
            direction: d.as_str(),
        };
        self.opened.get_or_create(&l).inc();
        self.active.get_or_create(&l).inc();
    }

    pub(crate) fn connection_closed(
        &self,
        d: Direction,
        reason: &'static str,
        received: u64,
        sent: u64,
    ) {
        let l = DirectionLabels {
            direction: d.as_str(),
        };
        self.active.get_or_create(&l).dec();
        self.closed
            .get_or_create(&ReasonLabels {
                direction: d.as_str(),
                reason,
            })
            .inc();
        self.bytes_received.get_or_create(&l).inc_by(received);
        self.bytes_sent.get_or_create(&l).inc_by(sent);
    }

    /// A finished mTLS handshake: `resumed` when a session ticket skipped the certificates.
    pub(crate) fn handshake_done(&self, d: Direction, resumed: bool) {
        self.handshakes
            .get_or_create(&KindLabels {
                direction: d.as_str(),
                kind: if resumed { "resumed" } else { "full" },
            })
            .inc();
    }

    pub(crate) fn handshake_failed(&self, d: Direction, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels {
                direction: d.as_str(),
                reason,
            })
            .inc();
    }

    /// A tunnel established; the returned guard counts it open until dropped.
    pub(crate) fn tunnel_opened(self: &Arc<Self>, d: Direction) -> TunnelOpen {
        let l = DirectionLabels {
            direction: d.as_str(),
        };
        self.tunnels_opened.get_or_create(&l).inc();
        self.tunnels_active.get_or_create(&l).inc();
        TunnelOpen {
            metrics: self.clone(),
            direction: d,
        }
    }

    /// An app connection carried as a stream of a tunnel.
    pub(crate) fn tunnel_stream(&self, d: Direction) {
        self.tunnel_streams
            .get_or_create(&DirectionLabels {
                direction: d.as_str(),
            })
            .inc();
    }

    /// An outbound connection that could not use a tunnel, and why.
    pub(crate) fn tunnel_fallback(&self, reason: &'static str) {
        self.tunnel_fallbacks
            .get_or_create(&ReasonLabels {
                direction: Direction::Outbound.as_str(),
                reason,
            })
            .inc();
    }

    pub(crate) fn authorized(&self, allowed: bool) {
        let decision = if allowed { "allowed" } else { "denied" };
        self.authorizations
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    /// One inbound HTTP request answered `code` after `took` (to the end of its response).
    pub(crate) fn http_request(&self, method: &http::Method, code: u16, took: Duration) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::HEAD => "HEAD",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::DELETE => "DELETE",
            http::Method::PATCH => "PATCH",
            http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.http_requests
            .get_or_create(&RequestLabels { method, code })
            .inc();
        self.http_duration.observe(took.as_secs_f64());
    }

    /// One inbound HTTP request denied; `reason` says what decided.
    pub(crate) fn http_denied(&self, reason: &'static str) {
        self.http_denied
            .get_or_create(&DeniedLabels { reason })
            .inc();
    }

    /// An inbound TCP connection closed before sending a byte (a health probe).
    pub(crate) fn probed(&self) {
        self.probes.inc();
    }

    /// An app connection waited for discovery to list an instance of `upstream`.
    pub(crate) fn upstream_waited(&self, upstream: &str) {
        self.upstream_waits
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .inc();
    }

    pub(crate) fn revoked(&self) {
        self.revoked.inc();
    }

    pub(crate) fn refused(&self, d: Direction, reason: &'static str) {
        self.refused
            .get_or_create(&ReasonLabels {
                direction: d.as_str(),
                reason,
            })
            .inc();
    }

    pub(crate) fn upstream_connected(&self, upstream: &str, took: Duration) {
        self.upstream_connect
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn upstream_failed(&self, upstream: &str, reason: &'static str) {
        self.upstream_failures
            .get_or_create(&UpstreamReasonLabels {
                upstream: upstream.to_string(),
                reason,
            })
            .inc();
    }

    pub(crate) fn certificate_expires(&self, at: SystemTime) {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.cert_expiry.set(secs);
    }

    pub(crate) fn trust_roots(&self, n: usize) {
        self.roots.set(n as i64);
    }

    pub(crate) fn leaf_rotated(&self) {
        self.leaf_rotations.inc();
    }

    pub(crate) fn roots_updated(&self) {
        self.root_updates.inc();
    }

    pub(crate) fn upstream_instances(&self, upstream: &str, n: usize) {
        self.upstream_instances
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .set(n as i64);
    }

    pub(crate) fn intentions(&self, n: usize) {
        self.intentions.set(n as i64);
    }

    pub(crate) fn registered(&self) {
        self.registrations.inc();
    }

    /// The proxy's live tasks now (watches, accept loops, connections).
    pub(crate) fn set_tasks(&self, n: usize) {
        self.tasks.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub(crate) fn watch_succeeded(&self, watch: &'static str) {
        let l = WatchLabels { watch };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.watch_last_success.get_or_create(&l).set(now);
        self.watch_staleness.get_or_create(&l).set(0.0);
        self.stale_since
            .lock()
            .expect("metrics lock is never poisoned")
            .remove(watch);
    }

    pub(crate) fn watch_failed(&self, watch: &'static str) {
        self.watch_errors
            .get_or_create(&WatchLabels { watch })
            .inc();
        self.stale_since
            .lock()
            .expect("metrics lock is never poisoned")
            .entry(watch)
            .or_insert_with(Instant::now);
    }

    /// How long the watch has been without a good answer, if it is failing.
    pub(crate) fn watch_staleness(&self, watch: &'static str) -> Option<Duration> {
        self.stale_since
            .lock()
            .expect("metrics lock is never poisoned")
            .get(watch)
            .map(|s| s.elapsed())
    }
}

/// Counts one tunnel in `tandem_tunnels_active` while it lives.
pub(crate) struct TunnelOpen {
    metrics: Arc<Metrics>,
    direction: Direction,
}

impl Drop for TunnelOpen {
    fn drop(&mut self) {
        self.metrics
            .tunnels_active
            .get_or_create(&DirectionLabels {
                direction: self.direction.as_str(),
            })
            .dec();
    }
}
