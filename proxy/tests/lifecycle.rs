//! The binary's lifecycle against the in-process dev agent: SIGTERM drains (the open
//! connection completes, new inbound ones are refused, exit 0 within the deadline) and
//! `POST /shutdown` ends the proxy.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
