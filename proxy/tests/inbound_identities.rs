//! The inbound path against every identity of the `testing` set, over real sockets on
//! 127.0.0.1:0: only a valid mesh identity that intentions allow reaches the app; every other
//! one is refused with no data, and counted.

use std::sync::Arc;
use std::time::Duration;

use tandem_certs::testing::{TestIdentity, TestPki};
use tandem_certs::tls;
use tandem_proxy::config::{InboundSettings, Limits};
use tandem_proxy::consul::Intention;
use tandem_proxy::{Action, DataPath, Inbound, IntentionSet, Metrics, TlsState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn intention(source: &str, action: &str, precedence: i64) -> Intention {
    Intention {
        id: String::new(),
        source_ns: "default".into(),
        source_name: source.into(),
        source_partition: String::new(),
        source_peer: String::new(),
        source_sameness_group: String::new(),
        destination_ns: "default".into(),
        destination_name: "static-server".into(),
        action: action.into(),
        permissions: None,
        precedence,
    }
}

/// An app that echoes what it reads.
async fn echo_app() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Connects as `kind`, sends "ping", returns what came back (empty when refused).
async fn exchange(pki: &TestPki, kind: TestIdentity, server: std::net::SocketAddr) -> Vec<u8> {
    let identity = pki.tls_identity(kind, "static-client");
    let expected = pki.service_id("static-server");
    let config = tls::client_config(&identity, &pki.roots(), &expected).unwrap();
    let tcp = TcpStream::connect(server).await.unwrap();
    let mut stream = match TlsConnector::from(config)
        .connect(tls::server_name(&expected), tcp)
        .await
    {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let mut got = Vec::new();
    if stream.write_all(b"ping").await.is_err() {
        return got;
    }
    let _ = stream.flush().await;
    let mut buf = [0u8; 16];
    // The echo app answers at once; a refused connection ends with EOF or an alert.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.len() >= 4 {
                        break;
                    }
                }
            }
        }
    })
    .await;
    got
}

#[tokio::test]
async fn every_bad_identity_is_refused_and_counted() {
    let pki = TestPki::new();
    let state = TlsState::new(
        pki.tls_identity(TestIdentity::Valid, "static-server"),
        pki.roots(),
    )
    .unwrap();
    let (_tls_tx, tls_rx) = watch::channel(Arc::new(state));
    // Only static-client may call; everyone else is denied (the wrong-service identity is a
    // valid certificate for another service).
    let set = IntentionSet::new(
        vec![
            intention("static-client", "allow", 9),
            intention("*", "deny", 8),
        ],
        Action::Allow,
    );
    let (_ixn_tx, ixn_rx) = watch::channel(Arc::new(set));
    let metrics = Arc::new(Metrics::new());
    let limits = Limits {
        handshake_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: None,
        max_connections: 100,
    };
    let app = echo_app().await;
    let settings = InboundSettings {
        listener: "127.0.0.1:0".parse().unwrap(),
        service_port: Some(app.port()),
        service_address: app.ip(),
        close_denied_connections: false,
        default_intention_policy: None,
        http_access_log: false,
    };
    let data = DataPath::new(tls_rx, metrics.clone(), limits);
    let inbound = Inbound::new(&settings, ixn_rx, data);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(inbound.serve(listener, stop.clone(), tasks.clone()));

    assert_eq!(
        exchange(&pki, TestIdentity::Valid, addr).await,
        b"ping",
        "a valid, allowed caller reaches the app"
    );
    for kind in TestIdentity::ALL
        .into_iter()
        .filter(|k| *k != TestIdentity::Valid)
    {
        let got = exchange(&pki, kind, addr).await;
        assert!(
            got.is_empty(),
            "{kind:?} must be refused with no data, got {got:?}"
        );
    }
    // Also a client that presents no certificate at all.
    let roots = pki.roots();
    let no_cert = tandem_certs::rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(tls::PROTOCOL_VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::SpiffeServerVerifier::new(
            &roots,
            pki.service_id("static-server"),
        )))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    if let Ok(mut s) = TlsConnector::from(Arc::new(no_cert))
        .connect(tls::server_name(&pki.service_id("static-server")), tcp)
        .await
    {
        let _ = s.write_all(b"ping").await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            buf.is_empty(),
            "a client without a certificate gets no data"
        );
    }

    // Counted: five handshake failures (other CA, expired, not yet valid, wrong trust domain,
    // no URI SAN), one with no certificate, and one intention denial (wrong service).
    let text = wait_for_metrics(&metrics, |t| {
        value(t, "tandem_connections_closed_total", "") >= 8.0
    })
    .await;
    assert_eq!(
        value(
            &text,
            "tandem_tls_handshake_failures_total",
            "direction=\"inbound\""
        ),
        6.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "tandem_tls_handshake_failures_total",
            "reason=\"no_client_certificate\""
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "tandem_tls_handshake_failures_total",
            "reason=\"expired\""
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "tandem_tls_handshake_failures_total",
            "reason=\"not_yet_valid\""
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "tandem_authorizations_total", "decision=\"denied\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "tandem_authorizations_total", "decision=\"allowed\""),
        1.0,
        "{text}"
    );
    stop.cancel();
}

/// Sum of the samples of `name` whose labels contain `filter`.
fn value(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l.len() == name.len() || matches!(l.as_bytes()[name.len()], b'{' | b' '))
        })
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_for_metrics(metrics: &Metrics, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics.encode();
        if done(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
