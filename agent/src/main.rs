//! `tandem-agent`: `dev` serves the Consul-compatible API until SIGINT/SIGTERM; `intention`
//! and `config` are the `consul intention` and `consul config` work-alikes.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tandem_agent::cli::{Cli, Command};

/// `EX_USAGE`: bad flags or values.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Intention { args } => {
            let code = runtime.block_on(async {
                let mut out = std::io::stdout();
                let mut err = std::io::stderr();
                tandem_agent::cli::intention::run(&args, &mut out, &mut err).await
            });
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Config { args } => {
            let code = runtime.block_on(async {
                let mut out = std::io::stdout();
                let mut err = std::io::stderr();
                tandem_agent::cli::config::run(&args, &mut out, &mut err).await
            });
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Dev(args) => {
            init_tracing();
            match runtime.block_on(run_dev(args.into_config())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tandem-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run_dev(config: tandem_agent::Config) -> anyhow::Result<()> {
    tracing::info!(
        http.addr = %config.http_addr,
        datacenter = %config.datacenter,
        node.name = %config.node_name,
        default_intention = if config.default_allow { "allow" } else { "deny" },
        leaf_ttl = ?config.leaf_ttl,
        require_token = config.require_token.is_some(),
        "starting tandem-agent dev"
    );
    let agent = tandem_agent::start(config)
        .await
        .context("cannot start the dev agent")?;
    tracing::info!(http.addr = %agent.addr(), "serving the Consul HTTP API");
    // The bound address on stdout, one line, for scripts and tests that pass port 0.
    println!(
        "tandem-agent dev: serving the Consul HTTP API on {}",
        agent.url()
    );
    wait_for_signal().await?;
    tracing::info!("shutting down");
    agent.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot wait for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
