//! Real Consul output (the API docs' samples, copied from `shared/consul-api-samples`) read with
//! this crate: the root ID and signing key id formulas, SEC1 keys as Consul writes them, leaf
//! serials and validity.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;
use tandem_certs::ca::{root_id, signing_key_id};
use tandem_certs::rustls::pki_types::pem::PemObject;
use tandem_certs::rustls::pki_types::CertificateDer;
use tandem_certs::{leaf_info, Identity, ServiceId, SpiffeId, TrustDomain, TrustRoots};
use x509_parser::prelude::{FromDer, X509Certificate};

fn sample(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

#[test]
fn root_ids_and_signing_key_ids_match_consul() {
    for file in ["agent-connect-ca-roots.json", "connect-ca-roots.json"] {
        let roots = sample(file);
        let entries = roots["Roots"].as_array().unwrap();
        assert!(!entries.is_empty(), "{file}");
        for root in entries {
            let pem = str_field(root, "RootCert");
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(root_id(&der), str_field(root, "ID"), "{file}: ID");
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert_eq!(
                signing_key_id(cert.public_key().raw),
                str_field(root, "SigningKeyID"),
                "{file}: SigningKeyID"
            );
        }
        let pems: Vec<&str> = entries.iter().map(|r| str_field(r, "RootCert")).collect();
        let td: TrustDomain = "7f42f496-fbc7-8692-05ed-334aa5340c1e.consul"
            .parse()
            .unwrap();
        let trust = TrustRoots::from_pems(pems, td).unwrap();
        assert_eq!(trust.len(), entries.len(), "{file}: every root is trusted");
    }
}

#[test]
fn consul_leaf_and_sec1_key_load() {
    let leaf = sample("agent-connect-ca-leaf.json");
    let cert_pem = str_field(&leaf, "CertPEM");
    let key_pem = str_field(&leaf, "PrivateKeyPEM");
    assert!(key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));

    let identity = Identity::from_pem(cert_pem, key_pem).expect("Consul's SEC1 key loads");
    let service_uri = str_field(&leaf, "ServiceURI");
    let expected: ServiceId = service_uri.parse().unwrap();
    assert_eq!(identity.service_id(), Some(&expected));
    assert_eq!(expected.to_string(), service_uri, "round-trips");
    assert_eq!(expected.service, str_field(&leaf, "Service"));

    let info = leaf_info(cert_pem).unwrap();
    assert_eq!(info.spiffe, SpiffeId::Service(expected));
    assert_eq!(info.serial_number, str_field(&leaf, "SerialNumber"));
    // ValidAfter 2018-05-21T16:33:28Z, ValidBefore 2018-05-24T16:33:28Z
    assert_eq!(
        info.not_before,
        UNIX_EPOCH + Duration::from_secs(1_526_920_408)
    );
    assert_eq!(
        info.not_after,
        UNIX_EPOCH + Duration::from_secs(1_527_179_608)
    );
    assert_eq!(identity.not_after(), info.not_after);
}
