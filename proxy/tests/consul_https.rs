//! An https agent address with `CONSUL_CACERT`-style trust: the client trusts the given CA
//! (and only it) and sends the token in `X-Consul-Token`.

use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tandem_certs::rustls;
use tandem_proxy::consul::ConsulClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// An https server answering every request with a CA roots body (`TrustDomain` `dc7.consul`);
/// records the request heads it saw.
async fn https_agent(pki: &Pki) -> (String, Arc<Mutex<Vec<String>>>) {
    use rustls::pki_types::pem::PemObject;
    let certs =
        vec![
            rustls::pki_types::CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes())
                .unwrap(),
        ];
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = r#"{"ActiveRootID":"","TrustDomain":"dc7.consul","Roots":null}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn https_agent_is_trusted_through_the_given_ca_only() {
    let pki = pki();
    let (url, seen) = https_agent(&pki).await;
    let base: url::Url = url.parse().unwrap();

    let client = ConsulClient::new(
        base.clone(),
        Some("tok-1".into()),
        Some(pki.ca_pem.as_bytes()),
    )
    .unwrap();
    let roots = client
        .ca_roots(tandem_proxy::consul::Blocking::now())
        .await
        .expect("the CA bundle makes the https agent trusted");
    assert_eq!(roots.body.trust_domain, "dc7.consul");
    let heads = seen.lock().unwrap().clone();
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("x-consul-token: tok-1"),
        "{heads:?}"
    );

    let other = self::pki();
    let untrusting = ConsulClient::new(base, None, Some(other.ca_pem.as_bytes())).unwrap();
    assert!(
        untrusting
            .ca_roots(tandem_proxy::consul::Blocking::now())
            .await
            .is_err(),
        "another CA's bundle does not trust the agent"
    );
}
