//! Leaf and root rotation under continuous traffic, without a failed connection.

mod common;

use std::time::Duration;

use common::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_and_root_rotation_without_a_failed_connection() {
    init_tracing();
    // Short-lived leaves (10 s): the agent renews them after 6-9 s.
    let agent = tandem_agent::start(tandem_agent::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        leaf_ttl: Duration::from_secs(10),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = agent.url();
    let (app_port, _) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let echo = server_proxy(&url, "echo", "echo", echo_app().await).await;
    let mut c = config(&url, "static-client");
    c.upstreams = tandem_proxy::UpstreamList(vec![
        tandem_proxy::Upstream::new(name("static-server"), 0, None),
        tandem_proxy::Upstream::new(name("echo"), 0, None),
    ]);
    let client = tandem_proxy::start(c).await.unwrap();
    let traffic = Traffic::start(
        client.upstream_addr("static-server").unwrap(),
        "hello world",
    );
    traffic.more(5).await;
    // One connection held open across every rotation.
    let mut long_lived = TcpStream::connect(client.upstream_addr("echo").unwrap())
        .await
        .unwrap();
    assert!(echo_roundtrip(&mut long_lived, b"before rotations").await);

    // Leaf rotation on both sides.
    wait_for("a leaf rotation on both proxies", || async {
        metric(&metrics(&server).await, "tandem_leaf_rotations_total", &[]) >= 1.0
            && metric(&metrics(&client).await, "tandem_leaf_rotations_total", &[]) >= 1.0
    })
    .await;
    traffic.more(5).await;

    // Root rotation: a new CA root; the old one stays trusted until leaves move over.
    let (_, before) = http_get(&format!("{url}/v1/agent/connect/ca/roots")).await;
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    let status = http_put(
        &format!("{url}/v1/connect/ca/configuration"),
        serde_json::json!({ "Provider": "consul", "Config": {} }),
    )
    .await;
    assert_eq!(status, 200);
    let (_, after) = http_get(&format!("{url}/v1/agent/connect/ca/roots")).await;
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_ne!(
        before["ActiveRootID"], after["ActiveRootID"],
        "the active root changed"
    );
    let rotations_at_root_change =
        metric(&metrics(&server).await, "tandem_leaf_rotations_total", &[]);
    wait_for(
        "both proxies to trust the new roots and hold new leaves",
        || async {
            let s = metrics(&server).await;
            let c = metrics(&client).await;
            metric(&s, "tandem_root_updates_total", &[]) >= 1.0
                && metric(&c, "tandem_root_updates_total", &[]) >= 1.0
                && metric(&s, "tandem_leaf_rotations_total", &[]) >= rotations_at_root_change + 1.0
        },
    )
    .await;
    traffic.more(10).await;
    let (ok, failed) = traffic.finish().await;
    assert_eq!(
        failed, 0,
        "no connection failed during rotations ({ok} succeeded)"
    );
    assert!(
        echo_roundtrip(&mut long_lived, b"after rotations").await,
        "the open connection carried on"
    );
    echo.shutdown().await;
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}
