//! Issue 5 in-process, under continuous traffic: rotation of leaf and roots, a deny closing an
//! open connection, the handshake timeout, the agent stopped and restarted, `/metrics` parsed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client looping HTTP GETs through `upstream` until stopped; counts successes and failures.
struct Traffic {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(upstream: std::net::SocketAddr, expected: &'static str) -> Traffic {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, f, s) = (ok.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let body = get(upstream).await;
                if body == expected {
                    o.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                    eprintln!("traffic: unexpected reply {body:?}");
                }
            }
        });
        Traffic {
            ok,
            failed,
            stop,
            task,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits for `n` more successful connections.
    async fn more(&self, n: usize) {
        let target = self.ok() + n;
        wait_for("more successful connections", || async {
            self.ok() >= target
        })
        .await;
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && buf == msg
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stopped_and_restarted_mid_traffic() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app_port, _) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let traffic = Traffic::start(
        client.upstream_addr("static-server").unwrap(),
        "hello world",
    );
    traffic.more(5).await;

    agent.pause().await;
    traffic.more(20).await;
    wait_for("staleness to show in the metrics", || async {
        let m = metrics(&client).await;
        metric(&m, "tandem_agent_watch_errors_total", &[]) >= 1.0
            && metric(&m, "tandem_agent_watch_staleness_seconds", &[]) > 0.0
    })
    .await;
    assert_eq!(
        http_get(&format!("http://{}/ready", server.admin_addr()))
            .await
            .0,
        200,
        "still ready: serving from the last good state"
    );

    // The restarted agent has forgotten every registration; the proxies register again.
    agent.resume().await;
    wait_for("the services to be registered again", || async {
        http_get(&format!(
            "{url}/v1/agent/service/static-server-sidecar-proxy"
        ))
        .await
        .0 == 200
            && http_get(&format!("{url}/v1/agent/service/static-server"))
                .await
                .0
                == 200
            && http_get(&format!("{url}/v1/agent/service/static-client"))
                .await
                .0
                == 200
    })
    .await;
    wait_for("the server to be discoverable again", || async {
        passing_instances(&url, "static-server").await == 1
    })
    .await;
    traffic.more(10).await;
    let (ok, failed) = traffic.finish().await;
    assert_eq!(
        failed, 0,
        "no connection failed while the agent was away ({ok} succeeded)"
    );
    let m = metrics(&server).await;
    assert!(metric(&m, "tandem_registrations_total", &[]) >= 2.0, "{m}");
    wait_for("staleness to return to 0", || async {
        let m = metrics(&client).await;
        let stale = metric(&m, "tandem_agent_watch_staleness_seconds", &[]);
        if stale > 0.0 {
            eprintln!(
                "{}",
                m.lines()
                    .filter(|l| l.starts_with("tandem_agent_watch_staleness"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        stale == 0.0
    })
    .await;
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_an_agent_that_is_down() {
    let agent = agent(true).await;
    let url = agent.url();
    agent.pause().await;
    let (app_port, _) = http_app("hello world").await;
    let mut c = config(&url, "static-server");
    c.service_port = Some(app_port);
    let starting = tokio::spawn(tandem_proxy::start(c));
    // Not up while the agent is down...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!starting.is_finished(), "start-up waits for the agent");
    // ...and up once it is back.
    agent.resume().await;
    let server = tokio::time::timeout(DEADLINE, starting)
        .await
        .expect("starts once the agent is back")
        .unwrap()
        .unwrap();
    assert_eq!(
        http_get(&format!("http://{}/ready", server.admin_addr()))
            .await
            .0,
        200
    );
    assert_eq!(
        http_get(&format!(
            "{url}/v1/agent/service/static-server-sidecar-proxy"
        ))
        .await
        .0,
        200
    );
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_is_read_and_sent() {
    init_tracing();
    let agent = tandem_agent::start(tandem_agent::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        require_token: Some("s3cr3t".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = agent.url();
    let file = std::env::temp_dir().join(format!("tandem-proxy-test-token-{}", std::process::id()));
    std::fs::write(&file, "s3cr3t\n").unwrap();
    let (app_port, _) = http_app("hello world").await;
    let mut c = config(&url, "static-server");
    c.service_port = Some(app_port);
    c.token_file = Some(file.clone());
    let server = tandem_proxy::start(c).await.unwrap();
    let mut c = config(&url, "static-client");
    c.token = Some("s3cr3t".into());
    c.upstreams = tandem_proxy::UpstreamList(vec![tandem_proxy::Upstream::new(
        name("static-server"),
        0,
        None,
    )]);
    let client = tandem_proxy::start(c).await.unwrap();
    wait_for("the seed GET with ACL tokens", || async {
        get(client.upstream_addr("static-server").unwrap()).await == "hello world"
    })
    .await;
    std::fs::remove_file(&file).ok();
    server.shutdown().await;
    client.shutdown().await;
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
