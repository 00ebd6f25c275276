//! `tandem-injector`: parse the command line, then run one of `serve`, `inject`, `install`.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tandem_injector::cli::{Cli, Command, InjectArgs, InstallArgs, ServeArgs};
use tandem_injector::install::{self, InstallOptions};
use tandem_injector::tls::CertFiles;
use tandem_injector::webhook::{self, ServeConfig, TlsSource};
use tandem_injector::{inject, Injector};

/// Exit status for a bad command line (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Lifetime of the serving certificate made by `--tls-auto-hosts` (renewed in-process).
const GENERATED_CERT_VALIDITY: Duration = Duration::from_secs(90 * 86400);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Inject(args) => run_inject(args),
        Command::Install(args) => run_install(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-injector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tls = match (args.tls_cert_file, args.tls_key_file) {
        (Some(cert), Some(key)) => TlsSource::Files {
            files: CertFiles { cert, key },
            reload_interval: args.tls_reload_interval,
        },
        _ => TlsSource::Generated {
            hosts: args.tls_auto_hosts.clone(),
            ca_bundle_out: args
                .ca_bundle_out
                .unwrap_or_else(|| std::env::temp_dir().join("tandem-injector-ca.pem")),
            validity: GENERATED_CERT_VALIDITY,
        },
    };
    let injector = Injector::new(
        args.injection.policy(),
        args.injection.sidecar(&args.proxy_image),
    );
    tracing::info!(
        listen = %args.listen,
        proxy.image = %args.proxy_image,
        policy = ?injector.policy(),
        consul.http_addr = args.injection.consul_http_addr.as_deref().unwrap_or("http://$(HOST_IP):8500"),
        native_sidecar = args.injection.native_sidecar,
        "starting webhook"
    );
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let hook = webhook::start(ServeConfig {
            listen: args.listen,
            tls,
            injector,
        })
        .await?;
        if let Some(path) = hook.ca_bundle_path() {
            tracing::info!(ca_bundle = %path.display(), "wrote the generated CA bundle (base64 it into the webhook's caBundle)");
            println!("CA bundle written to {}", path.display());
        }
        tracing::info!(addr = %hook.local_addr(), "serving POST /mutate and GET /health/ready over HTTPS");
        shutdown_signal().await;
        tracing::info!("shutting down");
        hook.shutdown().await;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn run_inject(args: InjectArgs) -> anyhow::Result<()> {
    let input = if args.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file))?
    };
    let injector = Injector::new(
        args.injection.policy(),
        args.injection.sidecar(&args.proxy_image),
    );
    let (output, changes) = inject::inject_text(&injector, &args.namespace, &input)
        .with_context(|| format!("cannot inject {}", args.file))?;
    for change in changes {
        eprintln!("{}: {}", change.object, change.result);
    }
    std::io::stdout()
        .write_all(output.as_bytes())
        .context("cannot write stdout")
}

fn run_install(args: InstallArgs) -> anyhow::Result<()> {
    let docs = install::manifests(&InstallOptions {
        namespace: args.namespace.clone(),
        proxy_image: args.proxy_image,
        injector_image: args.injector_image,
        replicas: args.replicas,
        failure_policy: args.failure_policy,
        timeout_seconds: args.timeout_seconds,
        cert_validity: Duration::from_secs(u64::from(args.cert_validity_days) * 86400),
        serve_args: args.injection.to_args(),
    })?;
    let yaml = inject::render(inject::Format::Yaml, &docs);
    std::io::stdout()
        .write_all(yaml.as_bytes())
        .context("cannot write stdout")
}
