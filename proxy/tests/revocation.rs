//! A changed intention that denies a caller closes its open connection (and, with the option off, leaves it up).

mod common;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_closes_the_open_connection_and_leaves_allowed_ones_up() {
    let agent = agent(true).await;
    let url = agent.url();
    let server = server_proxy(&url, "static-server", "static-server", echo_app().await).await;
    let client_a = client_proxy(&url, "client-a", "static-server").await;
    let client_b = client_proxy(&url, "client-b", "static-server").await;
    let mut a = TcpStream::connect(client_a.upstream_addr("static-server").unwrap())
        .await
        .unwrap();
    let mut b = TcpStream::connect(client_b.upstream_addr("static-server").unwrap())
        .await
        .unwrap();
    assert!(echo_roundtrip(&mut a, b"a1").await);
    assert!(echo_roundtrip(&mut b, b"b1").await);

    set_intention(&url, "client-b", "static-server", "deny").await;
    // b's open connection is closed by the server side (EOF reaches the app through client-b).
    let mut buf = [0u8; 8];
    let closed = tokio::time::timeout(DEADLINE, b.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the denied connection is closed: {closed:?}"
    );
    // a is untouched.
    assert!(echo_roundtrip(&mut a, b"a2 still up").await);
    let m = metrics(&server).await;
    assert_eq!(
        metric(&m, "tandem_connections_revoked_total", &[]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tandem_connections_closed_total",
            &[("reason", "revoked")]
        ),
        1.0,
        "{m}"
    );
    server.shutdown().await;
    client_a.shutdown().await;
    client_b.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_survive_a_deny_when_the_option_is_off() {
    let agent = agent(true).await;
    let url = agent.url();
    let mut c = config(&url, "static-server");
    c.service_port = Some(echo_app().await);
    c.close_denied_connections = false;
    let server = tandem_proxy::start(c).await.unwrap();
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    let mut open = TcpStream::connect(upstream).await.unwrap();
    assert!(echo_roundtrip(&mut open, b"before").await);
    set_intention(&url, "static-client", "static-server", "deny").await;
    wait_for("new connections to be denied", || async {
        let mut s = TcpStream::connect(upstream).await.unwrap();
        !echo_roundtrip(&mut s, b"new").await
    })
    .await;
    assert!(
        echo_roundtrip(&mut open, b"after").await,
        "with the option off the open connection stays"
    );
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}
