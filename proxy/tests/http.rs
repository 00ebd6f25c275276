//! A service whose protocol is HTTP: `service-defaults` marks it, an L7 intention's permissions
//! decide each request on one kept-alive connection (403 for a denied one, the connection left
//! open), an intention change applies to the next request, gRPC gets `grpc-status: 7`, and the
//! requests are counted in `/metrics`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// An app speaking HTTP/1.1 (keep-alive) and h2: answers `hello world` on `/` and `admin` on
/// `/admin`; counts the connections it accepted.
async fn keep_alive_app() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let body = if req.uri().path().starts_with("/admin") {
                        "admin"
                    } else {
                        "hello world"
                    };
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (port, connections)
}

/// The keep-alive app, `static-server`'s proxy in front of it and `static-client`'s with its
/// upstream listener, once the agent lists the server; and the app's connection count.
async fn pair(
    agent_url: &str,
) -> (
    tandem_proxy::Proxy,
    tandem_proxy::Proxy,
    SocketAddr,
    Arc<AtomicUsize>,
) {
    let (app_port, app_connections) = keep_alive_app().await;
    let server = server_proxy(agent_url, "static-server", "static-server", app_port).await;
    let client = client_proxy(agent_url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("the server listed", || async {
        passing_instances(agent_url, "static-server").await > 0
    })
    .await;
    (server, client, upstream, app_connections)
}

async fn put_config(agent_url: &str, entry: Value) {
    let status = http_put(&format!("{agent_url}/v1/config"), entry).await;
    assert_eq!(status, 200, "config entry written");
}

/// `service-defaults` for `static-server` with `Protocol = "http"`.
async fn mark_http(agent_url: &str) {
    put_config(
        agent_url,
        json!({"Kind": "service-defaults", "Name": "static-server", "Protocol": "http"}),
    )
    .await;
}

async fn put_permissions(agent_url: &str, permissions: Value) {
    let status = http_put(
        &format!(
            "{agent_url}/v1/connect/intentions/exact?source=static-client&destination=static-server"
        ),
        json!({ "Permissions": permissions }),
    )
    .await;
    assert_eq!(status, 200, "L7 intention written");
}

/// One HTTP/1.1 connection to `addr`, kept alive across requests.
struct Http1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Http1 {
    async fn connect(addr: SocketAddr) -> Http1 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        Http1 { sender }
    }

    /// `GET path`: the status and body; panics if the connection is gone.
    async fn get(&mut self, path: &str) -> (u16, String) {
        self.sender
            .ready()
            .await
            .expect("the connection is still open");
        let request = hyper::Request::get(path)
            .header("host", "static-server")
            .body(Empty::new())
            .unwrap();
        let answer = self.sender.send_request(request).await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_intentions_decide_each_request_on_one_connection() {
    let agent = agent(true).await;
    let url = agent.url();
    mark_http(&url).await;
    put_permissions(
        &url,
        json!([
            {"Action": "deny", "HTTP": {"PathPrefix": "/admin", "Methods": ["GET"]}},
            {"Action": "allow", "HTTP": {"PathPrefix": "/"}}
        ]),
    )
    .await;
    let (server, client, upstream, app_connections) = pair(&url).await;

    let mut conn = Http1::connect(upstream).await;
    assert_eq!(conn.get("/").await, (200, "hello world".into()));
    assert_eq!(
        conn.get("/admin").await,
        (403, "RBAC: access denied".into())
    );
    // The path is normalized before it is decided, as Envoy does: no way around the deny.
    for sneaky in ["/public/../admin", "/./admin/x", "/%61dmin"] {
        assert_eq!(conn.get(sneaky).await.0, 403, "{sneaky}");
    }
    assert_eq!(
        conn.get("/").await,
        (200, "hello world".into()),
        "the connection stays open after a denied request"
    );
    assert_eq!(
        app_connections.load(Ordering::SeqCst),
        1,
        "one app connection"
    );

    // An intention change applies to the next request of the open connection.
    put_permissions(
        &url,
        json!([{"Action": "deny", "HTTP": {"PathExact": "/"}}]),
    )
    .await;
    wait_for("the new permissions applied", || async {
        let mut probe = Http1::connect(upstream).await;
        probe.get("/").await.0 == 403
    })
    .await;
    assert_eq!(
        conn.get("/").await.0,
        403,
        "the same connection sees the change"
    );
    // A request no permission fits falls to the default (allow here).
    assert_eq!(conn.get("/admin").await, (200, "admin".into()));

    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "tandem_http_requests_total",
            &[("method", "GET"), ("code", "403")]
        ) >= 2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "tandem_http_requests_denied_total",
            &[("reason", "permission")]
        ) >= 2.0,
        "{text}"
    );
    assert!(
        metric(&text, "tandem_http_request_duration_seconds_count", &[]) >= 5.0,
        "{text}"
    );
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_grpc_call_gets_permission_denied_and_an_allowed_one_reaches_the_app() {
    let agent = agent(true).await;
    let url = agent.url();
    put_config(
        &url,
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "grpc"}}),
    )
    .await;
    put_permissions(
        &url,
        json!([{"Action": "deny", "HTTP": {"PathPrefix": "/admin.Admin/"}}]),
    )
    .await;
    let (server, client, upstream, _) = pair(&url).await;

    let tcp = TcpStream::connect(upstream).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let call = |path: &str| {
        hyper::Request::post(format!("http://static-server{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let denied = sender
        .send_request(call("/admin.Admin/Drop"))
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);
    assert_eq!(denied.headers()["grpc-status"], "7");
    assert_eq!(denied.headers()["grpc-message"], "RBAC: access denied");
    let allowed = sender.send_request(call("/hello.Hello/Say")).await.unwrap();
    assert_eq!(allowed.status(), 200);
    let body = allowed.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello world", "reached the app over h2");
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_change_applies_to_new_connections() {
    let agent = agent(true).await;
    let url = agent.url();
    mark_http(&url).await;
    // An L4 deny: on an HTTP service every request is answered 403.
    set_intention(&url, "static-client", "static-server", "deny").await;
    let (server, client, upstream, _) = pair(&url).await;
    let mut before = Http1::connect(upstream).await;
    assert_eq!(before.get("/").await, (403, "RBAC: access denied".into()));

    // Back to tcp (the entry deleted; Consul refuses that while an L7 intention needs HTTP):
    // a new connection is decided once, and closed with no data; the open one is still
    // answered per request.
    let status = http_delete(&format!("{url}/v1/config/service-defaults/static-server")).await;
    assert_eq!(status, 200);
    wait_for("new connections decided as tcp", || async {
        get(upstream).await.is_empty()
    })
    .await;
    assert_eq!(before.get("/").await.0, 403);
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_idle_keep_alive_connections_instead_of_waiting_out_the_deadline() {
    let agent = agent(true).await;
    let url = agent.url();
    mark_http(&url).await;
    let (server, client, upstream, _) = pair(&url).await;
    let mut conn = Http1::connect(upstream).await;
    assert_eq!(conn.get("/").await, (200, "hello world".into()));

    // An idle HTTP/1.1 connection is closed by the drain (Connection: close semantics), so the
    // drain ends as soon as it is gone rather than at its two-minute deadline.
    tokio::time::timeout(DEADLINE, server.drain(std::time::Duration::from_secs(120)))
        .await
        .expect("the drain ends once the idle connection is closed");
    client.shutdown().await;
    agent.shutdown().await;
}

/// A kept-alive connection idle for longer than hyper's default header read timeout (30 s,
/// which runs from the end of the previous answer) still carries the next request: client
/// pools keep connections idle, and Envoy keeps them for its idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_idle_for_31_seconds_still_answers() {
    let agent = agent(true).await;
    let url = agent.url();
    mark_http(&url).await;
    let (server, client, upstream, app_connections) = pair(&url).await;
    // A connection decides its protocol when it starts: take one made once the server
    // serves HTTP (its request counted per request).
    let mut conn = None;
    for _ in 0..200 {
        let mut c = Http1::connect(upstream).await;
        assert_eq!(c.get("/").await.0, 200);
        if metric(&metrics(&server).await, "tandem_http_requests_total", &[]) > 0.0 {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut conn = conn.expect("the server serves static-server as http");
    let before = app_connections.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(conn.get("/").await, (200, "hello world".into()));
    assert_eq!(
        app_connections.load(Ordering::SeqCst),
        before,
        "the same app connection carried it"
    );
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

/// An app that accepts any upgrade it is asked for (answers `101` with the request's `Upgrade`,
/// then echoes every byte) and answers a request without one `400`; on `/unasked` it switches
/// to `websocket` unasked, on `/h2c` it switches to `h2c` whatever was asked.
async fn upgrade_app() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut s).await.to_ascii_lowercase();
                let asked = head
                    .split("\r\n")
                    .find_map(|line| line.strip_prefix("upgrade: "));
                let upgrade = if head.starts_with("get /h2c ") {
                    Some("h2c")
                } else if head.starts_with("get /unasked ") {
                    Some("websocket")
                } else {
                    asked
                };
                let Some(upgrade) = upgrade else {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {upgrade}\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Reads an HTTP head (through the blank line), byte by byte so nothing after it is consumed.
async fn read_head(s: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A WebSocket opening handshake for `path`, sent on a new connection to `upstream`; the
/// connection and the answer's head.
async fn open_websocket(upstream: SocketAddr, path: &str) -> (TcpStream, String) {
    open_upgrade(upstream, path, "websocket").await
}

/// Bytes written on a relayed WebSocket come back (the test app echoes).
async fn echoes(ws: &mut TcpStream, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if ws.write_all(bytes).await.is_err() {
        return false;
    }
    let mut back = vec![0; bytes.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut back)).await,
        Ok(Ok(_)) if back == bytes
    )
}

#[tokio::test]
async fn a_relayed_websocket_is_closed_once_a_changed_intention_denies_its_request() {
    use tokio::io::AsyncReadExt;
    let agent = agent(true).await;
    let url = agent.url();
    mark_http(&url).await;
    put_permissions(
        &url,
        json!([{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]),
    )
    .await;
    let app_port = upgrade_app().await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("the L7 path relays a WebSocket", || async {
        open_websocket(upstream, "/chat")
            .await
            .1
            .starts_with("HTTP/1.1 101")
    })
    .await;
    let (mut chat, head) = open_websocket(upstream, "/chat").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    let (mut news, head) = open_websocket(upstream, "/news").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    assert!(echoes(&mut chat, b"before").await && echoes(&mut news, b"before").await);

    // Only /chat is denied now: its WebSocket is closed, the other one stays.
    put_permissions(
        &url,
        json!([{"Action": "deny", "HTTP": {"PathPrefix": "/chat"}},
               {"Action": "allow", "HTTP": {"PathPrefix": "/"}}]),
    )
    .await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), chat.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the denied WebSocket is closed within 10 s");
    assert!(
        echoes(&mut news, b"after").await,
        "a WebSocket whose request is still allowed stays open"
    );
    let text = metrics(&server).await;
    assert_eq!(metric(&text, "tandem_connections_revoked_total", &[]), 1.0);
    let (_, head) = open_websocket(upstream, "/chat").await;
    assert!(
        head.starts_with("HTTP/1.1 403"),
        "a new one is denied: {head:?}"
    );
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

/// The same with `Upgrade: upgrade`.
async fn open_upgrade(upstream: SocketAddr, path: &str, upgrade: &str) -> (TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(upstream).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: static-server\r\nconnection: Upgrade\r\nupgrade: {upgrade}\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut s))
        .await
        .unwrap();
    (s, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_decided_then_relayed_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let agent = agent(true).await;
    let url = agent.url();
    mark_http(&url).await;
    put_permissions(
        &url,
        json!([{"Action": "deny", "HTTP": {"PathPrefix": "/private"}},
               {"Action": "allow", "HTTP": {"PathPrefix": "/"}}]),
    )
    .await;
    let app_port = upgrade_app().await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("the L7 path decides the upgrade", || async {
        open_websocket(upstream, "/private")
            .await
            .1
            .starts_with("HTTP/1.1 403")
    })
    .await;

    let (mut ws, head) = open_websocket(upstream, "/chat").await;
    assert!(head.starts_with("HTTP/1.1 101"), "switched: {head:?}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nupgrade: websocket\r\n") && lower.contains("connection: upgrade"),
        "the 101 keeps its upgrade headers: {head:?}"
    );
    // Bytes both ways, more than one read's worth, then a close from the caller.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = ws.split();
    let (sent, echoed) = tokio::join!(
        async {
            write.write_all(&payload).await.unwrap();
            write.shutdown().await.unwrap();
        },
        async {
            let mut echoed = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut echoed))
                .await
                .expect("the echo ends after the caller's close")
                .unwrap();
            echoed
        }
    );
    let () = sent;
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the bytes came back unchanged");

    // Any other upgrade is not made: an h2c connection would carry requests no permission
    // decides. The app, which would accept it, gets the request without its Upgrade header.
    let (_, head) = open_upgrade(upstream, "/chat", "h2c").await;
    assert!(head.starts_with("HTTP/1.1 400"), "no h2c upgrade: {head:?}");

    // An upgrade with a body is refused: the app might take the body for a second request.
    let mut with_body = TcpStream::connect(upstream).await.unwrap();
    with_body
        .write_all(
            b"GET /chat HTTP/1.1\r\nhost: static-server\r\nconnection: upgrade\r\n\
              upgrade: websocket\r\ncontent-length: 25\r\n\r\nGET /private HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut with_body).await;
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "an upgrade with a body: {head:?}"
    );

    // An app that switches unasked, or to another protocol than the WebSocket asked for, is
    // answered 502: no relay.
    let (_, head) = open_upgrade(upstream, "/h2c", "websocket").await;
    assert!(
        head.starts_with("HTTP/1.1 502"),
        "switched to h2c: {head:?}"
    );
    let mut plain = Http1::connect(upstream).await;
    assert_eq!(plain.get("/unasked").await.0, 502);

    // The upgrade request itself was counted as a request.
    let text = metrics(&server).await;
    assert!(
        metric(&text, "tandem_http_requests_total", &[("code", "101")]) >= 1.0,
        "a 101 in tandem_http_requests_total"
    );
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}
