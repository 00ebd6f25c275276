//! `/metrics` follows the traffic and parses as OpenMetrics; `/config` never shows the token.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_follow_the_traffic() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app_port, _) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    for _ in 0..5 {
        assert_eq!(get(upstream).await, "hello world");
    }
    wait_for("connections to be closed on both sides", || async {
        metric(
            &metrics(&server).await,
            "tandem_connections_closed_total",
            &[("direction", "inbound")],
        ) >= 5.0
            && metric(
                &metrics(&client).await,
                "tandem_connections_closed_total",
                &[("direction", "outbound")],
            ) >= 5.0
    })
    .await;
    let c = metrics(&client).await;
    let s = metrics(&server).await;
    assert_eq!(
        metric(
            &c,
            "tandem_connections_opened_total",
            &[("direction", "outbound")]
        ),
        5.0,
        "{c}"
    );
    assert_eq!(
        metric(
            &c,
            "tandem_connections_closed_total",
            &[("direction", "outbound"), ("reason", "completed")]
        ),
        5.0
    );
    assert_eq!(
        metric(
            &c,
            "tandem_connections_active",
            &[("direction", "outbound")]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &c,
            "tandem_upstream_connect_duration_seconds_count",
            &[("upstream", "static-server")]
        ),
        5.0,
        "{c}"
    );
    // The agent's TCP check also connects to the public listener (and never completes a handshake).
    assert!(
        metric(
            &s,
            "tandem_connections_opened_total",
            &[("direction", "inbound")]
        ) >= 5.0,
        "{s}"
    );
    assert_eq!(
        metric(
            &s,
            "tandem_authorizations_total",
            &[("decision", "allowed")]
        ),
        5.0,
        "{s}"
    );
    assert_eq!(
        metric(
            &s,
            "tandem_connections_closed_total",
            &[("direction", "inbound"), ("reason", "completed")]
        ),
        5.0,
        "{s}"
    );
    // 5 requests of 35 bytes each way in, 5 replies out: the counters agree on both sides.
    let request_bytes = metric(
        &c,
        "tandem_bytes_received_total",
        &[("direction", "outbound")],
    );
    assert_eq!(
        request_bytes,
        5.0 * "GET / HTTP/1.0\r\nhost: test\r\n\r\n".len() as f64
    );
    assert_eq!(
        metric(
            &s,
            "tandem_bytes_received_total",
            &[("direction", "inbound")]
        ),
        request_bytes
    );
    assert_eq!(
        metric(&s, "tandem_bytes_sent_total", &[("direction", "inbound")]),
        metric(&c, "tandem_bytes_sent_total", &[("direction", "outbound")])
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(metric(&s, "tandem_certificate_expiry_timestamp_seconds", &[]) > now);
    assert_eq!(metric(&s, "tandem_ready", &[]), 1.0);
    // The watches, the accept loops and the admin connection at least.
    assert!(metric(&s, "tandem_tasks", &[]) >= 5.0, "{s}");
    assert_eq!(metric(&s, "tandem_trust_roots", &[]), 1.0);
    assert_eq!(
        metric(
            &c,
            "tandem_upstream_instances",
            &[("upstream", "static-server")]
        ),
        1.0
    );
    assert_eq!(metric(&s, "tandem_intentions", &[]), 0.0);

    // The other admin endpoints.
    let admin = server.admin_addr();
    assert!(admin.ip().is_loopback());
    assert_eq!(http_get(&format!("http://{admin}/live")).await.0, 200);
    assert_eq!(http_get(&format!("http://{admin}/ready")).await.0, 200);
    let (status, config) = http_get(&format!("http://{admin}/config")).await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["settings"]["service"], "static-server");
    assert_eq!(config["settings"]["service_port"], app_port);
    assert_eq!(
        http_get(&format!("http://{admin}/shutdown")).await.0,
        405,
        "GET /shutdown does nothing"
    );
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_never_shows_the_token() {
    let agent = agent(true).await;
    let mut c = config(&agent.url(), "static-client");
    c.token = Some("s3cr3t-token".into());
    let proxy = tandem_proxy::start(c).await.unwrap();
    let (status, body) = http_get(&format!("http://{}/config", proxy.admin_addr())).await;
    assert_eq!(status, 200);
    assert!(!body.contains("s3cr3t-token"), "{body}");
    assert!(body.contains("set (not shown)"), "{body}");
    proxy.shutdown().await;
    agent.shutdown().await;
}
