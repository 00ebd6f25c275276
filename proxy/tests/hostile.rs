//! Hostile clients against the proxy binary, each with a clear outcome and a bound on memory:
//! thousands of connections that send nothing (cut at the handshake timeout while traffic goes
//! on, the memory given back once they are gone), a ClientHello sent one byte per second (cut
//! at the handshake timeout), a caller that never reads while the app writes (the proxies do
//! not buffer: memory stays flat), a half-closed caller (the reply still arrives), and a flood
//! past `--max-connections` (refused at once, open connections unharmed, `/ready` and
//! `/metrics` answering).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

async fn server_metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = http_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200, "/metrics answers");
    metric(&text, name, labels)
}

/// An echo round trip through `upstream` on a new connection.
async fn echo_once(upstream: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(upstream).await else {
        return false;
    };
    echo_roundtrip(&mut s, b"ping").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_silent_connections_are_cut_and_their_memory_given_back() {
    const SILENT: usize = 2000;
    let agent = agent(true).await;
    let url = agent.url();
    let app = echo_app().await.to_string();
    let mut server = spawn_server(
        &url,
        &app,
        &["--service-id", "static-server", "--handshake-timeout", "2s"],
    );
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("traffic", || echo_once(upstream)).await;
    for _ in 0..50 {
        assert!(echo_once(upstream).await);
    }
    let pid = server.child.id();
    let idle = rss_kib(pid);

    let public = server.public.unwrap();
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(public).await.unwrap());
    }
    for i in 0..20 {
        assert!(echo_once(upstream).await, "traffic goes on: request {i}");
    }
    let peak = rss_kib(pid);
    wait_for(
        "every silent connection cut at the handshake timeout",
        || async {
            server_metric(
                server.admin,
                "tandem_connections_closed_total",
                &[("direction", "inbound"), ("reason", "handshake_timeout")],
            )
            .await
                >= SILENT as f64
        },
    )
    .await;
    drop(silent);
    // The allocator hands the freed pages back within a few seconds (mimalloc's purge); glibc's
    // malloc kept them all (RSS stayed at the peak).
    let given_back = || async { rss_kib(pid) <= idle + 4 * 1024 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !given_back().await && tokio::time::Instant::now() < deadline {
        let _ = echo_once(upstream).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = rss_kib(pid);
    eprintln!("server RSS: idle {idle} KiB, with {SILENT} silent connections {peak} KiB, after {after} KiB");
    assert!(
        after <= idle + 4 * 1024,
        "RSS back near idle once the connections are gone: idle {idle} KiB, peak {peak} KiB, after {after} KiB"
    );
    assert!(echo_once(upstream).await);
    let _ = server.child.kill();
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_one_byte_per_second_is_cut_at_the_handshake_timeout() {
    let agent = agent(true).await;
    let app = echo_app().await.to_string();
    let mut server = spawn_server(
        &agent.url(),
        &app,
        &["--service-id", "static-server", "--handshake-timeout", "2s"],
    );
    let mut slow = TcpStream::connect(server.public.unwrap()).await.unwrap();
    // The start of a TLS record holding a ClientHello, a byte a second.
    let hello = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let started = std::time::Instant::now();
    let mut cut = false;
    for byte in hello {
        if slow.write_all(&[byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    assert!(cut, "the slow handshake is closed");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut by the 2 s handshake timeout, not after the whole ClientHello ({:?})",
        started.elapsed()
    );
    assert_eq!(
        server_metric(
            server.admin,
            "tandem_tls_handshake_failures_total",
            &[("reason", "timeout")]
        )
        .await,
        1.0
    );
    let _ = server.child.kill();
    agent.shutdown().await;
}

/// An app that writes `total` bytes to every connection as fast as it is let; counts what
/// it managed to write.
async fn writing_app(total: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let chunk = vec![7u8; 16 * 1024];
                let mut sent = 0;
                while sent < total {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    counter.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
    });
    (port, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_never_reads_does_not_make_the_proxy_buffer() {
    let agent = agent(true).await;
    let url = agent.url();
    // The app would write 1 GiB; the caller reads nothing.
    let (app_port, written) = writing_app(1 << 30).await;
    let app = app_port.to_string();
    let mut server = spawn_server(&url, &app, &["--service-id", "static-server"]);
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("the server listed", || async {
        passing_instances(&url, "static-server").await > 0
    })
    .await;
    let pid = server.child.id();
    let idle = rss_kib(pid);
    let mut reader = TcpStream::connect(upstream).await.unwrap();
    // Read a little so the path is open end to end, then stop reading.
    let mut first = [0u8; 1024];
    reader.read_exact(&mut first).await.unwrap();
    // Until the socket buffers on the way are full, the app gets to write.
    let mut last = written.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    let full = rss_kib(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = rss_kib(pid);
    eprintln!("server RSS: idle {idle} KiB, stalled {full} KiB, a second later {later} KiB; the app wrote {last} bytes");
    assert!(
        last < 64 << 20,
        "the proxies stop reading from the app once the caller stops: the app wrote {last} bytes of 1 GiB"
    );
    assert!(
        later <= idle + 8 * 1024,
        "no unbounded buffering: idle {idle} KiB, stalled {later} KiB"
    );
    drop(reader);
    let _ = server.child.kill();
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_caller_still_gets_the_reply() {
    let agent = agent(true).await;
    let url = agent.url();
    let app = echo_app().await.to_string();
    let mut server = spawn_server(&url, &app, &["--service-id", "static-server"]);
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("traffic", || echo_once(upstream)).await;
    let mut s = TcpStream::connect(upstream).await.unwrap();
    s.write_all(b"request then FIN").await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut reply))
        .await
        .expect("the echo app closes after our FIN reaches it")
        .unwrap();
    assert_eq!(reply, b"request then FIN");
    let _ = server.child.kill();
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_max_connections_is_refused_while_open_ones_and_admin_answer() {
    let agent = agent(true).await;
    let url = agent.url();
    let app = echo_app().await.to_string();
    let mut server = spawn_server(
        &url,
        &app,
        &[
            "--service-id",
            "static-server",
            "--max-connections",
            "20",
            "--handshake-timeout",
            "30s",
        ],
    );
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("traffic", || echo_once(upstream)).await;
    // One real connection open through the pair.
    let mut open = TcpStream::connect(upstream).await.unwrap();
    assert!(echo_roundtrip(&mut open, b"before").await);

    // Fill the other slots with silent connections, then flood.
    let public = server.public.unwrap();
    let mut held = Vec::new();
    for _ in 0..500 {
        if let Ok(s) = TcpStream::connect(public).await {
            held.push(s);
        }
    }
    wait_for("the excess refused", || async {
        refused_count(server.admin).await >= 400.0
    })
    .await;
    assert!(
        echo_roundtrip(&mut open, b"during").await,
        "the open connection is unharmed"
    );
    assert_eq!(
        http_get(&format!("http://{}/ready", server.admin)).await.0,
        200,
        "/ready answers"
    );
    drop(held);
    let _ = server.child.kill();
    client.shutdown().await;
    agent.shutdown().await;
}

async fn refused_count(admin: SocketAddr) -> f64 {
    server_metric(
        admin,
        "tandem_connections_refused_total",
        &[("reason", "max_connections")],
    )
    .await
}
