//! A certificate authority that issues what Consul's built-in CA ("consul" provider) issues.
//!
//! * Root (`ConsulProvider.generateCA`): EC P-256, subject
//!   `CN=pri-<8 base36>.consul.ca.<first 8 of cluster id>.consul`, URI SAN `spiffe://<td>`,
//!   CA:TRUE (critical, no path length), KeyUsage CertSign|CRLSign|DigitalSignature (critical),
//!   SKI = AKI = SHA-256 of the PKIX public key, valid from now for 10 years.
//! * Leaf (`leafcert/generate.go`, `ConsulProvider.Sign`): fresh EC P-256 key returned as SEC1
//!   `EC PRIVATE KEY` PEM, empty subject, one critical URI SAN, KeyUsage DigitalSignature |
//!   KeyEncipherment | DataEncipherment | KeyAgreement (critical), EKU clientAuth + serverAuth,
//!   CA:FALSE (critical), AKI = root SKI, NotBefore = now − 1 min, NotAfter = NotBefore + TTL.
//!
//! Serial numbers come from one counter per CA (the root takes the first); [`CertificateAuthority::rotate`]
//! makes the next root and carries the counter on, as Consul's provider serial does.
//! Root rotation is the caller keeping the old roots trusted next to the new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::spiffe::{ServiceId, SpiffeId, TrustDomain};

pub(crate) mod sec1;

use sec1::sec1_pem;

/// Consul's `RootCertTTL` default: 87600h.
pub const ROOT_CERT_TTL: Duration = Duration::from_secs(87_600 * 3600);
/// Consul's `LeafCertTTL` default: 72h.
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
/// How far in the past a leaf's NotBefore is set, to absorb clock skew (Consul: 1 minute).
pub const LEAF_BACKDATE: Duration = Duration::from_secs(60);
/// The `Name` Consul's built-in provider gives its roots.
pub const ROOT_NAME: &str = "Consul CA Primary Cert";

/// One root key and certificate, and the leaves it signs.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    cluster_id: String,
    issuer: Issuer<'static, KeyPair>,
    root: RootInfo,
    next_serial: AtomicU64,
}

/// The public description of a root, with the fields of Consul's `CARoot` that come from the
/// certificate itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootInfo {
    /// SHA-1 fingerprint of the root DER, lowercase colon-hex (Consul's `CARoot.ID`).
    pub id: String,
    /// Always [`ROOT_NAME`].
    pub name: String,
    /// The root certificate's serial (the first of this CA's counter).
    pub serial_number: u64,
    /// Colon-hex of the root's SubjectKeyId (32 bytes, SHA-256 of the public key).
    pub signing_key_id: String,
    /// Start of validity: when the root was made (whole seconds).
    pub not_before: SystemTime,
    /// End of validity: [`ROOT_CERT_TTL`] after `not_before`.
    pub not_after: SystemTime,
    /// PEM, ending with a newline.
    pub root_cert_pem: String,
}

/// A freshly issued leaf, shaped like Consul's `IssuedCert`.
#[derive(Clone, Debug)]
pub struct IssuedLeaf {
    /// The leaf alone, PEM, ending with a newline (signed directly by the root: no
    /// intermediates).
    pub cert_pem: String,
    /// SEC1 `-----BEGIN EC PRIVATE KEY-----` PEM, as Consul returns it.
    pub private_key_pem: String,
    /// Colon-hex of the serial number bytes (`"08"`, `"01:0a"`).
    pub serial_number: String,
    /// The leaf's NotBefore: [`LEAF_BACKDATE`] before it was issued (whole seconds).
    pub valid_after: SystemTime,
    /// The leaf's NotAfter: `valid_after` plus the TTL asked for.
    pub valid_before: SystemTime,
}

/// Why the CA could not make a root or a leaf.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen failed to make a key or sign a certificate.
    #[error("cannot generate certificate material: {0}")]
    Crypto(#[from] rcgen::Error),
    /// The cluster id is shorter than 8 characters or has one outside `[0-9A-Za-z-]`; carries it.
    #[error("invalid cluster id {0:?}: expected at least 8 characters of [0-9a-z-]")]
    InvalidClusterId(String),
    /// A leaf was asked for a service in another trust domain.
    #[error("SPIFFE ID {id} is not in this CA's trust domain {expected}")]
    WrongTrustDomain {
        /// The SPIFFE ID asked for.
        id: String,
        /// This CA's trust domain.
        expected: TrustDomain,
    },
    /// A leaf TTL under one second; carries it.
    #[error("invalid leaf TTL {0:?}: must be at least one second")]
    InvalidTtl(Duration),
    /// The serial counter reached `u64::MAX` (a rotated CA continues the same counter).
    #[error("the serial number counter of this CA is exhausted")]
    SerialExhausted,
}

impl CertificateAuthority {
    /// A new root for `trust_domain`; `cluster_id` is the cluster UUID whose first 8 characters
    /// appear in the root's common name. Serial numbers start at 1.
    pub fn generate(trust_domain: &TrustDomain, cluster_id: &str) -> Result<Self, CaError> {
        Self::generate_with_first_serial(trust_domain, cluster_id, 1)
    }

    /// The next root for the same trust domain and cluster (a new key), continuing this CA's
    /// serial numbers. The caller keeps trusting this root until its leaves have expired.
    pub fn rotate(&self) -> Result<Self, CaError> {
        let first = self.next_serial.load(Ordering::Relaxed);
        Self::generate_with_first_serial(&self.trust_domain, &self.cluster_id, first)
    }

    /// Like [`generate`](Self::generate), with serial numbers starting at `first_serial`.
    pub fn generate_with_first_serial(
        trust_domain: &TrustDomain,
        cluster_id: &str,
        first_serial: u64,
    ) -> Result<Self, CaError> {
        let cluster_ok = cluster_id.len() >= 8
            && cluster_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !cluster_ok {
            return Err(CaError::InvalidClusterId(cluster_id.to_owned()));
        }
        let serial = first_serial.max(1);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let ski = key_id(&key);
        let now = unix_seconds(SystemTime::now());
        let not_after = now + ROOT_CERT_TTL;

        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!(
                "pri-{}.consul.ca.{}.consul",
                base36_uid(),
                &cluster_id[..8].to_ascii_lowercase()
            ),
        );
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.serial_number = Some(serial_number(serial));
        params.subject_alt_names = vec![uri_san(&SpiffeId::Ca(trust_domain.clone()).to_string())?];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski.clone());
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(now);
        params.not_after = OffsetDateTime::from(not_after);
        let cert = params.self_signed(&key)?;

        let root = RootInfo {
            id: root_id(cert.der()),
            name: ROOT_NAME.to_owned(),
            serial_number: serial,
            signing_key_id: colon_hex(&ski),
            not_before: now,
            not_after,
            root_cert_pem: ensure_newline(cert.pem()),
        };
        Ok(CertificateAuthority {
            trust_domain: trust_domain.clone(),
            cluster_id: cluster_id.to_owned(),
            issuer: Issuer::new(params, key),
            root,
            next_serial: AtomicU64::new(serial + 1),
        })
    }

    /// This CA's root certificate and its Consul `CARoot` fields.
    pub fn root(&self) -> &RootInfo {
        &self.root
    }

    /// The trust domain the root names and every leaf must be in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The cluster id the CA was generated for (Consul's `ClusterID`), as given.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Issues a leaf for `id` with a fresh P-256 key, valid from one minute ago for `ttl`.
    /// Refuses an `id` outside this CA's trust domain, as Consul's servers do.
    pub fn issue_leaf(&self, id: &ServiceId, ttl: Duration) -> Result<IssuedLeaf, CaError> {
        if id.trust_domain != self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                id: id.to_string(),
                expected: self.trust_domain.clone(),
            });
        }
        if ttl < Duration::from_secs(1) {
            return Err(CaError::InvalidTtl(ttl));
        }
        let not_before = unix_seconds(SystemTime::now()) - LEAF_BACKDATE;
        self.issue(LeafSpec {
            uri: Some(id.to_string()),
            not_before,
            not_after: not_before + ttl,
        })
    }

    /// Issues a leaf with Consul's leaf profile and whatever URI SAN and validity `spec` says,
    /// without the checks of [`issue_leaf`](Self::issue_leaf): the test identities need it.
    pub(crate) fn issue(&self, spec: LeafSpec) -> Result<IssuedLeaf, CaError> {
        let serial = self
            .next_serial
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_add(1))
            .map_err(|_| CaError::SerialExhausted)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let not_before = unix_seconds(spec.not_before);
        let not_after = unix_seconds(spec.not_after);

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.serial_number = Some(serial_number(serial));
        params.subject_alt_names = match &spec.uri {
            Some(uri) => vec![uri_san(uri)?],
            // An otherwise valid leaf that carries a DNS name instead of a SPIFFE ID.
            None => vec![SanType::DnsName(Ia5String::try_from("web.service.consul")?)],
        };
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::DataEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key));
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        let cert = params.signed_by(&key, &self.issuer)?;

        Ok(IssuedLeaf {
            cert_pem: ensure_newline(cert.pem()),
            private_key_pem: sec1_pem(&key),
            serial_number: colon_hex(&minimal_be_bytes(serial)),
            valid_after: not_before,
            valid_before: not_after,
        })
    }
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("root_id", &self.root.id)
            .finish_non_exhaustive()
    }
}

/// What a leaf says, for [`CertificateAuthority::issue`].
pub(crate) struct LeafSpec {
    /// The URI SAN; `None` puts a DNS SAN in its place.
    pub uri: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Lowercase colon-separated hex, Consul's `connect.HexString`.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Consul's `CARoot.ID` of a root: the SHA-1 fingerprint of its DER, lowercase colon-hex.
pub fn root_id(cert_der: &[u8]) -> String {
    colon_hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der).as_ref(),
    )
}

/// Consul's key id (`connect.KeyId`, `CARoot.SigningKeyID`): SHA-256 over the DER
/// SubjectPublicKeyInfo, not truncated, lowercase colon-hex.
pub fn signing_key_id(spki_der: &[u8]) -> String {
    colon_hex(&Sha256::digest(spki_der))
}

fn key_id(key: &KeyPair) -> Vec<u8> {
    Sha256::digest(key.subject_public_key_info()).to_vec()
}

fn uri_san(uri: &str) -> Result<SanType, CaError> {
    Ok(SanType::URI(Ia5String::try_from(uri)?))
}

fn serial_number(serial: u64) -> SerialNumber {
    SerialNumber::from_slice(&minimal_be_bytes(serial))
}

/// Big-endian bytes without leading zeros, like Go's `big.Int.Bytes()` (at least one byte).
fn minimal_be_bytes(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    bytes[first..].to_vec()
}

/// Truncates to whole seconds: certificates carry no fractions.
fn unix_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

/// Consul's `CompactUID`-style 8 lowercase base-36 characters.
fn base36_uid() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| DIGITS[rng.random_range(0..DIGITS.len())] as char)
        .collect()
}

fn ensure_newline(mut pem: String) -> String {
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem
}

#[cfg(test)]
mod tests;
