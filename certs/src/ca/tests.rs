//! Root and leaf profiles checked field by field against Consul's (consul-api.md §4.3, §4.4).

use std::time::{Duration, SystemTime};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::sec1::der_read;
use super::*;
use crate::tls::{leaf_info, Identity};

const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";

fn ca() -> CertificateAuthority {
    let td = TrustDomain::from_cluster_id(CLUSTER).unwrap();
    CertificateAuthority::generate(&td, CLUSTER).unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn ext<'a>(
    cert: &'a X509Certificate<'_>,
    oid: &x509_parser::der_parser::oid::Oid<'_>,
) -> &'a x509_parser::extensions::X509Extension<'a> {
    cert.get_extension_unique(oid)
        .unwrap()
        .unwrap_or_else(|| panic!("extension {oid} missing"))
}

fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("SubjectKeyIdentifier present")
}

fn aki(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => {
                k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("AuthorityKeyIdentifier with a key id present")
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("SAN present");
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => panic!("unexpected SAN entry {other:?}"),
        })
        .collect()
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn root_has_consul_profile() {
    let ca = ca();
    let root = ca.root();
    let der = der_of(&root.root_cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();

    // Subject CN pri-<8 base36>.consul.ca.<first 8 of cluster id>.consul
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    let uid = cn
        .strip_prefix("pri-")
        .and_then(|rest| rest.strip_suffix(".consul.ca.11111111.consul"))
        .unwrap_or_else(|| panic!("unexpected CN {cn}"));
    assert_eq!(uid.len(), 8, "{cn}");
    assert!(uid
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    assert_eq!(cert.issuer(), cert.subject(), "self-signed");

    assert_eq!(uris(&cert), [format!("spiffe://{CLUSTER}.consul")]);

    let bc = ext(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS);
    assert!(bc.critical, "BasicConstraints critical");
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, None);

    assert!(ext(&cert, &OID_X509_EXT_KEY_USAGE).critical);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    assert!(!ku.key_encipherment() && !ku.data_encipherment() && !ku.key_agreement());
    assert!(!ku.non_repudiation() && !ku.encipher_only() && !ku.decipher_only());

    // SKI = AKI = full SHA-256 of the SubjectPublicKeyInfo DER.
    let expected_ki = Sha256::digest(cert.public_key().raw).to_vec();
    assert_eq!(ski(&cert), expected_ki);
    assert_eq!(aki(&cert), expected_ki);
    assert_eq!(root.signing_key_id, colon_hex(&expected_ki));
    assert_eq!(root.signing_key_id.len(), 32 * 3 - 1);

    // EC P-256 key.
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    let curve = cert.public_key().algorithm.parameters.as_ref().unwrap();
    assert_eq!(curve.as_oid().unwrap(), OID_EC_P256);

    // ID = SHA-1 fingerprint of the DER, lowercase colon-hex.
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    assert_eq!(root.id, colon_hex(sha1.as_ref()));
    assert_eq!(root.id.len(), 20 * 3 - 1);
    assert_eq!(root.id, root.id.to_lowercase());
    assert_eq!(root.name, "Consul CA Primary Cert");
    assert_eq!(root.serial_number, 1);
    assert_eq!(cert.raw_serial(), [1]);

    // Valid from now for RootCertTTL.
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    assert_eq!(na - nb, ROOT_CERT_TTL.as_secs() as i64);
    assert_eq!(unix(root.not_before), nb);
    assert_eq!(unix(root.not_after), na);
    let now = unix(SystemTime::now());
    assert!(
        (now - 5..=now).contains(&nb),
        "NotBefore {nb} is now ({now})"
    );
    assert!(root.root_cert_pem.ends_with("-----END CERTIFICATE-----\n"));
}

#[test]
fn leaf_has_consul_profile() {
    let ca = ca();
    let id = ServiceId::new(ca.trust_domain().clone(), "dc1", "web");
    let before = unix(SystemTime::now());
    let leaf = ca.issue_leaf(&id, DEFAULT_LEAF_TTL).unwrap();
    let after = unix(SystemTime::now());
    let der = der_of(&leaf.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();

    assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
    assert_eq!(cert.subject().iter().count(), 0, "subject is empty");

    let san = ext(&cert, &OID_X509_EXT_SUBJECT_ALT_NAME);
    assert!(san.critical, "SAN is critical (empty subject)");
    assert_eq!(uris(&cert), [id.to_string()], "exactly one URI SAN");

    assert!(ext(&cert, &OID_X509_EXT_KEY_USAGE).critical);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(ku.data_encipherment() && ku.key_agreement());
    assert!(!ku.key_cert_sign() && !ku.crl_sign() && !ku.non_repudiation());

    assert!(!ext(&cert, &OID_X509_EXT_EXTENDED_KEY_USAGE).critical);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert!(!eku.any && !eku.code_signing && eku.other.is_empty());

    assert!(ext(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS).critical);
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);

    let root_der = der_of(&ca.root().root_cert_pem);
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    assert_eq!(aki(&cert), ski(&root), "AKI = root SKI");
    assert_eq!(ski(&cert), Sha256::digest(cert.public_key().raw).to_vec());
    assert_eq!(cert.issuer(), root.subject());
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        OID_KEY_TYPE_EC_PUBLIC_KEY
    );

    // NotBefore = now - 1 min, NotAfter = NotBefore + TTL.
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    assert!((before - 60..=after - 60).contains(&nb), "NotBefore {nb}");
    assert_eq!(na - nb, DEFAULT_LEAF_TTL.as_secs() as i64);
    assert_eq!(unix(leaf.valid_after), nb);
    assert_eq!(unix(leaf.valid_before), na);

    assert_eq!(leaf.serial_number, colon_hex(cert.raw_serial()));
}

#[test]
fn leaf_chains_to_root_with_both_usages() {
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::ParsedCertificate;
    let ca = ca();
    let id = ServiceId::new(ca.trust_domain().clone(), "dc1", "web");
    let leaf = ca.issue_leaf(&id, DEFAULT_LEAF_TTL).unwrap();
    let mut store = rustls::RootCertStore::empty();
    store
        .add(CertificateDer::from(der_of(&ca.root().root_cert_pem)))
        .unwrap();
    let leaf_der = CertificateDer::from(der_of(&leaf.cert_pem));
    let parsed = ParsedCertificate::try_from(&leaf_der).unwrap();
    let algs = crate::tls::crypto_provider()
        .signature_verification_algorithms
        .all;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &store,
        &[],
        UnixTime::now(),
        algs,
    )
    .expect("leaf chains to the root for serverAuth");
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(store),
        crate::tls::crypto_provider(),
    )
    .build()
    .unwrap();
    client_verifier
        .verify_client_cert(&leaf_der, &[], UnixTime::now())
        .expect("leaf chains to the root for clientAuth");
}

#[test]
fn private_key_is_sec1_with_curve_and_public_key() {
    let ca = ca();
    let id = ServiceId::new(ca.trust_domain().clone(), "dc1", "web");
    let leaf = ca.issue_leaf(&id, DEFAULT_LEAF_TTL).unwrap();
    assert!(leaf
        .private_key_pem
        .starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
    assert!(leaf
        .private_key_pem
        .ends_with("-----END EC PRIVATE KEY-----\n"));
    use rustls::pki_types::pem::PemObject;
    let sec1 =
        rustls::pki_types::PrivateSec1KeyDer::from_pem_slice(leaf.private_key_pem.as_bytes())
            .unwrap();
    // ECPrivateKey { version 1, privateKey, [0] prime256v1, [1] publicKey }
    let (tag, body, rest) = der_read(sec1.secret_sec1_der()).unwrap();
    assert_eq!((tag, rest.len()), (0x30, 0));
    let (tag, version, rest) = der_read(body).unwrap();
    assert_eq!((tag, version), (0x02, &[1u8][..]));
    let (tag, scalar, rest) = der_read(rest).unwrap();
    assert_eq!((tag, scalar.len()), (0x04, 32));
    let (tag, params, rest) = der_read(rest).unwrap();
    assert_eq!(tag, 0xa0);
    assert_eq!(
        params,
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
    );
    let (tag, public, rest) = der_read(rest).unwrap();
    assert_eq!((tag, rest.len()), (0xa1, 0));
    let leaf_der = der_of(&leaf.cert_pem);
    let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, bits, _) = der_read(public).unwrap();
    assert_eq!(&bits[1..], cert.public_key().subject_public_key.as_ref());
    // And the key loads and matches the certificate.
    Identity::from_pem(&leaf.cert_pem, &leaf.private_key_pem).unwrap();
}

#[test]
fn serials_increase_and_rotation_continues_them() {
    let ca = ca();
    let id = ServiceId::new(ca.trust_domain().clone(), "dc1", "web");
    let serials: Vec<String> = (0..3)
        .map(|_| ca.issue_leaf(&id, DEFAULT_LEAF_TTL).unwrap().serial_number)
        .collect();
    assert_eq!(serials, ["02", "03", "04"]);
    let next = ca.rotate().unwrap();
    assert_eq!(next.root().serial_number, 5);
    assert_ne!(next.root().id, ca.root().id);
    assert_ne!(next.root().signing_key_id, ca.root().signing_key_id);
    assert_eq!(next.trust_domain(), ca.trust_domain());
    let leaf = next.issue_leaf(&id, DEFAULT_LEAF_TTL).unwrap();
    assert_eq!(leaf.serial_number, "06");
    let info = leaf_info(&leaf.cert_pem).unwrap();
    assert_eq!(
        info.authority_key_id.as_deref(),
        Some(next.root().signing_key_id.as_str())
    );

    let big =
        CertificateAuthority::generate_with_first_serial(ca.trust_domain(), CLUSTER, 265).unwrap();
    assert_eq!(
        big.issue_leaf(&id, DEFAULT_LEAF_TTL).unwrap().serial_number,
        "01:0a"
    );
}

#[test]
fn bad_requests_are_refused() {
    let ca = ca();
    let foreign = ServiceId::new("other.consul".parse().unwrap(), "dc1", "web");
    let err = ca.issue_leaf(&foreign, DEFAULT_LEAF_TTL).unwrap_err();
    assert!(matches!(err, CaError::WrongTrustDomain { .. }), "{err}");
    assert!(err.to_string().contains("other.consul"));
    let id = ServiceId::new(ca.trust_domain().clone(), "dc1", "web");
    assert!(matches!(
        ca.issue_leaf(&id, Duration::ZERO).unwrap_err(),
        CaError::InvalidTtl(_)
    ));
    let td = ca.trust_domain().clone();
    for bad in ["", "short", "has space in it", "1111/2222-3333"] {
        let err = CertificateAuthority::generate(&td, bad).unwrap_err();
        assert!(
            matches!(err, CaError::InvalidClusterId(_)),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn colon_hex_is_lowercase_two_digit() {
    assert_eq!(colon_hex(&[0x08]), "08");
    assert_eq!(colon_hex(&[0x01, 0x0a, 0xff]), "01:0a:ff");
    assert_eq!(minimal_be_bytes(0), [0]);
    assert_eq!(minimal_be_bytes(266), [1, 10]);
}
