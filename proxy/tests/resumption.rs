//! TLS 1.3 session resumption between two proxies: a second connection to the same instance
//! resumes (no certificates sent or verified), the resumed session carries the identity verified
//! at its full handshake (intentions still decide it), and after a rotation the next handshake
//! is full again (a session is never carried across a leaf or root change).

mod common;

use std::time::Duration;

use common::*;

async fn handshakes(proxy: &tandem_proxy::Proxy, direction: &str, kind: &str) -> f64 {
    metric(
        &metrics(proxy).await,
        "tandem_tls_handshakes_total",
        &[("direction", direction), ("kind", kind)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_resumes_with_the_identity_of_the_first() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app_port, _) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("traffic", || async { get(upstream).await == "hello world" }).await;
    for _ in 0..5 {
        assert_eq!(get(upstream).await, "hello world");
    }
    let resumed = handshakes(&server, "inbound", "resumed").await;
    assert!(resumed >= 4.0, "the later connections resumed: {resumed}");
    assert!(handshakes(&client, "outbound", "resumed").await >= 4.0);

    // A resumed session is still the caller it was verified as: a deny for static-client
    // refuses it.
    set_intention(&url, "static-client", "static-server", "deny").await;
    wait_for("the deny applied", || async {
        get(upstream).await.is_empty()
    })
    .await;
    let before = handshakes(&server, "inbound", "resumed").await;
    assert!(get(upstream).await.is_empty());
    assert!(
        handshakes(&server, "inbound", "resumed").await > before,
        "the refused connection was a resumed one"
    );
    delete_intention(&url, "static-client", "static-server").await;
    wait_for("allowed again", || async {
        get(upstream).await == "hello world"
    })
    .await;

    // A new root re-issues both leaves: the next handshake is a full one.
    let full_before = handshakes(&server, "inbound", "full").await;
    let status = http_put(
        &format!("{url}/v1/connect/ca/configuration"),
        serde_json::json!({"Provider": "consul", "Config": {"PrivateKeyType": "ec", "PrivateKeyBits": 256}}),
    )
    .await;
    assert_eq!(status, 200, "CA rotated");
    wait_for("a full handshake after the rotation", || async {
        let _ = get(upstream).await;
        handshakes(&server, "inbound", "full").await > full_before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(upstream).await, "hello world");
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resumption_every_handshake_is_a_full_one() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app_port, _) = http_app("hello world").await;
    let full_only = |c: &mut tandem_proxy::Config| c.tls_resumption = false;
    let server =
        server_proxy_with(&url, "static-server", "static-server", app_port, full_only).await;
    let client = client_proxy_with(&url, "static-client", "static-server", full_only).await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("traffic", || async { get(upstream).await == "hello world" }).await;
    for _ in 0..5 {
        assert_eq!(get(upstream).await, "hello world");
    }
    assert_eq!(handshakes(&server, "inbound", "resumed").await, 0.0);
    assert!(handshakes(&server, "inbound", "full").await >= 6.0);
    assert_eq!(handshakes(&client, "outbound", "resumed").await, 0.0);
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

/// Round-robin over two instances of one service: every connection resumes, because each
/// instance is offered a ticket it issued itself, not the one of the instance dialed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_of_an_upstream_resumes_its_own_sessions() {
    use std::sync::atomic::Ordering::SeqCst;

    let agent = agent(true).await;
    let url = agent.url();
    let (port_a, hits_a) = http_app("a").await;
    let (port_b, hits_b) = http_app("b").await;
    let a = server_proxy(&url, "static-server", "static-server-a", port_a).await;
    let b = server_proxy(&url, "static-server", "static-server-b", port_b).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("both instances answered", || async {
        let _ = get(upstream).await;
        hits_a.load(SeqCst) > 0 && hits_b.load(SeqCst) > 0
    })
    .await;

    let resumed = || async {
        handshakes(&a, "inbound", "resumed").await + handshakes(&b, "inbound", "resumed").await
    };
    let (before, hits_before) = (resumed().await, hits_a.load(SeqCst));
    for _ in 0..10 {
        let body = get(upstream).await;
        assert!(body == "a" || body == "b", "answered: {body:?}");
    }
    assert!(
        hits_a.load(SeqCst) > hits_before,
        "instance a had some of the connections"
    );
    let resumed = resumed().await - before;
    assert!(resumed >= 10.0, "10 connections, {resumed} resumed");
    client.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
    agent.shutdown().await;
}
