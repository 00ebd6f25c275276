//! Credential loading, and in-memory mutual-TLS handshakes over `tokio::io::duplex`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::ca::CertificateAuthority;
use crate::testing::{TestIdentity, TestPki};

/// What each side of one handshake saw.
struct Outcome {
    /// The server's view: the client's service identity, or why the handshake failed.
    server: Result<ServiceId, String>,
    /// Whether the server resumed a session rather than making a full handshake.
    resumed: bool,
    /// The client's view: the server's service identity and the protocol version.
    client: Result<(ServiceId, rustls::ProtocolVersion), String>,
}

/// Runs one handshake plus a ping/pong exchange between the two configs in memory.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        let peer = peer_service_id(conn.peer_certificates()).map_err(|e| e.to_string());
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok((peer?, resumed))
    };
    let client_side = async move {
        let mut tls = TlsConnector::from(client)
            .connect(server_name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let peer = peer_service_id(conn.peer_certificates()).map_err(|e| e.to_string())?;
        let version = conn.protocol_version().ok_or("no protocol version")?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        assert_eq!(&pong, b"pong");
        Ok((peer, version))
    };
    let (server, client) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(server_side, client_side)
    })
    .await
    .expect("handshake finished within the deadline");
    let (server, resumed) = match server {
        Ok((peer, resumed)) => (Ok(peer), resumed),
        Err(e) => (Err(e), false),
    };
    Outcome {
        server,
        resumed,
        client,
    }
}

fn load(pki: &TestPki, kind: TestIdentity, service: &str) -> Identity {
    pki.tls_identity(kind, service)
}

/// Client `web` connecting to server `db`, both with the given kinds.
async fn web_to_db(pki: &TestPki, client: TestIdentity, server: TestIdentity) -> Outcome {
    let roots = pki.roots();
    let db = pki.service_id("db");
    handshake(
        server_config(&load(pki, server, "db"), &roots).unwrap(),
        client_config(&load(pki, client, "web"), &roots, &db).unwrap(),
        server_name(&db),
    )
    .await
}

/// Identities both sides refuse, and what the refusal says. (A wrong trust domain is refused
/// by the server only: the client compares the path, as Consul.)
const BAD_PEERS: [(TestIdentity, &str); 4] = [
    (TestIdentity::OtherCa, "UnknownIssuer"),
    (TestIdentity::Expired, "certificate expired"),
    (TestIdentity::NotYetValid, "not valid yet"),
    (TestIdentity::NoUriSan, "NoSpiffeId"),
];

/// `side`'s view of a handshake with a `kind` peer must be a refusal that mentions `reason`.
fn assert_refused<T: std::fmt::Debug>(
    view: Result<T, String>,
    side: &str,
    kind: TestIdentity,
    reason: &str,
) {
    let err = view.expect_err(&format!("the {side} must refuse a {kind:?} peer"));
    assert!(
        err.contains(reason),
        "{side}, {kind:?} peer: {err:?} should mention {reason:?}"
    );
}

#[tokio::test]
async fn valid_pair_succeeds_both_ways_and_exposes_spiffe_ids() {
    let pki = TestPki::new();
    let out = web_to_db(&pki, TestIdentity::Valid, TestIdentity::Valid).await;
    assert_eq!(out.server.unwrap(), pki.service_id("web"));
    let (server_id, version) = out.client.unwrap();
    assert_eq!(server_id, pki.service_id("db"));
    assert_eq!(
        version,
        rustls::ProtocolVersion::TLSv1_3,
        "TLS 1.3 preferred"
    );

    // And the other direction.
    let roots = pki.roots();
    let web = pki.service_id("web");
    let out = handshake(
        server_config(&load(&pki, TestIdentity::Valid, "web"), &roots).unwrap(),
        client_config(&load(&pki, TestIdentity::Valid, "db"), &roots, &web).unwrap(),
        server_name(&web),
    )
    .await;
    assert_eq!(out.server.unwrap(), pki.service_id("db"));
    assert_eq!(out.client.unwrap().0, web);
}

/// A second handshake of the same caller resumes, with the identity verified at its full
/// handshake; a config built anew (a rotation) has a session cache of its own and resumes none
/// of the old sessions.
#[tokio::test]
async fn a_session_resumes_with_its_identity_but_never_across_a_new_config() {
    let pki = TestPki::new();
    let roots = pki.roots();
    let db = pki.service_id("db");
    let server = server_config(&load(&pki, TestIdentity::Valid, "db"), &roots).unwrap();
    let caller = client_config(&load(&pki, TestIdentity::Valid, "web"), &roots, &db).unwrap();
    for resumed in [false, true, true] {
        let out = handshake(server.clone(), caller.clone(), server_name(&db)).await;
        assert_eq!(out.resumed, resumed);
        assert_eq!(out.server.unwrap(), pki.service_id("web"));
        assert_eq!(out.client.unwrap().0, db);
    }
    let rotated = server_config(&load(&pki, TestIdentity::Valid, "db"), &roots).unwrap();
    let out = handshake(rotated, caller, server_name(&db)).await;
    assert!(!out.resumed, "a session of another config is not resumed");
    assert_eq!(out.server.unwrap(), pki.service_id("web"));
}

#[tokio::test]
async fn server_refuses_each_bad_client_identity() {
    let pki = TestPki::new();
    let wrong_domain = [(TestIdentity::WrongTrustDomain, "WrongTrustDomain")];
    for (kind, reason) in BAD_PEERS.into_iter().chain(wrong_domain) {
        let out = web_to_db(&pki, kind, TestIdentity::Valid).await;
        assert_refused(out.server, "server", kind, reason);
        assert!(out.client.is_err(), "{kind:?}: the client sees the refusal");
    }
}

#[tokio::test]
async fn server_accepts_another_service_and_reports_it_for_authorization() {
    // WrongService is a genuine identity of another service: TLS accepts it and the proxy's
    // intentions decide. The server must see the real name, not the one the client claims.
    let pki = TestPki::new();
    let out = web_to_db(&pki, TestIdentity::WrongService, TestIdentity::Valid).await;
    assert_eq!(out.server.unwrap(), pki.service_id("not-web"));
}

#[tokio::test]
async fn client_refuses_a_server_naming_another_service() {
    let pki = TestPki::new();
    let out = web_to_db(&pki, TestIdentity::Valid, TestIdentity::WrongService).await;
    let err = out
        .client
        .expect_err("client must refuse not-db when it expects db");
    assert!(
        err.contains("UnexpectedService") && err.contains("not-db"),
        "{err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn client_refuses_bad_server_identities() {
    let pki = TestPki::new();
    for (kind, reason) in BAD_PEERS {
        let out = web_to_db(&pki, TestIdentity::Valid, kind).await;
        assert_refused(out.client, "client", kind, reason);
    }
}

#[tokio::test]
async fn client_ignores_trust_domain_and_case_like_consul() {
    let pki = TestPki::new();
    // Same CA, same path, another trust domain: Consul's client compares only the path.
    let out = web_to_db(&pki, TestIdentity::Valid, TestIdentity::WrongTrustDomain).await;
    assert!(out.client.is_ok(), "{:?}", out.client.err());

    let roots = pki.roots();
    let expected = ServiceId::new(pki.trust_domain().clone(), "DC1", "DB");
    let out = handshake(
        server_config(&load(&pki, TestIdentity::Valid, "db"), &roots).unwrap(),
        client_config(&load(&pki, TestIdentity::Valid, "web"), &roots, &expected).unwrap(),
        ServerName::try_from("anything.example").unwrap(),
    )
    .await;
    assert_eq!(
        out.client.unwrap().0,
        pki.service_id("db"),
        "SNI is irrelevant"
    );
}

#[tokio::test]
async fn mixed_roots_during_rotation_trust_leaves_of_both() {
    let pki = TestPki::new();
    let old = pki.ca();
    let new = old.rotate().unwrap();
    let td = pki.trust_domain().clone();
    let both = TrustRoots::from_pems(
        [
            old.root().root_cert_pem.as_str(),
            new.root().root_cert_pem.as_str(),
        ],
        td.clone(),
    )
    .unwrap();
    assert_eq!(both.len(), 2);
    let leaf = |ca: &CertificateAuthority, svc: &str| {
        let issued = ca
            .issue_leaf(&pki.service_id(svc), Duration::from_secs(3600))
            .unwrap();
        Identity::from_pem(&issued.cert_pem, &issued.private_key_pem).unwrap()
    };
    let db = pki.service_id("db");
    for (client_ca, server_ca) in [(old, &new), (&new, old)] {
        let out = handshake(
            server_config(&leaf(server_ca, "db"), &both).unwrap(),
            client_config(&leaf(client_ca, "web"), &both, &db).unwrap(),
            server_name(&db),
        )
        .await;
        assert_eq!(out.server.unwrap(), pki.service_id("web"));
        assert_eq!(out.client.unwrap().0, db);
    }

    // Once the old root is dropped, its leaves are refused.
    let new_only = TrustRoots::from_pems([new.root().root_cert_pem.as_str()], td).unwrap();
    let out = handshake(
        server_config(&leaf(&new, "db"), &new_only).unwrap(),
        client_config(&leaf(old, "web"), &new_only, &db).unwrap(),
        server_name(&db),
    )
    .await;
    assert!(
        out.server.is_err(),
        "old-root client refused after the old root is gone"
    );
}

/// A root -> intermediate -> leaf hierarchy as Consul has in secondary DCs or with Vault:
/// `(root_pem, chain_pem (leaf + intermediate), leaf_only_pem, pkcs8_key_pem)`.
fn intermediate_hierarchy(id: &ServiceId) -> (String, String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
    };
    let ca_params = |cn: &str| {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    };
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root_params = ca_params("test root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let inter_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let inter_params = ca_params("test intermediate");
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let inter_issuer = Issuer::new(inter_params, inter_key);

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let leaf = params.signed_by(&leaf_key, &inter_issuer).unwrap();
    (
        root.pem(),
        format!("{}{}", leaf.pem(), inter.pem()),
        leaf.pem(),
        leaf_key.serialize_pem(),
    )
}

#[tokio::test]
async fn intermediates_come_from_the_presented_chain() {
    let pki = TestPki::new();
    let db = pki.service_id("db");
    let (root, chain, leaf_only, key) = intermediate_hierarchy(&pki.service_id("web"));
    let roots =
        TrustRoots::from_pems([pki.root_pem(), root.as_str()], pki.trust_domain().clone()).unwrap();
    let server = server_config(&load(&pki, TestIdentity::Valid, "db"), &roots).unwrap();

    let with_chain = Identity::from_pem(&chain, &key).unwrap();
    assert_eq!(with_chain.cert_chain().len(), 2);
    let out = handshake(
        server.clone(),
        client_config(&with_chain, &roots, &db).unwrap(),
        server_name(&db),
    )
    .await;
    assert_eq!(out.server.unwrap(), pki.service_id("web"));
    assert_eq!(out.client.unwrap().0, db);

    let without = Identity::from_pem(&leaf_only, &key).unwrap();
    let out = handshake(
        server,
        client_config(&without, &roots, &db).unwrap(),
        server_name(&db),
    )
    .await;
    let err = out.server.expect_err("no intermediate, no chain");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn tls12_only_client_is_accepted() {
    let pki = TestPki::new();
    let roots = pki.roots();
    let db = pki.service_id("db");
    let (cert_pem, key_pem) = pki.identity(TestIdentity::Valid, "web");
    let chain = certs_from_pem(&cert_pem, "certificate").unwrap();
    let client = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(&roots, db.clone())))
        .with_client_auth_cert(
            chain,
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let out = handshake(
        server_config(&load(&pki, TestIdentity::Valid, "db"), &roots).unwrap(),
        Arc::new(client),
        server_name(&db),
    )
    .await;
    assert_eq!(out.server.unwrap(), pki.service_id("web"));
    let (peer, version) = out.client.unwrap();
    assert_eq!(peer, db);
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
}

#[test]
fn identity_loads_sec1_and_pkcs8_keys() {
    let pki = TestPki::new();
    let (cert, sec1) = pki.identity(TestIdentity::Valid, "web");
    let from_sec1 = Identity::from_pem(&cert, &sec1).unwrap();
    assert_eq!(from_sec1.service_id(), Some(&pki.service_id("web")));

    let pkcs8 = sec1_to_pkcs8_pem(&sec1);
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    let from_pkcs8 = Identity::from_pem(&cert, &pkcs8).unwrap();
    assert_eq!(from_pkcs8.cert_chain(), from_sec1.cert_chain());
    assert_eq!(from_pkcs8.not_after(), from_sec1.not_after());
}

#[test]
fn identity_errors_name_what_is_wrong() {
    let pki = TestPki::new();
    let (cert, key) = pki.identity(TestIdentity::Valid, "web");
    let (_, other_key) = pki.identity(TestIdentity::Valid, "web");

    let err = Identity::from_pem("", &key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");

    let err = Identity::from_pem(&cert, "not a key").unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey), "{err}");
    let err = Identity::from_pem(&cert, &cert).unwrap_err();
    assert!(
        matches!(err, TlsError::NoPrivateKey),
        "a certificate is not a key: {err}"
    );

    let err = Identity::from_pem(&cert, &other_key).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch), "{err}");

    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let err = Identity::from_pem(broken, &key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");

    let bad_key = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    let err = Identity::from_pem(&cert, bad_key).unwrap_err();
    assert!(matches!(err, TlsError::UnusableKey(_)), "{err}");
}

#[test]
fn identity_without_spiffe_id_still_loads() {
    let pki = TestPki::new();
    let id = load(&pki, TestIdentity::NoUriSan, "web");
    assert!(id.spiffe_id().is_none());
    assert!(id.service_id().is_none());
}

#[test]
fn trust_roots_must_not_be_empty_or_invalid() {
    let pki = TestPki::new();
    let td = pki.trust_domain().clone();
    let err = TrustRoots::from_pems([], td.clone()).unwrap_err();
    assert!(matches!(err, TlsError::NoTrustRoots), "{err}");
    let err = TrustRoots::from_pems(["", "no pem here"], td.clone()).unwrap_err();
    assert!(matches!(err, TlsError::NoTrustRoots), "{err}");
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = TrustRoots::from_pems([pki.root_pem(), garbage], td.clone()).unwrap_err();
    assert!(
        matches!(err, TlsError::InvalidRoot { index: 1, .. }),
        "{err}"
    );

    // Several roots in one PEM string count individually.
    let other = TestPki::new();
    let bundle = format!("{}{}", pki.root_pem(), other.root_pem());
    let roots = TrustRoots::from_pems([bundle.as_str()], td.clone()).unwrap();
    assert_eq!(roots.len(), 2);
    assert_eq!(roots.trust_domain(), &td);
}

#[test]
fn leaf_info_reads_pem_and_der() {
    let pki = TestPki::new();
    let id = pki.service_id("web");
    let issued = pki.ca().issue_leaf(&id, Duration::from_secs(7200)).unwrap();
    let info = leaf_info(&issued.cert_pem).unwrap();
    assert_eq!(info.spiffe, SpiffeId::Service(id));
    assert_eq!(info.serial_number, issued.serial_number);
    assert_eq!(info.not_before, issued.valid_after);
    assert_eq!(info.not_after, issued.valid_before);
    assert_eq!(
        info.authority_key_id.as_deref(),
        Some(pki.ca().root().signing_key_id.as_str())
    );
    let der = certs_from_pem(&issued.cert_pem, "certificate").unwrap();
    assert_eq!(leaf_info(der[0].as_ref()).unwrap(), info);

    let (no_uri, _) = pki.identity(TestIdentity::NoUriSan, "web");
    assert!(matches!(leaf_info(&no_uri), Err(TlsError::NoSpiffeId)));
    assert!(matches!(
        leaf_info(b"garbage"),
        Err(TlsError::BadCertificate(_))
    ));
}

#[test]
fn peer_service_id_needs_a_service_certificate() {
    assert!(matches!(
        peer_service_id(None),
        Err(TlsError::NoPeerCertificate)
    ));
    assert!(matches!(
        peer_service_id(Some(&[])),
        Err(TlsError::NoPeerCertificate)
    ));
    let pki = TestPki::new();
    let root = certs_from_pem(pki.root_pem(), "root").unwrap();
    let err = peer_service_id(Some(&root)).unwrap_err();
    assert!(
        matches!(err, TlsError::NotAService(_)),
        "the CA URI is not a service: {err}"
    );
}

#[test]
fn policy_is_tls13_then_tls12_with_ecdhe_aead_suites_only() {
    assert_eq!(PROTOCOL_VERSIONS.len(), 2);
    assert_eq!(
        PROTOCOL_VERSIONS[0].version,
        rustls::ProtocolVersion::TLSv1_3
    );
    assert_eq!(
        PROTOCOL_VERSIONS[1].version,
        rustls::ProtocolVersion::TLSv1_2
    );
    for suite in &crypto_provider().cipher_suites {
        let name = format!("{:?}", suite.suite());
        let tls13 = name.starts_with("TLS13_");
        let ecdhe_aead = name.starts_with("TLS_ECDHE_")
            && (name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"));
        assert!(tls13 || ecdhe_aead, "suite {name} is outside the policy");
    }
}

/// Wraps a SEC1 key into PKCS#8 `PrivateKeyInfo` (what `openssl pkcs8 -topk8` does).
fn sec1_to_pkcs8_pem(sec1_pem: &str) -> String {
    use base64::Engine as _;
    use rustls::pki_types::PrivateSec1KeyDer;
    let sec1 = PrivateSec1KeyDer::from_pem_slice(sec1_pem.as_bytes()).unwrap();
    let tlv = crate::ca::sec1::der_tlv;
    let algorithm = [
        0x30, 0x13, // SEQUENCE
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // ecPublicKey
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
    ];
    let mut info = vec![0x02, 0x01, 0x00]; // version 0
    info.extend_from_slice(&algorithm);
    info.extend(tlv(0x04, sec1.secret_sec1_der()));
    let der = tlv(0x30, &info);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}
