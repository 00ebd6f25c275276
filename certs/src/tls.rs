//! The one module that owns crypto policy: the aws-lc-rs `CryptoProvider` (measured faster
//! than ring by `tandem-bench provider`), TLS 1.3 preferred and 1.2 accepted, ECDHE + AEAD
//! suites only, X25519 / P-256 / P-384 key exchange, and the rustls configs the proxy uses.
//! [`install_default`] makes it the process default, so every other TLS client of the process
//! (reqwest's, for an HTTPS agent) uses the same provider.
//!
//! Chain verification is always rustls/webpki's; the SPIFFE checks in `verifier` run after it
//! succeeds, never instead of it. Credentials rotate by building new configs
//! ([`server_config`], [`client_config`]) from the new [`Identity`] / [`TrustRoots`] and
//! publishing them (the proxy uses a `tokio::sync::watch`); connections already established keep
//! the config they started with.

mod verifier;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::colon_hex;
use crate::spiffe::{ServiceId, SpiffeError, SpiffeId, TrustDomain};

pub use verifier::{SpiffeClientVerifier, SpiffeServerVerifier};

/// The protocol versions Tandem speaks, best first. TLS 1.2 stays because Envoy's upstream
/// default tops out at 1.2.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// The aws-lc-rs provider restricted to ECDHE key exchange with AEAD ciphers (the TLS 1.3
/// suites and the TLS 1.2 ECDHE-{ECDSA,RSA}-{AES-GCM,CHACHA20-POLY1305} suites, as Consul
/// allows) over X25519, P-256 and P-384: the groups Envoy and Go's crypto/tls offer, without
/// the post-quantum hybrid aws-lc-rs would add (a 1.2 kB key share in every ClientHello).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cipher_suite::TLS13_AES_128_GCM_SHA256,
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                ],
                kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
                ..default_provider()
            })
        })
        .clone()
}

/// Makes [`crypto_provider`] the process default (idempotent): a TLS client that does not name
/// a provider, such as reqwest's, then uses it. Call it before building such a client.
pub fn install_default() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Another provider installed first (an embedding program) is kept: it is its process.
        let _ = CryptoProvider::install_default(CryptoProvider::clone(&crypto_provider()));
    });
}

/// A certificate chain (leaf first, then any intermediates) and its private key.
#[derive(Clone)]
pub struct Identity {
    certified: Arc<CertifiedKey>,
    spiffe: Option<SpiffeId>,
    not_after: SystemTime,
}

impl Identity {
    /// Loads a chain and key from PEM, e.g. a Consul leaf's `CertPEM` and `PrivateKeyPEM`.
    /// The key may be SEC1 (`EC PRIVATE KEY`, what Consul returns), PKCS#8 (`PRIVATE KEY`) or
    /// PKCS#1 (`RSA PRIVATE KEY`); it must match the first certificate.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Identity, TlsError> {
        let chain = certs_from_pem(cert_chain_pem, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey,
            other => TlsError::Pem {
                what: "private key",
                reason: other.to_string(),
            },
        })?;
        let (spiffe, not_after) = {
            let leaf = parse_cert(&chain[0])?;
            (
                spiffe_of(&leaf).ok(),
                asn1_time(leaf.validity().not_after.timestamp()),
            )
        };
        let certified =
            CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
                other => TlsError::UnusableKey(other),
            })?;
        Ok(Identity {
            certified: Arc::new(certified),
            spiffe,
            not_after,
        })
    }

    /// The SPIFFE ID in the leaf's first URI SAN, if it has one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.spiffe.as_ref()
    }

    /// The service identity of the leaf, if it is a service leaf.
    pub fn service_id(&self) -> Option<&ServiceId> {
        self.spiffe.as_ref().and_then(SpiffeId::as_service)
    }

    /// The leaf's NotAfter.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain as presented in handshakes, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe", &self.spiffe.as_ref().map(|id| id.to_string()))
            .field("chain_len", &self.certified.cert.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The CA roots a peer's chain must end in, and the trust domain peers must belong to.
/// Holds every root Consul lists (not only the active one): that keeps leaves of a rotated-out
/// root valid until they are renewed.
#[derive(Clone, Debug)]
pub struct TrustRoots {
    store: Arc<RootCertStore>,
    trust_domain: TrustDomain,
    roots: Arc<Vec<CertificateDer<'static>>>,
}

impl TrustRoots {
    /// Builds the trust set from PEM strings (each may hold several certificates), e.g. every
    /// `RootCert` of `/v1/agent/connect/ca/roots`. No certificate at all is an error.
    pub fn from_pems<'a>(
        pems: impl IntoIterator<Item = &'a str>,
        trust_domain: TrustDomain,
    ) -> Result<TrustRoots, TlsError> {
        let mut store = RootCertStore::empty();
        let mut roots = Vec::new();
        for (index, pem) in pems.into_iter().enumerate() {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|e| TlsError::InvalidRoot {
                    index,
                    reason: e.to_string(),
                })?;
                store.add(der.clone()).map_err(|e| TlsError::InvalidRoot {
                    index,
                    reason: e.to_string(),
                })?;
                roots.push(der);
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoTrustRoots);
        }
        Ok(TrustRoots {
            store: Arc::new(store),
            trust_domain,
            roots: Arc::new(roots),
        })
    }

    /// The trust domain a peer's SPIFFE ID must be in (the server side checks it; the client
    /// side compares paths only).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// How many root certificates are trusted.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Always false: an empty set cannot be built.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The trusted roots, DER.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub(crate) fn store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }
}

/// The config for the public (inbound) listener: presents `identity`, requires a client
/// certificate that chains to `roots` with EKU clientAuth and whose first URI SAN is a service
/// SPIFFE ID in the roots' trust domain. Authorization (intentions) is the caller's: read the
/// peer with [`peer_service_id`] after the handshake.
pub fn server_config(
    identity: &Identity,
    roots: &TrustRoots,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = SpiffeClientVerifier::new(roots)?;
    let config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified.clone())));
    Ok(Arc::new(config))
}

/// The config for connecting to an upstream `expected`: presents `identity`, verifies the
/// server's chain to `roots` with EKU serverAuth, then that its first URI SAN is a service
/// SPIFFE ID whose path [`matches_path`](ServiceId::matches_path) `expected`. No DNS name is
/// checked: the server name given to `connect` (see [`server_name`]) only sets SNI.
pub fn client_config(
    identity: &Identity,
    roots: &TrustRoots,
    expected: &ServiceId,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = SpiffeServerVerifier::new(roots, expected.clone());
    let config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Config)?
        .dangerous() // rustls' name for "custom verifier"; ours wraps webpki, weakening nothing
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified.clone())));
    Ok(Arc::new(config))
}

/// The name to pass to `TlsConnector::connect` for `expected`: its Consul SNI
/// (`<service>.default.<dc>.internal.<td>`), or `consul` if that is not a valid DNS name.
/// Verification does not depend on it.
pub fn server_name(expected: &ServiceId) -> ServerName<'static> {
    ServerName::try_from(expected.sni())
        .unwrap_or_else(|_| ServerName::try_from("consul").expect("\"consul\" is a valid DNS name"))
}

/// The peer's service identity from the first URI SAN of its end-entity certificate
/// (`ServerConnection::peer_certificates()` / `ClientConnection::peer_certificates()`).
pub fn peer_service_id(
    conn_peer_certs: Option<&[CertificateDer<'_>]>,
) -> Result<ServiceId, TlsError> {
    let leaf = conn_peer_certs
        .and_then(|certs| certs.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    service_id_of(leaf)
}

/// What a leaf certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// The first URI SAN.
    pub spiffe: SpiffeId,
    /// Colon-hex serial, as Consul's `SerialNumber` / `ClientCertSerial`.
    pub serial_number: String,
    /// Start of validity (whole seconds).
    pub not_before: SystemTime,
    /// End of validity (whole seconds).
    pub not_after: SystemTime,
    /// Colon-hex AuthorityKeyId: compare with the active root's `SigningKeyID` to see whether
    /// the leaf was signed by it.
    pub authority_key_id: Option<String>,
}

/// Reads a leaf given as PEM (the first certificate is used) or DER.
pub fn leaf_info(cert_pem_or_der: impl AsRef<[u8]>) -> Result<LeafInfo, TlsError> {
    let bytes = cert_pem_or_der.as_ref();
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let pem = std::str::from_utf8(bytes).map_err(|_| TlsError::Pem {
            what: "certificate",
            reason: "not UTF-8".into(),
        })?;
        let chain = certs_from_pem(pem, "certificate")?;
        leaf_info_der(&chain[0])
    } else {
        leaf_info_der(&CertificateDer::from(bytes))
    }
}

/// Why a credential, a trust set or a peer was not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block that does not decode.
    #[error("invalid {what} PEM: {reason}")]
    Pem {
        /// Which input: `certificate`, `certificate chain` or `private key`.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A certificate input with no `CERTIFICATE` block; carries which input.
    #[error("{0} PEM holds no CERTIFICATE block")]
    NoCertificate(&'static str),
    /// The key PEM has no private-key block of a known kind.
    #[error(
        "key PEM holds no private key (expected an EC PRIVATE KEY, PRIVATE KEY or RSA PRIVATE KEY block)"
    )]
    NoPrivateKey,
    /// The key decodes but the crypto provider cannot sign with it (e.g. an unsupported curve).
    #[error("private key is not usable with the aws-lc-rs provider: {0}")]
    UnusableKey(rustls::Error),
    /// The key is not the one the leaf certificate was issued for.
    #[error("private key does not match the certificate's public key")]
    KeyMismatch,
    /// A root that does not decode or that webpki will not use as a trust anchor.
    #[error("invalid trust root (PEM #{index}): {reason}")]
    InvalidRoot {
        /// Which of the PEM strings given to [`TrustRoots::from_pems`] holds it, from 0.
        index: usize,
        /// The decoder's or webpki's message.
        reason: String,
    },
    /// [`TrustRoots::from_pems`] found no certificate at all.
    #[error("no trust roots: at least one CA root certificate is required")]
    NoTrustRoots,
    /// rustls refused the protocol versions or suites (a bug in this module, not in the input).
    #[error("cannot build TLS config: {0}")]
    Config(rustls::Error),
    /// rustls could not build its client verifier from the roots.
    #[error("cannot build client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The connection has no peer certificate (handshake not done, or none sent).
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The certificate (or its SAN extension) is not valid X.509 DER; carries the parser's
    /// message.
    #[error("cannot parse certificate: {0}")]
    BadCertificate(String),
    /// The certificate has no URI SAN.
    #[error("certificate has no URI SAN (expected a SPIFFE ID)")]
    NoSpiffeId,
    /// The first URI SAN is not a SPIFFE ID Consul would accept.
    #[error("certificate URI SAN is not a valid SPIFFE ID: {0}")]
    Spiffe(#[from] SpiffeError),
    /// The first URI SAN is a SPIFFE ID of another kind (agent, server, CA); carries it.
    #[error("peer SPIFFE ID {0} is not a service identity")]
    NotAService(String),
    /// A client's service ID is from another cluster than the roots (server side).
    #[error("peer SPIFFE ID {actual} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The peer's SPIFFE ID.
        actual: String,
        /// The roots' trust domain.
        expected: TrustDomain,
    },
    /// An upstream presented another service's identity (client side).
    #[error("peer SPIFFE ID {actual} does not name the expected service {expected}")]
    UnexpectedService {
        /// The peer's SPIFFE ID.
        actual: String,
        /// The SPIFFE ID the client config was built for.
        expected: String,
    },
}

fn certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(chain)
}

fn parse_cert<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, TlsError> {
    X509Certificate::from_der(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))
}

/// The first URI SAN, parsed.
fn spiffe_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, TlsError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?
        .ok_or(TlsError::NoSpiffeId)?;
    let uri = san
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .ok_or(TlsError::NoSpiffeId)?;
    Ok(uri.parse()?)
}

pub(crate) fn service_id_of(der: &CertificateDer<'_>) -> Result<ServiceId, TlsError> {
    match spiffe_of(&parse_cert(der)?)? {
        SpiffeId::Service(id) => Ok(id),
        other => Err(TlsError::NotAService(other.to_string())),
    }
}

fn leaf_info_der(der: &CertificateDer<'_>) -> Result<LeafInfo, TlsError> {
    let cert = parse_cert(der)?;
    let authority_key_id = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| colon_hex(id.0))
            }
            _ => None,
        });
    Ok(LeafInfo {
        spiffe: spiffe_of(&cert)?,
        serial_number: colon_hex(strip_leading_zeros(cert.raw_serial())),
        not_before: asn1_time(cert.validity().not_before.timestamp()),
        not_after: asn1_time(cert.validity().not_after.timestamp()),
        authority_key_id,
    })
}

/// DER INTEGERs carry a leading zero when the top bit is set; Go's `big.Int.Bytes()` does not.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

fn asn1_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests;
