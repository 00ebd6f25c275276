//! The connection limits: the handshake timeout, `--max-connections`, the idle timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_off_at_the_handshake_timeout() {
    let agent = agent(true).await;
    let mut c = config(&agent.url(), "static-server");
    c.service_port = Some(echo_app().await);
    c.handshake_timeout = Duration::from_millis(300);
    let server = tandem_proxy::start(c).await.unwrap();
    let mut silent = TcpStream::connect(server.public_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(DEADLINE, silent.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the proxy closes a silent connection: {r:?}"
    );
    let m = metrics(&server).await;
    assert_eq!(
        metric(
            &m,
            "tandem_tls_handshake_failures_total",
            &[("reason", "timeout")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tandem_connections_active", &[("direction", "inbound")]),
        0.0
    );
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_excess() {
    let agent = agent(true).await;
    let mut c = config(&agent.url(), "static-server");
    c.service_port = Some(echo_app().await);
    c.max_connections = 1;
    c.handshake_timeout = Duration::from_secs(60);
    let server = tandem_proxy::start(c).await.unwrap();
    // Hold the only slot with a connection that never handshakes (the agent's TCP check may
    // take the slot for a moment: open another until one is held).
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    wait_for("a connection to hold the only slot", || {
        let held = held.clone();
        let server = &server;
        async move {
            if metric(
                &metrics(server).await,
                "tandem_connections_active",
                &[("direction", "inbound")],
            ) == 1.0
            {
                return true;
            }
            held.lock().await.push(
                TcpStream::connect(server.public_addr().unwrap())
                    .await
                    .unwrap(),
            );
            false
        }
    })
    .await;
    let refused_before = metric(
        &metrics(&server).await,
        "tandem_connections_refused_total",
        &[("reason", "max_connections")],
    );
    let mut extra = TcpStream::connect(server.public_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(DEADLINE, extra.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the connection over the limit is closed: {r:?}"
    );
    let m = metrics(&server).await;
    assert!(
        metric(
            &m,
            "tandem_connections_refused_total",
            &[("reason", "max_connections")]
        ) > refused_before,
        "{m}"
    );
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let agent = agent(true).await;
    let url = agent.url();
    let mut c = config(&url, "static-server");
    c.service_port = Some(echo_app().await);
    c.idle_timeout = Duration::from_millis(300);
    let server = tandem_proxy::start(c).await.unwrap();
    let client = client_proxy(&url, "static-client", "static-server").await;
    let mut s = TcpStream::connect(client.upstream_addr("static-server").unwrap())
        .await
        .unwrap();
    assert!(echo_roundtrip(&mut s, b"then silence").await);
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection is closed: {r:?}"
    );
    let m = metrics(&server).await;
    assert_eq!(
        metric(
            &m,
            "tandem_connections_closed_total",
            &[("reason", "idle_timeout")]
        ),
        1.0,
        "{m}"
    );
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}
