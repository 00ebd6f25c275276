//! Command line and environment: parsed once into [`Config`] (what the user wrote) and resolved
//! into [`Settings`] (every default and Consul variable applied) before any socket is bound.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

pub use tandem_contract::{Datacenter, ServiceName, Upstream, UpstreamList};

use crate::intentions::Action;

/// The proxy's command line. Every flag also reads `TANDEM_<FLAG_IN_CAPS>`; Consul's own
/// variables (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_CACERT`)
/// are the fallback where they exist.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "tandem-proxy",
    version,
    about = "Consul Connect sidecar: inbound mTLS with intentions, upstream listeners on 127.0.0.1",
    long_about = "Consul Connect sidecar: registers the pod's service and its sidecar with the local \
Consul agent, keeps the leaf certificate, CA roots and intentions live through blocking queries, \
accepts inbound mutual TLS (authorized against intentions) and forwards to the app, and opens one \
plaintext 127.0.0.1:<port> listener per upstream that dials a healthy instance over mutual TLS.\n\n\
Every flag also reads TANDEM_<FLAG_IN_CAPS> (e.g. TANDEM_SERVICE_PORT). Malformed input exits with \
status 64."
)]
pub struct Config {
    /// Service this pod serves (required, except with --check-ready).
    #[arg(
        long,
        env = "TANDEM_SERVICE",
        value_name = "NAME",
        required_unless_present = "check_ready"
    )]
    pub service: Option<ServiceName>,

    /// App port inbound connections go to. Without it the public listener still answers (the
    /// sidecar's TCP check passes) and refuses every connection: the pod serves nothing.
    #[arg(long, env = "TANDEM_SERVICE_PORT", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub service_port: Option<u16>,

    /// Address the app listens on.
    #[arg(
        long,
        env = "TANDEM_SERVICE_ADDRESS",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    pub service_address: IpAddr,

    /// Service ID to register [default: $POD_NAME-SERVICE, else HOSTNAME-SERVICE].
    #[arg(long, env = "TANDEM_SERVICE_ID", value_name = "ID")]
    pub service_id: Option<String>,

    /// Upstreams: "NAME:PORT", "NAME:PORT:DATACENTER" or "prepared_query:NAME:PORT", separated
    /// by commas, spaces or newlines, e.g. "db:1234,auth:6789:dc2".
    #[arg(
        long,
        env = "TANDEM_UPSTREAMS",
        value_name = "LIST",
        default_value = ""
    )]
    pub upstreams: UpstreamList,

    /// Inbound mutual-TLS listener.
    #[arg(
        long,
        env = "TANDEM_PUBLIC_LISTENER",
        value_name = "ADDR",
        default_value = "0.0.0.0:20000"
    )]
    pub public_listener: SocketAddr,

    /// Address registered in Consul [default: $POD_IP, else the first non-loopback IPv4].
    #[arg(long, env = "TANDEM_ADVERTISE_ADDRESS", value_name = "IP")]
    pub advertise_address: Option<IpAddr>,

    /// Consul agent HTTP API [default: $CONSUL_HTTP_ADDR, else http://127.0.0.1:8500].
    #[arg(long, env = "TANDEM_CONSUL_HTTP_ADDR", value_name = "URL")]
    pub consul_http_addr: Option<String>,

    /// ACL token [default: $CONSUL_HTTP_TOKEN, else the content of $CONSUL_HTTP_TOKEN_FILE].
    #[arg(
        long,
        env = "TANDEM_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// File holding the ACL token [default: $CONSUL_HTTP_TOKEN_FILE].
    #[arg(long, env = "TANDEM_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// PEM CA bundle for an https Consul address [default: $CONSUL_CACERT].
    #[arg(long, env = "TANDEM_CONSUL_CACERT", value_name = "PATH")]
    pub consul_cacert: Option<PathBuf>,

    /// Admin HTTP listener (/ready, /live, /metrics, /config, POST /shutdown).
    #[arg(
        long,
        env = "TANDEM_ADMIN_LISTENER",
        value_name = "ADDR",
        default_value = "127.0.0.1:19000"
    )]
    pub admin_listener: SocketAddr,

    /// Do not register the service and sidecar (something else does).
    #[arg(long, env = "TANDEM_NO_REGISTER")]
    pub no_register: bool,

    /// Readiness probe: GET /ready on --admin-listener, exit 0 if 200, else 1. Does nothing else.
    #[arg(long, env = "TANDEM_CHECK_READY")]
    pub check_ready: bool,

    /// On SIGTERM, how long open connections may take to finish before they are closed.
    #[arg(long, env = "TANDEM_DRAIN_DEADLINE", value_name = "DURATION", default_value = "20s",
          value_parser = parse_duration)]
    pub drain_deadline: Duration,

    /// Close open inbound connections whose source a changed intention now denies.
    #[arg(long, env = "TANDEM_CLOSE_DENIED_CONNECTIONS", value_name = "BOOL", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub close_denied_connections: bool,

    /// A log line per inbound HTTP request (method, path without query, status, duration,
    /// caller) for a service whose protocol is http, http2 or grpc; TCP services are not
    /// affected. Off by default: the per-connection line stays.
    #[arg(long, env = "TANDEM_HTTP_ACCESS_LOG", value_name = "BOOL", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub http_access_log: bool,

    /// Time allowed for a TLS handshake, inbound or outbound.
    #[arg(long, env = "TANDEM_HANDSHAKE_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Time allowed for a TCP connect to the app or to an upstream instance.
    #[arg(long, env = "TANDEM_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// A connection with no bytes in either direction for this long is closed ("0s" = never).
    #[arg(long, env = "TANDEM_IDLE_TIMEOUT", value_name = "DURATION", default_value = "1h",
          value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Maximum concurrent connections (inbound and outbound together); more are refused.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS", value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Resume TLS 1.3 sessions with peers seen before (a resumed handshake skips both
    /// signatures and the chain check; its identity is the one verified at the full handshake,
    /// and no session outlives a leaf or root change). "false" makes every handshake a full
    /// one (for measurements, or a policy that wants one).
    #[arg(long, env = "TANDEM_TLS_RESUMPTION", value_name = "BOOL", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub tls_resumption: bool,

    /// Carry connections to other Tandem proxies as streams of one long-lived mTLS connection
    /// per instance (HTTP/2 `CONNECT`, offered with the ALPN protocol `tandem-tunnel/1` and
    /// advertised in the sidecar's `tandem-tunnel` meta), and accept such tunnels inbound. Both
    /// ends need it; with any other Connect proxy (Envoy, `consul connect proxy`) each
    /// connection stays its own mTLS connection, as without it.
    #[arg(long, env = "TANDEM_TUNNEL", value_name = "BOOL", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tunnel: bool,

    /// Streams one tunnel carries at once; a connection that finds every tunnel to its
    /// instance full (and --tunnels-per-instance open) gets its own mTLS connection.
    #[arg(long, env = "TANDEM_TUNNEL_MAX_STREAMS", value_name = "N", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tunnel_max_streams: u32,

    /// Tunnels opened to one upstream instance at most.
    #[arg(long, env = "TANDEM_TUNNELS_PER_INSTANCE", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub tunnels_per_instance: u32,

    /// A tunnel that carries no stream for this long is closed, at either end.
    #[arg(long, env = "TANDEM_TUNNEL_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration)]
    pub tunnel_idle_timeout: Duration,

    /// Decision when no intention matches [default: the agent's X-Consul-Default-ACL-Policy].
    /// Set it if the cluster uses Consul's `default_intention_policy`, which the API does not show.
    #[arg(long, env = "TANDEM_DEFAULT_INTENTION_POLICY", value_name = "allow|deny",
          value_parser = parse_policy)]
    pub default_intention_policy: Option<Action>,

    /// Threads that run the proxy's connections. 0 = one current-thread runtime (all work on
    /// the main thread, at most one core); N >= 1 = a work-stealing runtime with N workers.
    /// 0 used the least CPU per request in the benchmark (no wake-ups handed between threads);
    /// raise it only for a proxy that saturates a whole core on its own.
    #[arg(long, env = "TANDEM_WORKER_THREADS", value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=256))]
    pub worker_threads: u16,

    /// Longest wait between retries when the agent is unreachable (backoff with jitter).
    #[arg(long, env = "TANDEM_RETRY_MAX", value_name = "DURATION", default_value = "30s",
          value_parser = parse_duration)]
    pub retry_max: Duration,

    /// How often a `prepared_query:NAME:PORT` upstream's query is executed again (prepared
    /// queries do not block; the last good answer is kept between polls and on errors).
    #[arg(long, env = "TANDEM_PREPARED_QUERY_POLL_INTERVAL", value_name = "DURATION",
          default_value = "10s", value_parser = parse_duration)]
    pub prepared_query_poll_interval: Duration,

    /// How often the proxy checks that its registrations still exist (re-registers if not).
    #[arg(long, env = "TANDEM_REGISTRATION_CHECK_INTERVAL", value_name = "DURATION",
          default_value = "10s", value_parser = parse_duration)]
    pub registration_check_interval: Duration,
}

impl Config {
    /// A configuration for `service` with every other value at its default. Listeners use
    /// port 0 on 127.0.0.1 (for tests and embedding).
    pub fn new(service: ServiceName) -> Self {
        let mut config = Config::parse_from(["tandem-proxy", "--service", service.as_str()]);
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.public_listener = loopback;
        config.admin_listener = loopback;
        config
    }

    /// Applies defaults and Consul's variables (read through `env`), checks everything that
    /// can be checked without the network, and reports every problem at once.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigErrors> {
        let mut errors = Vec::new();
        let env_nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());

        let Some(service) = self.service.clone() else {
            return Err(ConfigErrors(vec![ConfigError::new(
                "--service",
                "",
                "a service name",
            )]));
        };

        let pod_name = env_nonempty("POD_NAME");
        let pod_namespace = env_nonempty("POD_NAMESPACE");
        let service_id = match &self.service_id {
            Some(id) if id.trim().is_empty() || id.contains('/') => {
                errors.push(ConfigError::new(
                    "--service-id",
                    id,
                    "a non-empty ID without '/'",
                ));
                String::new()
            }
            Some(id) => id.clone(),
            None => {
                let prefix = pod_name
                    .clone()
                    .or_else(|| env_nonempty("HOSTNAME"))
                    .or_else(hostname);
                match prefix {
                    Some(p) => format!("{p}-{service}"),
                    None => service.to_string(),
                }
            }
        };

        let advertise_address = match (self.advertise_address, env_nonempty("POD_IP")) {
            (Some(ip), _) => ip,
            (None, Some(raw)) => match raw.trim().parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    errors.push(ConfigError::new("POD_IP", &raw, "an IP address"));
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                }
            },
            (None, None) => first_non_loopback_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };

        let (addr_source, raw_addr) =
            match (&self.consul_http_addr, env_nonempty("CONSUL_HTTP_ADDR")) {
                (Some(a), _) => ("--consul-http-addr", a.clone()),
                (None, Some(a)) => ("CONSUL_HTTP_ADDR", a),
                (None, None) => ("--consul-http-addr", "http://127.0.0.1:8500".to_string()),
            };
        let ssl = env_nonempty("CONSUL_HTTP_SSL").is_some_and(|v| v == "true" || v == "1");
        let consul_http_addr = match parse_consul_addr(&raw_addr, ssl) {
            Ok(url) => url,
            Err(expected) => {
                errors.push(ConfigError::new(addr_source, &raw_addr, expected));
                url::Url::parse("http://127.0.0.1:8500").expect("constant URL parses")
            }
        };

        let token = match (&self.token, env_nonempty("CONSUL_HTTP_TOKEN")) {
            (Some(t), _) if !t.is_empty() => Some(t.trim().to_string()),
            (_, Some(t)) => Some(t.trim().to_string()),
            _ => {
                let file = self
                    .token_file
                    .clone()
                    .map(|p| ("--token-file", p))
                    .or_else(|| {
                        env_nonempty("CONSUL_HTTP_TOKEN_FILE")
                            .map(|p| ("CONSUL_HTTP_TOKEN_FILE", p.into()))
                    });
                match file {
                    Some((source, path)) => match std::fs::read_to_string(&path) {
                        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                        Ok(_) => {
                            errors.push(ConfigError::new(
                                source,
                                &path.display().to_string(),
                                "a file holding a token (it is empty)",
                            ));
                            None
                        }
                        Err(e) => {
                            errors.push(ConfigError::new(
                                source,
                                &path.display().to_string(),
                                format!("a readable token file ({e})"),
                            ));
                            None
                        }
                    },
                    None => None,
                }
            }
        };

        let cacert = self
            .consul_cacert
            .clone()
            .map(|p| ("--consul-cacert", p))
            .or_else(|| env_nonempty("CONSUL_CACERT").map(|p| ("CONSUL_CACERT", p.into())));
        let consul_ca_pem = match cacert {
            Some((source, path)) => match std::fs::read(&path) {
                Ok(pem) if pem.windows(11).any(|w| w == b"-----BEGIN ") => Some(pem),
                Ok(_) => {
                    errors.push(ConfigError::new(
                        source,
                        &path.display().to_string(),
                        "a PEM file with at least one certificate",
                    ));
                    None
                }
                Err(e) => {
                    errors.push(ConfigError::new(
                        source,
                        &path.display().to_string(),
                        format!("a readable PEM file ({e})"),
                    ));
                    None
                }
            },
            None => None,
        };

        let upstreams = self.upstreams.0.clone();
        for u in &upstreams {
            if u.local_port != 0 && self.public_listener.port() == u.local_port {
                errors.push(ConfigError::new(
                    "--upstreams",
                    &u.to_string(),
                    format!(
                        "a local port other than the public listener's ({})",
                        u.local_port
                    ),
                ));
            }
            if u.local_port != 0 && u.local_port == self.admin_listener.port() {
                errors.push(ConfigError::new(
                    "--upstreams",
                    &u.to_string(),
                    format!(
                        "a local port other than the admin listener's ({})",
                        u.local_port
                    ),
                ));
            }
        }
        if !self.admin_listener.ip().is_loopback() {
            tracing::warn!(admin.addr = %self.admin_listener,
                "the admin listener is not on a loopback address: /shutdown is reachable from the network");
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Settings {
            service,
            service_id,
            consul: ConsulSettings {
                http_addr: consul_http_addr,
                token,
                ca_pem: consul_ca_pem,
            },
            registration: RegistrationSettings {
                register: !self.no_register,
                advertise_address,
                pod_name,
                pod_namespace,
                check_interval: self
                    .registration_check_interval
                    .max(Duration::from_millis(10)),
            },
            inbound: InboundSettings {
                listener: self.public_listener,
                service_port: self.service_port,
                service_address: self.service_address,
                close_denied_connections: self.close_denied_connections,
                default_intention_policy: self.default_intention_policy,
                http_access_log: self.http_access_log,
            },
            outbound: OutboundSettings {
                upstreams,
                prepared_query_poll_interval: self
                    .prepared_query_poll_interval
                    .max(Duration::from_millis(10)),
            },
            limits: Limits {
                handshake_timeout: self.handshake_timeout,
                connect_timeout: self.connect_timeout,
                idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
                max_connections: self.max_connections,
            },
            tunnel: TunnelSettings {
                enabled: self.tunnel,
                max_streams: self.tunnel_max_streams,
                per_instance: self.tunnels_per_instance,
                idle_timeout: self.tunnel_idle_timeout.max(Duration::from_millis(10)),
            },
            tls_resumption: self.tls_resumption,
            retry_max: self.retry_max.max(Duration::from_millis(10)),
            admin_listener: self.admin_listener,
            drain_deadline: self.drain_deadline,
            worker_threads: self.worker_threads,
        })
    }
}

/// Why the command line was not accepted.
#[derive(Debug)]
pub enum ArgsError {
    /// `--help` or `--version`: print it and exit 0.
    Display(clap::Error),
    /// Malformed input: every problem found, one message each; exit 64.
    Invalid(Vec<String>),
}

impl Config {
    /// Parses `args` (with `TANDEM_*` variables) reporting every malformed value, not only the
    /// first one clap meets: each bad flag is set aside and the rest parsed again.
    pub fn parse_args<I, T>(args: I) -> Result<Config, ArgsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        use clap::{CommandFactory, FromArgMatches};
        let original: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut args = original.clone();
        let mut command = Config::command();
        let mut errors = Vec::new();
        let mut set_aside: Vec<String> = Vec::new();
        for _ in 0..64 {
            let error = match command.clone().try_get_matches_from(&args) {
                Ok(matches) if errors.is_empty() => {
                    return Config::from_arg_matches(&matches)
                        .map_err(|e| ArgsError::Invalid(vec![e.to_string()]))
                }
                Ok(_) => break,
                Err(e) => e,
            };
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                return Err(ArgsError::Display(error));
            }
            // A required flag we set aside is not missing: its value was already reported.
            if error.kind() == ErrorKind::MissingRequiredArgument {
                let missing = match error.get(ContextKind::InvalidArg) {
                    Some(ContextValue::Strings(v)) => v.clone(),
                    Some(ContextValue::String(v)) => vec![v.clone()],
                    _ => Vec::new(),
                };
                let set_aside_flag = |m: &String| {
                    let flag = m.split_whitespace().next();
                    set_aside.iter().any(|f| Some(f.as_str()) == flag)
                };
                if !missing.is_empty() && missing.iter().all(set_aside_flag) {
                    break;
                }
            }
            errors.push(
                error
                    .to_string()
                    .trim_end()
                    .trim_end_matches("For more information, try '--help'.")
                    .trim()
                    .to_string(),
            );
            if !matches!(
                error.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) {
                break;
            }
            // Set the offending flag aside (command line and environment) and parse again.
            let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
                break;
            };
            let flag = shown
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let Some(id) = command
                .get_arguments()
                .find(|a| a.get_long().is_some_and(|l| format!("--{l}") == flag))
                .map(|a| a.get_id().clone())
            else {
                break;
            };
            let before = args.len();
            let mut kept = Vec::with_capacity(args.len());
            let mut skip_next = false;
            for a in args.drain(..) {
                if std::mem::take(&mut skip_next) {
                    continue;
                }
                let text = a.to_string_lossy();
                if text == flag {
                    skip_next = true;
                    continue;
                }
                if text.starts_with(&format!("{flag}=")) {
                    continue;
                }
                kept.push(a);
            }
            args = kept;
            let had_env = command
                .get_arguments()
                .any(|a| a.get_id() == &id && a.get_env().is_some());
            if args.len() == before && !had_env {
                break;
            }
            command = command.mut_arg(id, |a| a.env(None::<&'static str>));
            set_aside.push(flag);
        }
        Err(ArgsError::Invalid(errors))
    }
}

/// The resolved configuration: every default and variable applied, grouped by the component
/// that reads it. Serialised (for `/config` and the start-up log) flat, one key per flag, with
/// the secrets left out.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The service this pod serves.
    pub service: ServiceName,
    /// The service's registration ID (the sidecar's is [`Settings::sidecar_id`]).
    pub service_id: String,
    /// How to reach the agent.
    #[serde(flatten)]
    pub consul: ConsulSettings,
    /// What is registered with the agent.
    #[serde(flatten)]
    pub registration: RegistrationSettings,
    /// The public mTLS listener and the app behind it.
    #[serde(flatten)]
    pub inbound: InboundSettings,
    /// The upstream listeners and how their instances are found.
    #[serde(flatten)]
    pub outbound: OutboundSettings,
    /// Timeouts and the connection limit, shared by both directions.
    #[serde(flatten)]
    pub limits: Limits,
    /// The opt-in tunnel between Tandem proxies.
    #[serde(flatten)]
    pub tunnel: TunnelSettings,
    /// Whether TLS sessions are resumed (`--tls-resumption`).
    pub tls_resumption: bool,
    /// The longest backoff between two attempts to reach the agent.
    #[serde(serialize_with = "serialize_duration")]
    pub retry_max: Duration,
    /// Where `/ready`, `/metrics`, `/config` and `POST /shutdown` are served.
    pub admin_listener: SocketAddr,
    /// How long a drain lets open connections finish.
    #[serde(serialize_with = "serialize_duration")]
    pub drain_deadline: Duration,
    /// Runtime threads (0 = current-thread); read by the binary, which builds the runtime.
    pub worker_threads: u16,
}

/// How to reach the Consul agent.
#[derive(Debug, Clone, Serialize)]
pub struct ConsulSettings {
    /// The agent's HTTP(S) API.
    #[serde(rename = "consul_http_addr", serialize_with = "serialize_display")]
    pub http_addr: url::Url,
    /// The ACL token sent with every request (never serialised).
    #[serde(skip)]
    pub token: Option<String>,
    /// The CA bundle that verifies an HTTPS agent (never serialised).
    #[serde(skip)]
    pub ca_pem: Option<Vec<u8>>,
}

/// What the proxy registers with the agent.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationSettings {
    /// Whether to register at all (`--no-register` turns it off).
    pub register: bool,
    /// The address the registrations advertise.
    pub advertise_address: IpAddr,
    /// `POD_NAME`, as the `pod-name` meta.
    pub pod_name: Option<String>,
    /// `POD_NAMESPACE`, as the `k8s-namespace` meta.
    pub pod_namespace: Option<String>,
    /// How often the registrations are checked for (a restarted agent forgets them).
    #[serde(
        rename = "registration_check_interval",
        serialize_with = "serialize_duration"
    )]
    pub check_interval: Duration,
}

/// The public listener and the app behind it.
#[derive(Debug, Clone, Serialize)]
pub struct InboundSettings {
    /// Where the public mTLS listener binds.
    #[serde(rename = "public_listener")]
    pub listener: SocketAddr,
    /// The app's port; `None` for a pod that serves nothing.
    pub service_port: Option<u16>,
    /// The app's address.
    pub service_address: IpAddr,
    /// Whether an intention change closes the open connections it now denies.
    pub close_denied_connections: bool,
    /// The decision when no intention matches; `None` = the agent's default policy.
    pub default_intention_policy: Option<Action>,
    /// A log line per inbound HTTP request (services whose protocol is HTTP).
    pub http_access_log: bool,
}

impl InboundSettings {
    /// Where inbound connections go; `None` without `--service-port`.
    pub fn app(&self) -> Option<SocketAddr> {
        self.service_port
            .map(|port| SocketAddr::new(self.service_address, port))
    }
}

/// The upstream listeners.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundSettings {
    /// One local listener each, in `--upstreams` order.
    pub upstreams: Vec<Upstream>,
    /// How often a prepared query is executed again (prepared queries do not block).
    #[serde(serialize_with = "serialize_duration")]
    pub prepared_query_poll_interval: Duration,
}

/// Timeouts and the connection limit of the data path.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// From accept (or connect) to a finished mTLS handshake.
    #[serde(serialize_with = "serialize_duration")]
    pub handshake_timeout: Duration,
    /// For a TCP connect to the app or an upstream instance.
    #[serde(serialize_with = "serialize_duration")]
    pub connect_timeout: Duration,
    /// A connection with no traffic either way for this long is closed; `None` = never.
    #[serde(serialize_with = "serialize_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Open connections, both directions together; more are refused.
    pub max_connections: u32,
}

/// The opt-in tunnel between two Tandem proxies (`--tunnel`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TunnelSettings {
    /// Whether tunnels are offered (outbound) and accepted (inbound).
    #[serde(rename = "tunnel")]
    pub enabled: bool,
    /// Streams one tunnel carries at once.
    #[serde(rename = "tunnel_max_streams")]
    pub max_streams: u32,
    /// Tunnels to one upstream instance at most.
    #[serde(rename = "tunnels_per_instance")]
    pub per_instance: u32,
    /// A tunnel with no stream for this long is closed.
    #[serde(rename = "tunnel_idle_timeout", serialize_with = "serialize_duration")]
    pub idle_timeout: Duration,
}

impl TunnelSettings {
    /// Tunnels off, with the flags' defaults otherwise.
    pub const OFF: TunnelSettings = TunnelSettings {
        enabled: false,
        max_streams: 1_000,
        per_instance: 1,
        idle_timeout: Duration::from_secs(60),
    };
}

impl Settings {
    /// ID of the sidecar service registration.
    pub fn sidecar_id(&self) -> String {
        format!("{}-sidecar-proxy", self.service_id)
    }

    /// Whether a token is configured (for logs: the token itself is never logged).
    pub fn has_token(&self) -> bool {
        self.consul.token.is_some()
    }
}

/// One configuration problem, naming the flag or variable, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag or variable (`--upstreams`, `CONSUL_HTTP_ADDR`).
    pub source: String,
    /// The value given.
    pub value: String,
    /// What was expected instead.
    pub expected: String,
}

impl ConfigError {
    fn new(source: &str, value: &str, expected: impl Into<String>) -> Self {
        ConfigError {
            source: source.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} \"{}\": expected {}",
            self.source, self.value, self.expected
        )
    }
}

/// Every problem found while resolving the configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

fn parse_policy(s: &str) -> Result<Action, String> {
    s.parse::<Action>().map_err(|e| format!("expected {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as \"10s\" or \"500ms\" ({e})"))
}

/// Accepts what Consul's `CONSUL_HTTP_ADDR` accepts: `host:port` (scheme from `ssl`),
/// `http://host:port` or `https://host:port`.
fn parse_consul_addr(raw: &str, ssl: bool) -> Result<url::Url, &'static str> {
    const EXPECTED: &str = "an http:// or https:// URL, or HOST:PORT";
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else if ssl {
        format!("https://{raw}")
    } else {
        format!("http://{raw}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| EXPECTED)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(EXPECTED);
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err("a URL without a path (the proxy adds /v1/...)");
    }
    Ok(url)
}

/// The kernel's host name (what `hostname` prints).
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The first non-loopback IPv4 address of this host, read from the kernel's routing trie.
fn first_non_loopback_ipv4() -> Option<IpAddr> {
    parse_fib_trie(&std::fs::read_to_string("/proc/net/fib_trie").ok()?)
}

/// In `/proc/net/fib_trie`, a local address is a `|-- <addr>` line followed by `/32 host LOCAL`.
fn parse_fib_trie(trie: &str) -> Option<IpAddr> {
    let mut last_addr: Option<Ipv4Addr> = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '-', '+']).trim();
        if let Ok(addr) = t.parse::<Ipv4Addr>() {
            last_addr = Some(addr);
        } else if t.contains("/32 host LOCAL") {
            if let Some(addr) = last_addr.filter(|a| !a.is_loopback()) {
                return Some(IpAddr::V4(addr));
            }
        }
    }
    None
}

fn serialize_display<S: serde::Serializer, T: fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

fn serialize_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn advertise_address_comes_from_the_routing_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    \x20    +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n\
                    \x20    +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.0\n           /32 link BROADCAST\n\
                    \x20          /24 link UNICAST\n        |-- 10.0.2.15\n           /32 host LOCAL\n";
        assert_eq!(parse_fib_trie(trie), Some("10.0.2.15".parse().unwrap()));
        assert_eq!(parse_fib_trie("|-- 127.0.0.1\n   /32 host LOCAL\n"), None);
    }

    #[test]
    fn consul_addr_accepts_consul_forms() {
        assert_eq!(
            parse_consul_addr("10.0.0.1:8500", false).unwrap().as_str(),
            "http://10.0.0.1:8500/"
        );
        assert_eq!(
            parse_consul_addr("10.0.0.1:8501", true).unwrap().scheme(),
            "https"
        );
        assert_eq!(
            parse_consul_addr("https://consul:8501", false)
                .unwrap()
                .scheme(),
            "https"
        );
        assert!(parse_consul_addr("ftp://x", false).is_err());
        assert!(parse_consul_addr("http://x:8500/v1", false).is_err());
    }

    #[test]
    fn resolve_applies_consul_variables_and_pod_env() {
        let config = Config::parse_from(["tandem-proxy", "--service", "web"]);
        let env = |k: &str| match k {
            "CONSUL_HTTP_ADDR" => Some("10.1.2.3:8500".to_string()),
            "CONSUL_HTTP_TOKEN" => Some("secret".to_string()),
            "POD_NAME" => Some("web-abc".to_string()),
            "POD_IP" => Some("10.9.9.9".to_string()),
            _ => None,
        };
        let s = config.resolve(&env).unwrap();
        assert_eq!(s.consul.http_addr.as_str(), "http://10.1.2.3:8500/");
        assert_eq!(s.consul.token.as_deref(), Some("secret"));
        assert_eq!(s.service_id, "web-abc-web");
        assert_eq!(s.sidecar_id(), "web-abc-web-sidecar-proxy");
        assert_eq!(s.registration.advertise_address.to_string(), "10.9.9.9");
        let shown = serde_json::to_string(&s).unwrap();
        assert!(
            !shown.contains("secret"),
            "the token must not be serialised: {shown}"
        );
    }

    #[test]
    fn flag_wins_over_consul_variable_and_token_file_is_read() {
        let dir = std::env::temp_dir().join(format!("tandem-proxy-token-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let config = Config::parse_from([
            "tandem-proxy",
            "--service",
            "web",
            "--consul-http-addr",
            "https://c:8501",
        ]);
        let path = dir.display().to_string();
        let env = move |k: &str| match k {
            "CONSUL_HTTP_ADDR" => Some("10.1.2.3:8500".to_string()),
            "CONSUL_HTTP_TOKEN_FILE" => Some(path.clone()),
            _ => None,
        };
        let s = config.resolve(&env).unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(s.consul.http_addr.as_str(), "https://c:8501/");
        assert_eq!(s.consul.token.as_deref(), Some("from-file"));
    }

    #[test]
    fn resolve_collects_every_error() {
        let config = Config::parse_from([
            "tandem-proxy",
            "--service",
            "web",
            "--consul-http-addr",
            "ftp://x",
            "--token-file",
            "/nonexistent/token",
        ]);
        let errs = config
            .resolve(&|k| {
                if k == "POD_IP" {
                    Some("not-an-ip".into())
                } else {
                    None
                }
            })
            .unwrap_err();
        let text = errs.to_string();
        assert_eq!(errs.0.len(), 3, "{text}");
        assert!(
            text.contains("invalid --consul-http-addr \"ftp://x\""),
            "{text}"
        );
        assert!(
            text.contains("invalid --token-file \"/nonexistent/token\""),
            "{text}"
        );
        assert!(
            text.contains("invalid POD_IP \"not-an-ip\": expected an IP address"),
            "{text}"
        );
    }

    #[test]
    fn service_id_defaults_to_pod_then_host_name() {
        let s = Config::parse_from(["tandem-proxy", "--service", "web"])
            .resolve(&no_env)
            .unwrap();
        match hostname() {
            Some(h) => assert_eq!(s.service_id, format!("{h}-web")),
            None => assert_eq!(s.service_id, "web"),
        }
        let env = |k: &str| (k == "HOSTNAME").then(|| "pod-7".to_string());
        let s = Config::parse_from(["tandem-proxy", "--service", "web"])
            .resolve(&env)
            .unwrap();
        assert_eq!(s.service_id, "pod-7-web");
    }

    #[test]
    fn clap_errors_name_flag_and_value() {
        let err =
            Config::try_parse_from(["tandem-proxy", "--service", "web", "--service-port", "0"])
                .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--service-port") && text.contains("'0'"),
            "{text}"
        );
        let err =
            Config::try_parse_from(["tandem-proxy", "--service", "web", "--upstreams", "db:abc"])
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("upstream \"db:abc\": local port \"abc\" is not a number"),
            "{err}"
        );
    }

    #[test]
    fn worker_threads_accepts_zero_and_rejects_out_of_range() {
        let c =
            Config::try_parse_from(["tandem-proxy", "--service", "web", "--worker-threads", "0"])
                .unwrap();
        let s = c.resolve(&no_env).unwrap();
        assert_eq!(s.worker_threads, 0);
        let err = Config::try_parse_from([
            "tandem-proxy",
            "--service",
            "web",
            "--worker-threads",
            "300",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--worker-threads") && err.contains("'300'"),
            "{err}"
        );
    }
}
