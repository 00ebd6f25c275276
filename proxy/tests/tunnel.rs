//! The opt-in tunnel (`--tunnel`): app connections between two Tandem proxies ride as streams
//! of one mTLS HTTP/2 connection, authorized per stream by the tunnel's peer identity; any
//! other pairing stays one mTLS connection per app connection.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use tandem_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(url: &str, app_port: u16, extra: &[&str]) -> Proxy {
    server_proxy_with(url, "static-server", "static-server", app_port, |c| {
        with_flags(c, extra)
    })
    .await
}

async fn client(url: &str, extra: &[&str]) -> Proxy {
    client_proxy_with(url, "static-client", "static-server", |c| {
        with_flags(c, extra)
    })
    .await
}

/// The agent, `static-server`'s proxy in front of an app and `static-client`'s with its
/// upstream listener, both with the same flags, once the agent lists the server.
struct Mesh {
    agent: tandem_agent::DevAgent,
    url: String,
    server: Proxy,
    client: Proxy,
    upstream: SocketAddr,
}

impl Mesh {
    /// The pair on `agent`, in front of the app on `app`.
    async fn start(agent: tandem_agent::DevAgent, app: u16, flags: &[&str]) -> Mesh {
        let url = agent.url();
        let server = server(&url, app, flags).await;
        let client = client(&url, flags).await;
        let upstream = client.upstream_addr("static-server").unwrap();
        listed(&url).await;
        Mesh {
            agent,
            url,
            server,
            client,
            upstream,
        }
    }

    /// The pair on a new agent (default allow), in front of an echo app.
    async fn echo(flags: &[&str]) -> Mesh {
        let agent = agent(true).await;
        let app = echo_app().await;
        Mesh::start(agent, app, flags).await
    }

    async fn stop(self) {
        self.client.shutdown().await;
        self.server.shutdown().await;
        self.agent.shutdown().await;
    }
}

/// `base` with the tunnel flags of `extra` (`--tunnel`, `--tunnel-max-streams N`, ...).
fn with_flags(base: &mut tandem_proxy::Config, extra: &[&str]) {
    let mut args = vec!["tandem-proxy", "--service", "x"];
    args.extend_from_slice(extra);
    let parsed = <tandem_proxy::Config as clap::Parser>::parse_from(args);
    base.tunnel = parsed.tunnel;
    base.tunnel_max_streams = parsed.tunnel_max_streams;
    base.tunnels_per_instance = parsed.tunnels_per_instance;
    base.tunnel_idle_timeout = parsed.tunnel_idle_timeout;
}

async fn count(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&metrics(proxy).await, name, labels)
}

async fn tunnels_opened(proxy: &Proxy, direction: &str) -> f64 {
    count(
        proxy,
        "tandem_tunnels_opened_total",
        &[("direction", direction)],
    )
    .await
}

async fn tunnels_active(proxy: &Proxy, direction: &str) -> f64 {
    count(proxy, "tandem_tunnels_active", &[("direction", direction)]).await
}

async fn listed(url: &str) {
    wait_for("the server listed", || async {
        passing_instances(url, "static-server").await > 0
    })
    .await;
}

/// An open connection through `upstream` that echoes.
async fn echo_connection(upstream: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(upstream).await.unwrap();
    assert!(echo_roundtrip(&mut s, b"hello").await, "the stream echoes");
    s
}

/// Whether the peer closed `s` (EOF or reset) within a few seconds.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_between_two_tunnel_proxies_share_one_tunnel_and_one_handshake() {
    let mesh = Mesh::echo(&["--tunnel"]).await;
    let (_url, server, client, upstream) = (&mesh.url, &mesh.server, &mesh.client, mesh.upstream);

    // Twenty connections open at once, and a megabyte each way on one of them (more than a
    // stream's flow-control window) with a half-close at the end.
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(echo_connection(upstream).await);
    }
    let mut big = TcpStream::connect(upstream).await.unwrap();
    let payload: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = big.split();
    let sent = payload.clone();
    let (written, echoed) = tokio::join!(
        async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async move {
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            back
        }
    );
    let () = written;
    assert_eq!(
        echoed.len(),
        payload.len(),
        "every byte came back, then EOF"
    );
    assert!(echoed == payload, "in order");
    for s in &mut open {
        assert!(echo_roundtrip(s, b"again").await);
    }

    assert_eq!(tunnels_opened(client, "outbound").await, 1.0);
    assert_eq!(tunnels_opened(server, "inbound").await, 1.0);
    let streams = count(
        server,
        "tandem_tunnel_streams_total",
        &[("direction", "inbound")],
    )
    .await;
    assert_eq!(streams, 21.0, "every app connection was a stream");
    let full = count(
        client,
        "tandem_tls_handshakes_total",
        &[("direction", "outbound"), ("kind", "full")],
    )
    .await;
    let resumed = count(
        client,
        "tandem_tls_handshakes_total",
        &[("direction", "outbound"), ("kind", "resumed")],
    )
    .await;
    assert_eq!(full + resumed, 1.0, "one TLS handshake for 21 connections");
    // Each stream is an inbound connection of its own, counted and logged as one.
    assert!(
        count(
            server,
            "tandem_connections_opened_total",
            &[("direction", "inbound")]
        )
        .await
            >= 21.0
    );
    drop(open);
    mesh.stop().await;
}

/// Sends `len` bytes of stream `n`'s pattern through `upstream` and reads the echo back, with a
/// half-close after the last byte; whether every byte came back in order, then EOF.
async fn echo_through(upstream: SocketAddr, n: u32, len: usize) -> bool {
    let pattern = |i: usize| (i as u32).wrapping_mul(31).wrapping_add(n) as u8;
    let mut s = TcpStream::connect(upstream).await.unwrap();
    let (mut r, mut w) = s.split();
    let (_, back) = tokio::join!(
        async move {
            let chunk: Vec<u8> = (0..len).map(pattern).collect();
            for part in chunk.chunks(100_003) {
                w.write_all(part).await.unwrap();
            }
            w.shutdown().await.unwrap();
        },
        async move {
            let mut back = Vec::with_capacity(len);
            r.read_to_end(&mut back).await.map(|_| back)
        }
    );
    back.is_ok_and(|b| b.len() == len && b.iter().enumerate().all(|(i, &x)| x == pattern(i)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_many_windows_at_once_each_in_order() {
    let mesh = Mesh::echo(&["--tunnel"]).await;
    // Four streams at once, 6 MiB each way: more than a stream's window (1 and 2 MiB) and the
    // tunnel's (1 and 5 MiB) several times over, so each goes on only as the other end reads
    // and opens its windows again.
    let upstream = mesh.upstream;
    let transfers = (0..4).map(|n| tokio::spawn(echo_through(upstream, n, 6 << 20)));
    let done = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join_all(transfers),
    )
    .await
    .expect("the transfers finish (a window that never opens again stalls them)");
    for (n, ok) in done.into_iter().enumerate() {
        assert!(
            ok.unwrap(),
            "stream {n} echoed every byte in order, then EOF"
        );
    }
    assert_eq!(
        tunnels_opened(&mesh.client, "outbound").await,
        1.0,
        "one tunnel carried them"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_stalls_holds_up_no_other_stream_of_its_tunnel() {
    let mesh = Mesh::echo(&["--tunnel"]).await;
    let upstream = mesh.upstream;
    let mut other = echo_connection(upstream).await;

    // Writes and never reads the echo: everything between fills up, the echo app's socket,
    // both proxies' sockets, then the stream's windows in the tunnel both ways.
    let stalled = TcpStream::connect(upstream).await.unwrap();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        let (_r, mut w) = stalled.into_split();
        let chunk = vec![7u8; 64 << 10];
        while w.write_all(&chunk).await.is_ok() {
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut last = usize::MAX;
    let stalled_at = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = written.load(std::sync::atomic::Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
    .expect("the writer is held back");
    assert!(
        stalled_at > 2 << 20,
        "{stalled_at} bytes went in before it stalled"
    );

    // The other stream, and a new one, go on.
    for _ in 0..3 {
        assert!(
            tokio::time::timeout(
                Duration::from_secs(5),
                echo_roundtrip(&mut other, b"still here")
            )
            .await
            .is_ok_and(|echoed| echoed),
            "an open stream echoes while another one is stalled"
        );
    }
    let mut fresh = tokio::time::timeout(Duration::from_secs(5), echo_connection(upstream))
        .await
        .expect("a new stream opens and echoes while another one is stalled");
    assert!(echo_roundtrip(&mut fresh, b"fresh").await);
    assert_eq!(
        tunnels_opened(&mesh.client, "outbound").await,
        1.0,
        "on the same tunnel"
    );
    writer.abort();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_both_ends_opting_in_every_connection_is_its_own_mtls_connection() {
    let agent = agent(true).await;
    let url = agent.url();
    let app = echo_app().await;

    // A tunnel client and a plain server: the server does not advertise it, none is offered.
    let plain_server = server(&url, app, &[]).await;
    let tunnel_client = client(&url, &["--tunnel"]).await;
    let upstream = tunnel_client.upstream_addr("static-server").unwrap();
    listed(&url).await;
    for _ in 0..3 {
        let mut s = echo_connection(upstream).await;
        assert!(echo_roundtrip(&mut s, b"x").await);
    }
    assert_eq!(tunnels_opened(&tunnel_client, "outbound").await, 0.0);

    // The server's sidecar claims the tunnel while its proxy does not speak it: the client
    // offers it, the handshake does not select it, and the connection is used as it is.
    let (status, body) = http_get(&format!(
        "{url}/v1/agent/service/static-server-sidecar-proxy"
    ))
    .await;
    assert_eq!(status, 200);
    let mut sidecar: serde_json::Value = serde_json::from_str(&body).unwrap();
    sidecar["Meta"] = json!({"tandem-tunnel": "tandem-tunnel/1"});
    let registration = json!({
        "Kind": sidecar["Kind"], "ID": sidecar["ID"], "Name": sidecar["Service"],
        "Address": sidecar["Address"], "Port": sidecar["Port"], "Meta": sidecar["Meta"],
        "Proxy": sidecar["Proxy"],
    });
    assert_eq!(
        http_put(&format!("{url}/v1/agent/service/register"), registration).await,
        200
    );
    wait_for("a fallback after the claim", || async {
        let mut s = TcpStream::connect(upstream).await.unwrap();
        assert!(
            echo_roundtrip(&mut s, b"y").await,
            "the fallback connection echoes"
        );
        count(
            &tunnel_client,
            "tandem_tunnel_fallbacks_total",
            &[("direction", "outbound"), ("reason", "not_negotiated")],
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(tunnels_opened(&tunnel_client, "outbound").await, 0.0);
    tunnel_client.shutdown().await;
    plain_server.shutdown().await;

    // A plain client and a tunnel server: the server's listener answers it as before.
    let tunnel_server = server(&url, app, &["--tunnel"]).await;
    let plain_client = client(&url, &[]).await;
    let upstream = plain_client.upstream_addr("static-server").unwrap();
    listed(&url).await;
    wait_for("the plain client reaches the tunnel server", || async {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await {
            Ok(Ok(mut s)) => echo_roundtrip(&mut s, b"z").await,
            _ => false,
        }
    })
    .await;
    assert_eq!(tunnels_opened(&tunnel_server, "inbound").await, 0.0);
    plain_client.shutdown().await;
    tunnel_server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_service_decides_each_request_of_a_stream() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app, _) = http_app("hello world").await;
    let config = json!({"Kind": "service-defaults", "Name": "static-server", "Protocol": "http"});
    assert_eq!(http_put(&format!("{url}/v1/config"), config).await, 200);
    let permissions = json!({"Permissions": [
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
    ]});
    let intention =
        format!("{url}/v1/connect/intentions/exact?source=static-client&destination=static-server");
    assert_eq!(http_put(&intention, permissions).await, 200);
    let mesh = Mesh::start(agent, app, &["--tunnel"]).await;
    let (server, client, upstream) = (&mesh.server, &mesh.client, mesh.upstream);

    let request = |path: &'static str| async move {
        let mut s = TcpStream::connect(upstream).await.unwrap();
        let head =
            format!("GET {path} HTTP/1.1\r\nhost: static-server\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    // Until the server has the protocol and the L7 intention, /admin may be answered as tcp.
    wait_for("GET /admin denied by the L7 permission", || async {
        request("/admin").await.starts_with("HTTP/1.1 403")
    })
    .await;
    let denied = request("/admin").await;
    assert!(denied.ends_with("RBAC: access denied"), "{denied}");
    assert!(request("/").await.ends_with("hello world"));
    // (A tunnel may have closed while /admin was still decided as tcp, at L4.)
    assert!(tunnels_opened(client, "outbound").await >= 1.0);
    let fallbacks = metrics(client)
        .await
        .contains("tandem_tunnel_fallbacks_total{");
    assert!(!fallbacks, "every request rode a tunnel");
    assert!(
        count(
            server,
            "tandem_http_requests_denied_total",
            &[("reason", "permission")]
        )
        .await
            >= 1.0
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_closes_the_peers_streams_then_its_tunnel() {
    let mesh = Mesh::echo(&["--tunnel"]).await;
    let (url, server, client, upstream) = (&mesh.url, &mesh.server, &mesh.client, mesh.upstream);
    let mut first = echo_connection(upstream).await;
    let mut second = echo_connection(upstream).await;
    assert_eq!(tunnels_active(server, "inbound").await, 1.0);

    set_intention(url, "static-client", "static-server", "deny").await;
    assert!(closed(&mut first).await, "the first stream was closed");
    assert!(closed(&mut second).await, "the second stream was closed");
    wait_for("the tunnel closed at both ends", || async {
        tunnels_active(server, "inbound").await == 0.0
            && tunnels_active(client, "outbound").await == 0.0
    })
    .await;
    // A new connection gets a tunnel and a stream, and the stream is closed unanswered.
    let mut refused = TcpStream::connect(upstream).await.unwrap();
    let _ = refused.write_all(b"hello").await;
    assert!(closed(&mut refused).await, "a denied stream is closed");
    // Counted when the server's side of the stream is dropped, just after it closed it.
    wait_for("the denied stream counted", || async {
        count(
            server,
            "tandem_connections_closed_total",
            &[("direction", "inbound"), ("reason", "denied")],
        )
        .await
            >= 1.0
    })
    .await;

    delete_intention(url, "static-client", "static-server").await;
    wait_for("allowed again", || async {
        match TcpStream::connect(upstream).await {
            Ok(mut s) => echo_roundtrip(&mut s, b"back").await,
            Err(_) => false,
        }
    })
    .await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_opens_a_new_tunnel_and_the_old_one_drains() {
    let mesh = Mesh::echo(&["--tunnel"]).await;
    let (url, server, client, upstream) = (&mesh.url, &mesh.server, &mesh.client, mesh.upstream);
    let mut before = echo_connection(upstream).await;
    assert_eq!(tunnels_opened(client, "outbound").await, 1.0);

    let status = http_put(
        &format!("{url}/v1/connect/ca/configuration"),
        json!({"Provider": "consul", "Config": {"PrivateKeyType": "ec", "PrivateKeyBits": 256}}),
    )
    .await;
    assert_eq!(status, 200, "CA rotated");
    wait_for("a new tunnel after the rotation", || async {
        if let Ok(mut s) = TcpStream::connect(upstream).await {
            let _ = echo_roundtrip(&mut s, b"new").await;
        }
        tunnels_opened(client, "outbound").await >= 2.0
    })
    .await;
    // The stream opened before the rotation still carries bytes on the old tunnel.
    assert!(echo_roundtrip(&mut before, b"still here").await);
    drop(before);
    wait_for("the old tunnel closed once its stream ended", || async {
        tunnels_active(client, "outbound").await <= 1.0
            && tunnels_active(server, "inbound").await <= 1.0
    })
    .await;
    let mut after = echo_connection(upstream).await;
    assert!(echo_roundtrip(&mut after, b"ok").await);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tunnels_fall_back_to_mtls_and_idle_ones_close() {
    let limits = [
        "--tunnel",
        "--tunnel-max-streams",
        "2",
        "--tunnels-per-instance",
        "2",
        "--tunnel-idle-timeout",
        "300ms",
    ];
    let mesh = Mesh::echo(&limits).await;
    let (_url, server, client, upstream) = (&mesh.url, &mesh.server, &mesh.client, mesh.upstream);
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(echo_connection(upstream).await);
    }
    assert_eq!(tunnels_opened(client, "outbound").await, 2.0);
    let full = count(
        client,
        "tandem_tunnel_fallbacks_total",
        &[("direction", "outbound"), ("reason", "full")],
    )
    .await;
    assert_eq!(
        full, 1.0,
        "the fifth connection got its own mTLS connection"
    );
    for s in &mut open {
        assert!(echo_roundtrip(s, b"each").await);
    }
    drop(open);
    wait_for("idle tunnels closed at both ends", || async {
        tunnels_active(client, "outbound").await == 0.0
            && tunnels_active(server, "inbound").await == 0.0
    })
    .await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_short_connections_keep_one_tunnel_busy_past_the_idle_timeout() {
    let flags = ["--tunnel", "--tunnel-idle-timeout", "400ms"];
    let mesh = Mesh::echo(&flags).await;
    let (_url, server, client, upstream) = (&mesh.url, &mesh.server, &mesh.client, mesh.upstream);
    // One connection at a time for three idle timeouts: the tunnel never sits unused for one.
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        let mut s = echo_connection(upstream).await;
        drop(s.shutdown().await);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(n > 10, "{n} connections");
    assert_eq!(tunnels_opened(client, "outbound").await, 1.0);
    assert_eq!(tunnels_opened(server, "inbound").await, 1.0);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_denied_from_the_start_has_its_stream_refused_and_counted() {
    let agent = agent(true).await;
    let url = agent.url();
    let app = echo_app().await;
    set_intention(&url, "static-client", "static-server", "deny").await;
    let mesh = Mesh::start(agent, app, &["--tunnel"]).await;
    let (server, client, upstream) = (&mesh.server, &mesh.client, mesh.upstream);
    let mut s = TcpStream::connect(upstream).await.unwrap();
    let _ = s.write_all(b"hello").await;
    assert!(closed(&mut s).await, "the denied stream is closed");
    wait_for("the refusal counted as an intention decision", || async {
        count(
            server,
            "tandem_authorizations_total",
            &[("decision", "denied")],
        )
        .await
            >= 1.0
    })
    .await;
    let streams = count(
        server,
        "tandem_tunnel_streams_total",
        &[("direction", "inbound")],
    )
    .await;
    let opened = tunnels_opened(client, "outbound").await;
    assert!(
        streams >= 1.0 && opened >= 1.0,
        "the refused connection was a stream of a tunnel: {streams} streams, {opened} tunnels"
    );
    wait_for("then the tunnel closed", || async {
        tunnels_active(server, "inbound").await == 0.0
    })
    .await;
    mesh.stop().await;
}
