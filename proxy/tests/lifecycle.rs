//! The binary's lifecycle against the in-process dev agent: SIGTERM drains (the open
//! connection completes, new inbound ones are refused, exit 0 within the deadline) and
//! `POST /shutdown` ends the proxy.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Running {
    child: Child,
    public: Option<SocketAddr>,
    admin: SocketAddr,
}

/// Starts the binary and reads its "tandem-proxy ready ..." line.
fn spawn(args: &[&str]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem-proxy"));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, _) in std::env::vars() {
        if k.starts_with("TANDEM_") || k.starts_with("CONSUL_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("the proxy binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the proxy prints its ready line");
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(
        line.starts_with("tandem-proxy ready"),
        "unexpected first line: {line:?}"
    );
    Running {
        public: field("public=").parse().ok(),
        admin: field("admin=").parse().unwrap(),
        child,
    }
}

/// Starts the binary as `static-server` in front of `app`, with the agent at `url`, its
/// listeners on free ports and the `extra` flags.
fn spawn_server(url: &str, app: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "--service",
        "static-server",
        "--service-port",
        app,
        "--public-listener",
        "127.0.0.1:0",
        "--admin-listener",
        "127.0.0.1:0",
        "--advertise-address",
        "127.0.0.1",
        "--consul-http-addr",
        url,
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// Sends SIGTERM to the running binary.
fn sigterm(proxy: &Running) {
    let pid = proxy.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits for the process to exit, up to `limit`; returns its exit code.
async fn exit_code(child: &mut Child, limit: Duration) -> Option<i32> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > until {
            let _ = child.kill();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_connections_and_exits_0() {
    let agent = agent(true).await;
    let url = agent.url();
    let app = echo_app().await.to_string();
    let mut server = spawn_server(
        &url,
        &app,
        &["--service-id", "static-server", "--drain-deadline", "10s"],
    );
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    let mut open = TcpStream::connect(upstream).await.unwrap();
    open.write_all(b"first").await.unwrap();
    let mut buf = [0u8; 5];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"first");

    sigterm(&server);

    // New inbound connections are refused, the proxy is deregistered and not ready...
    let public = server.public.unwrap();
    wait_for("the public listener to close", || async {
        TcpStream::connect(public).await.is_err()
    })
    .await;
    wait_for("deregistration", || async {
        http_get(&format!(
            "{url}/v1/agent/service/static-server-sidecar-proxy"
        ))
        .await
        .0 == 404
    })
    .await;
    let ready = http_get(&format!("http://{}/ready", server.admin)).await.0;
    assert_ne!(ready, 200, "a draining proxy is not ready");
    // ...while the open connection carries on and completes.
    open.write_all(b"second").await.unwrap();
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"second");
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();

    assert_eq!(
        exit_code(&mut server.child, Duration::from_secs(10)).await,
        Some(0),
        "exit 0 within the deadline"
    );
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_closes_what_is_left_and_exits_0() {
    let agent = agent(true).await;
    let url = agent.url();
    let app = echo_app().await.to_string();
    let mut server = spawn_server(&url, &app, &["--drain-deadline", "500ms"]);
    let client = client_proxy(&url, "static-client", "static-server").await;
    let mut open = TcpStream::connect(client.upstream_addr("static-server").unwrap())
        .await
        .unwrap();
    open.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    open.read_exact(&mut buf).await.unwrap();
    sigterm(&server);
    // The connection never finishes by itself: the deadline closes it and the proxy exits 0.
    assert_eq!(
        exit_code(&mut server.child, Duration::from_secs(15)).await,
        Some(0)
    );
    let r = tokio::time::timeout(DEADLINE, open.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the leftover connection was closed: {r:?}"
    );
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_shutdown_ends_the_proxy() {
    let agent = agent(true).await;
    let url = agent.url();
    for path in ["/shutdown", "/quitquitquit"] {
        let mut proxy = spawn(&[
            "--service",
            "job",
            "--public-listener",
            "127.0.0.1:0",
            "--admin-listener",
            "127.0.0.1:0",
            "--advertise-address",
            "127.0.0.1",
            "--consul-http-addr",
            &url,
        ]);
        assert_eq!(
            http_get(&format!("http://{}/ready", proxy.admin)).await.0,
            200
        );
        assert_eq!(
            http_post(&format!("http://{}{path}", proxy.admin)).await,
            200
        );
        assert_eq!(
            exit_code(&mut proxy.child, Duration::from_secs(30)).await,
            Some(0),
            "{path} ends the proxy"
        );
    }
    agent.shutdown().await;
}
