//! The SPIFFE check of a peer certificate, on mutated DER: `peer_service_id` (what the proxy
//! reads after a handshake), `leaf_info`, and both verifiers (webpki chain verification, then
//! the SPIFFE check) against the roots in `fuzz/fixtures/peer_check/` that the seed leaves
//! chain to (a `tandem-certs` test PKI and the roots of the recorded Consul agents).
//!
//! Properties, beyond "never panics":
//! * `peer_service_id` and `leaf_info` agree: a service ID from one is the SPIFFE ID of the
//!   other, and the ID displays as a string that parses back to it;
//! * the same certificate as PEM reads as it does as DER;
//! * a verifier that accepts a certificate accepts it only with a service SPIFFE ID that
//!   `peer_service_id` reads: in the roots' trust domain (client verifier) and matching the
//!   expected service's path (server verifier).

#![no_main]

use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tandem_certs::rustls::client::danger::ServerCertVerifier;
use tandem_certs::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tandem_certs::rustls::server::danger::ClientCertVerifier;
use tandem_certs::tls::{SpiffeClientVerifier, SpiffeServerVerifier};
use tandem_certs::{leaf_info, peer_service_id, ServiceId, SpiffeId, TlsError, TrustRoots};

/// Root PEMs (each file one trust set; its first certificate names the trust domain).
const ROOTS: [&str; 3] = [
    include_str!("../fixtures/peer_check/testpki-root.pem"),
    include_str!("../fixtures/peer_check/consul-1.10.4-roots.pem"),
    include_str!("../fixtures/peer_check/consul-1.8.17-roots.pem"),
];

/// When no time can be read from the input: 2026-01-01T00:00:00Z.
const FALLBACK_TIME: u64 = 1_767_225_600;

fuzz_target!(|der: &[u8]| {
    let cert = CertificateDer::from(der);
    let peer = peer_service_id(Some(std::slice::from_ref(&cert)));
    let info = leaf_info(der);
    // leaf_info also reads PEM; peer_service_id only DER.
    let pem_input = der.trim_ascii_start().starts_with(b"-----BEGIN");
    match (&peer, &info) {
        _ if pem_input => {}
        (Ok(id), Ok(info)) => assert_eq!(info.spiffe, SpiffeId::Service(id.clone())),
        (Ok(id), Err(e)) => panic!("peer_service_id read {id} but leaf_info failed: {e}"),
        (Err(TlsError::NotAService(_)), Ok(info)) => {
            assert!(info.spiffe.as_service().is_none())
        }
        (Err(e), Ok(info)) => panic!("leaf_info read {:?} but peer_service_id: {e}", info.spiffe),
        (Err(_), Err(_)) => {}
    }
    if let Ok(id) = &peer {
        assert_eq!(id.to_string().parse::<ServiceId>().as_ref(), Ok(id));
    }
    if let Ok(info) = &info {
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        assert_eq!(leaf_info(pem.as_bytes()).as_ref().ok(), Some(info));
    }

    // Inside the leaf's own validity when it has one, so that seeds get past the time check.
    let at = info
        .as_ref()
        .ok()
        .and_then(|i| i.not_before.duration_since(UNIX_EPOCH).ok())
        .map_or(FALLBACK_TIME, |d| d.as_secs().saturating_add(60));
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at));
    let expected = peer
        .as_ref()
        .ok()
        .cloned()
        .unwrap_or_else(|| ServiceId::new(trust()[0].0.trust_domain().clone(), "dc1", "web"));
    let name = ServerName::try_from("web.default.dc1.internal.consul").expect("a DNS name");
    for (roots, client) in trust() {
        if client.verify_client_cert(&cert, &[], now).is_ok() {
            let id = peer
                .as_ref()
                .expect("a client accepted without a service ID");
            assert_eq!(&id.trust_domain, roots.trust_domain());
        }
        let server = SpiffeServerVerifier::new(roots, expected.clone());
        if server
            .verify_server_cert(&cert, &[], &name, &[], now)
            .is_ok()
        {
            let id = peer
                .as_ref()
                .expect("a server accepted without a service ID");
            assert!(id.matches_path(&expected));
        }
    }
});

fn trust() -> &'static [(TrustRoots, SpiffeClientVerifier)] {
    static TRUST: OnceLock<Vec<(TrustRoots, SpiffeClientVerifier)>> = OnceLock::new();
    TRUST.get_or_init(|| {
        ROOTS
            .iter()
            .map(|pem| {
                let td = leaf_info(pem.as_bytes())
                    .expect("a fixture root parses")
                    .spiffe
                    .trust_domain()
                    .clone();
                let roots = TrustRoots::from_pems([*pem], td).expect("fixture roots load");
                let client = SpiffeClientVerifier::new(&roots).expect("a client verifier");
                (roots, client)
            })
            .collect()
    })
}
