//! `tandem-proxy`: parse the command line, start the proxy, wait for SIGTERM/SIGINT or
//! `POST /shutdown`, drain, exit.

use std::process::ExitCode;

use tandem_proxy::config::ArgsError;
use tandem_proxy::{Config, StartError};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// mimalloc returns the pages of freed memory to the kernel within milliseconds; glibc's malloc
/// kept what thousands of closed connections had used resident (`tests/hostile.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `EX_USAGE` from sysexits.h: malformed command line or environment.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let config = match Config::parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(ArgsError::Display(help)) => {
            let _ = help.print();
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Invalid(errors)) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("For more information, try '--help'.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match runtime(config.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    if config.check_ready {
        let ready = runtime.block_on(tandem_proxy::check_ready(config.admin_listener));
        return if ready {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let settings = match config.resolve(&|name| std::env::var(name).ok()) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing::info!(config = %serde_json::to_string(&settings).unwrap_or_default(), token = settings.has_token(),
        "effective configuration");

    runtime.block_on(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("error: cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        // A signal during start-up interrupts it: start_with then removes what it registered.
        let interrupt = CancellationToken::new();
        let start = tandem_proxy::start_with(settings, interrupt.clone());
        tokio::pin!(start);
        let (started, interrupted) = tokio::select! {
            started = &mut start => (started, false),
            _ = term.recv() => { interrupt.cancel(); (start.await, true) }
            _ = int.recv() => { interrupt.cancel(); (start.await, true) }
        };
        let proxy = match started {
            Ok(p) => p,
            Err(StartError::Stopped) => {
                tracing::info!("stopped by a signal before start-up finished");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                return ExitCode::FAILURE;
            }
        };
        // One machine-readable line for scripts and tests.
        println!(
            "tandem-proxy ready public={} admin={} upstreams={}",
            proxy
                .public_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            proxy.admin_addr(),
            proxy
                .upstream_listeners()
                .iter()
                .map(|(u, a)| format!("{}={a}", u.name))
                .collect::<Vec<_>>()
                .join(",")
        );
        let deadline = proxy.drain_deadline();
        if interrupted {
            // The signal came as start-up finished: it still means stop.
            proxy.drain(deadline).await;
            return ExitCode::SUCCESS;
        }
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); proxy.drain(deadline).await }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); proxy.drain(deadline).await }
            _ = proxy.shutdown_requested() => { proxy.drain(deadline).await }
        }
        ExitCode::SUCCESS
    })
}

/// The async runtime `--worker-threads` asks for: 0 = current-thread, N = N work-stealing workers.
fn runtime(workers: u16) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(workers));
        b
    };
    builder.enable_all().build()
}
