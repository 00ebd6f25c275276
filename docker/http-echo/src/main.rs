//! `http-echo`: a local stand-in for `hashicorp/http-echo`, which the seed walkthrough runs as
//! `static-server` but which cannot be pulled here. Same flags (`-text`, `-listen`,
//! `-status-code`, `-version`), same answer: the text verbatim plus a newline, to every request.

mod flags;
mod server;

use std::process::ExitCode;

use flags::Command;
use server::{Reply, Server};

fn main() -> ExitCode {
    let options = match flags::parse(std::env::args().skip(1)) {
        Ok(Command::Serve(options)) => options,
        Ok(Command::Version) => {
            eprintln!("http-echo v{} (tandem stand-in)", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            eprintln!("{}", flags::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{err}");
            return exit_code(err.exit_code);
        }
    };
    let addr = match flags::resolve_listen(&options.listen) {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("{message}");
            return exit_code(2);
        }
    };
    let reply = match Reply::new(&options.text, options.status) {
        Ok(reply) => reply,
        Err(message) => {
            eprintln!("{message}");
            return exit_code(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("http-echo: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(addr, reply).await {
            Ok(server) => server,
            Err(err) => {
                eprintln!("http-echo: cannot listen on {addr}: {err}");
                return ExitCode::FAILURE;
            }
        };
        match server.local_addr() {
            Ok(bound) => eprintln!("[INFO] server is listening on {bound}"),
            Err(_) => eprintln!("[INFO] server is listening on {addr}"),
        }
        // As PID 1 in a container, SIGTERM is ignored unless handled: without this,
        // `podman kube down` waits its full grace period before killing us.
        server.run(shutdown_signal()).await;
        eprintln!("[INFO] shutting down");
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            eprintln!("http-echo: cannot install signal handlers; stop me with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
