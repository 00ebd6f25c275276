//! The command line: `serve`, `inject`, `install`. Parsed once into typed config; every flag
//! has a `TANDEM_*` environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::decision::{NamespaceList, Policy};
use crate::patch::SidecarOptions;

/// `--proxy-image` of `inject` and `install`: the proxy of this release.
pub(crate) const DEFAULT_PROXY_IMAGE: &str = concat!("tandem-proxy:", env!("CARGO_PKG_VERSION"));
/// `install --injector-image`: the injector of this release.
pub(crate) const DEFAULT_INJECTOR_IMAGE: &str =
    concat!("tandem-injector:", env!("CARGO_PKG_VERSION"));

/// The whole command line (`tandem-injector <COMMAND>`).
#[derive(Debug, Parser)]
#[command(
    name = "tandem-injector",
    version,
    about = "Adds the tandem-proxy sidecar to pods annotated consul.hashicorp.com/connect-inject: \"true\"",
    long_about = "Adds the tandem-proxy sidecar to pods annotated consul.hashicorp.com/connect-inject: \"true\".\n\n\
        serve    runs the HTTPS mutating admission webhook (POST /mutate, GET /health/ready)\n\
        inject   injects manifests offline: tandem-injector inject -f app.yaml | kubectl apply -f -\n\
        install  prints the manifests that run the webhook: tandem-injector install | kubectl apply -f -\n\n\
        The annotations are documented in docs/annotations.md."
)]
pub struct Cli {
    /// Which command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The three commands and their flags.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Inject Pods and workload pod templates read from a file or stdin; print the result.
    Inject(InjectArgs),
    /// Print the manifests (namespace, service account without API access, TLS secret,
    /// Deployment, Service, MutatingWebhookConfiguration) that run the webhook in a cluster.
    Install(InstallArgs),
}

/// What gets injected where: shared by `serve`, `inject` and `install`.
#[derive(Debug, Clone, Args)]
pub struct InjectionArgs {
    /// Inject pods that have no consul.hashicorp.com/connect-inject annotation.
    #[arg(long, env = "TANDEM_DEFAULT_INJECT")]
    pub default_inject: bool,

    /// Inject only in these namespaces ("a,b"), or "*" for all (the default: all).
    #[arg(long, env = "TANDEM_ALLOW_NAMESPACES", value_name = "a,b|*")]
    pub allow_namespaces: Option<NamespaceList>,

    /// Never inject in these namespaces; wins over --allow-namespaces.
    /// kube-system and kube-public are never injected.
    #[arg(
        long,
        env = "TANDEM_DENY_NAMESPACES",
        value_name = "a,b",
        value_delimiter = ','
    )]
    pub deny_namespaces: Vec<String>,

    /// CONSUL_HTTP_ADDR for the sidecar [default: http://$(HOST_IP):8500, the node's agent].
    #[arg(long, env = "TANDEM_CONSUL_HTTP_ADDR", value_name = "URL", value_parser = parse_http_url)]
    pub consul_http_addr: Option<String>,

    /// Inject the proxy as the first init container with restartPolicy: Always
    /// (a Kubernetes 1.29+ native sidecar: starts before the app, does not keep Jobs running).
    #[arg(long, env = "TANDEM_NATIVE_SIDECAR")]
    pub native_sidecar: bool,

    /// Run every injected proxy with --tunnel: connections between two injected pods ride one
    /// mTLS connection per instance (HTTP/2 CONNECT streams); any other Connect proxy is
    /// served as without it. Roll it out to the whole mesh at once or pod by pod: both ends
    /// must have it for a tunnel, either alone changes nothing.
    #[arg(long, env = "TANDEM_PROXY_TUNNEL")]
    pub proxy_tunnel: bool,
}

impl InjectionArgs {
    /// Who is injected: `--default-inject` and the namespace lists (entries trimmed, empty
    /// ones dropped).
    pub fn policy(&self) -> Policy {
        Policy {
            default_inject: self.default_inject,
            allow: self.allow_namespaces.clone(),
            deny: self
                .deny_namespaces
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// What the injected container looks like, with `proxy_image` (each command has its own
    /// `--proxy-image`).
    pub fn sidecar(&self, proxy_image: &str) -> SidecarOptions {
        SidecarOptions {
            proxy_image: proxy_image.to_string(),
            consul_http_addr: self.consul_http_addr.clone(),
            native_sidecar: self.native_sidecar,
            tunnel: self.proxy_tunnel,
        }
    }

    /// The same settings as `serve` flags (for the Deployment `install` prints).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.default_inject {
            args.push("--default-inject".to_string());
        }
        if let Some(allow) = &self.allow_namespaces {
            args.push(format!("--allow-namespaces={allow}"));
        }
        if !self.deny_namespaces.is_empty() {
            args.push(format!(
                "--deny-namespaces={}",
                self.deny_namespaces.join(",")
            ));
        }
        if let Some(addr) = &self.consul_http_addr {
            args.push(format!("--consul-http-addr={addr}"));
        }
        if self.native_sidecar {
            args.push("--native-sidecar".to_string());
        }
        if self.proxy_tunnel {
            args.push("--proxy-tunnel".to_string());
        }
        args
    }
}

/// `serve`: the webhook's listener and certificate, and what it injects.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("tls").required(true).args(["tls_cert_file", "tls_auto_hosts"])))]
pub struct ServeArgs {
    /// Address for the HTTPS listener.
    #[arg(long, env = "TANDEM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Image of the injected tandem-proxy container.
    #[arg(long, env = "TANDEM_PROXY_IMAGE", value_name = "IMAGE")]
    pub proxy_image: String,

    /// Serving certificate (PEM, chain allowed); reloaded when it changes on disk.
    #[arg(
        long,
        env = "TANDEM_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key of --tls-cert-file (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(
        long,
        env = "TANDEM_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Make a CA and a serving certificate for these host names / IPs instead of reading files.
    #[arg(long, env = "TANDEM_TLS_AUTO_HOSTS", value_name = "NAME,NAME", value_delimiter = ',', num_args = 1..)]
    pub tls_auto_hosts: Vec<String>,

    /// With --tls-auto-hosts: where the CA certificate (the webhook's caBundle) is written
    /// [default: $TMPDIR/tandem-injector-ca.pem, /tmp when TMPDIR is unset].
    #[arg(
        long,
        env = "TANDEM_CA_BUNDLE_OUT",
        value_name = "FILE",
        requires = "tls_auto_hosts"
    )]
    pub ca_bundle_out: Option<PathBuf>,

    /// How often the certificate files are checked for a renewal ("500ms", "2s", "1m").
    #[arg(long, env = "TANDEM_TLS_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// What is injected where.
    #[command(flatten)]
    pub injection: InjectionArgs,
}

/// `inject`: the manifest to read and what to inject into it.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The manifest to read (YAML or JSON; several documents or a List); "-" is stdin.
    #[arg(
        short = 'f',
        long = "filename",
        default_value = "-",
        value_name = "FILE|-"
    )]
    pub file: String,

    /// Namespace assumed for objects that name none (the namespace kubectl would apply them to).
    #[arg(short = 'n', long, env = "TANDEM_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Image of the injected tandem-proxy container.
    #[arg(long, env = "TANDEM_PROXY_IMAGE", value_name = "IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,

    /// What is injected where.
    #[command(flatten)]
    pub injection: InjectionArgs,
}

/// The webhook configuration's `failurePolicy` (`install --failure-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicy {
    /// Pod creation fails while the webhook cannot be reached (no pod slips through un-injected).
    Fail,
    /// Pods are created without a sidecar while the webhook cannot be reached.
    Ignore,
}

impl FailurePolicy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// `install`: where and how the webhook runs, and the flags its `serve` gets.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Namespace the injector runs in (created; never injected).
    #[arg(
        short = 'n',
        long,
        env = "TANDEM_NAMESPACE",
        default_value = "tandem-system"
    )]
    pub namespace: String,

    /// Image of the injected tandem-proxy container.
    #[arg(long, env = "TANDEM_PROXY_IMAGE", value_name = "IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,

    /// Image of the injector itself (its entrypoint must be the tandem-injector binary).
    #[arg(long, env = "TANDEM_INJECTOR_IMAGE", value_name = "IMAGE", default_value = DEFAULT_INJECTOR_IMAGE)]
    pub injector_image: String,

    /// Injector replicas.
    #[arg(long, env = "TANDEM_REPLICAS", default_value_t = 2)]
    pub replicas: u32,

    /// What the API server does when the webhook cannot be called.
    #[arg(
        long,
        env = "TANDEM_FAILURE_POLICY",
        value_enum,
        default_value = "fail"
    )]
    pub failure_policy: FailurePolicy,

    /// Webhook call timeout (1-30 seconds).
    #[arg(long, env = "TANDEM_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub timeout_seconds: u32,

    /// Lifetime of the generated CA and serving certificate; re-run install to renew.
    #[arg(long, env = "TANDEM_CERT_VALIDITY_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub cert_validity_days: u32,

    /// What is injected where (passed on to the Deployment's `serve`).
    #[command(flatten)]
    pub injection: InjectionArgs,
}

/// `500ms`, `2s`, `1m`, `1h`.
pub(crate) fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 500ms, 2s, 1m"))?;
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => return Err(format!("{raw:?} has no unit (ms, s, m or h)")),
    }
    .ok_or_else(|| format!("{raw:?} is too long"))?;
    if d.is_zero() {
        return Err(format!("{raw:?} must be more than zero"));
    }
    Ok(d)
}

fn parse_http_url(raw: &str) -> Result<String, String> {
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
        .ok_or_else(|| format!("{raw:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_requires_a_tls_source() {
        let err =
            Cli::try_parse_from(["tandem-injector", "serve", "--proxy-image", "p"]).unwrap_err();
        assert!(err.to_string().contains("--tls-cert-file"), "{err}");
        let ok = Cli::try_parse_from([
            "tandem-injector",
            "serve",
            "--proxy-image",
            "p",
            "--tls-auto-hosts",
            "a,b",
            "--deny-namespaces",
            "x,y",
            "--allow-namespaces",
            "*",
        ])
        .unwrap();
        let Command::Serve(s) = ok.command else {
            panic!("serve")
        };
        assert_eq!(s.tls_auto_hosts, ["a", "b"]);
        assert_eq!(s.injection.policy().deny, ["x", "y"]);
        assert_eq!(s.injection.policy().allow, Some(NamespaceList::All));
        assert!(Cli::try_parse_from([
            "tandem-injector",
            "serve",
            "--proxy-image",
            "p",
            "--tls-cert-file",
            "c"
        ])
        .is_err());
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = Cli::try_parse_from([
            "tandem-injector",
            "inject",
            "--consul-http-addr",
            "consul:8500",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--consul-http-addr") && err.contains("http://"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(
            parse_duration("18446744073709551615h"),
            Err("\"18446744073709551615h\" is too long".to_string())
        );
    }

    #[test]
    fn injection_args_round_trip_through_to_args() {
        let cli = Cli::try_parse_from([
            "tandem-injector",
            "install",
            "--default-inject",
            "--allow-namespaces",
            "a,b",
            "--deny-namespaces",
            "c",
            "--consul-http-addr",
            "http://consul:8500",
            "--native-sidecar",
        ])
        .unwrap();
        let Command::Install(i) = cli.command else {
            panic!("install")
        };
        let mut argv = vec!["tandem-injector".to_string(), "inject".to_string()];
        argv.extend(i.injection.to_args());
        let Command::Inject(back) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("inject")
        };
        assert_eq!(back.injection.policy(), i.injection.policy());
        assert_eq!(back.injection.sidecar("x"), i.injection.sidecar("x"));
    }
}
