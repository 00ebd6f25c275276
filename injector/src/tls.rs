//! The webhook's TLS: one crypto policy (rustls with the ring provider), serving certificates
//! loaded from files and reloaded when they change on disk, or generated from an in-process CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A TLS problem, naming the file or host involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("{what}: no PEM certificate found")]
    NoCertificate {
        /// Where the PEM came from (the `what` given to [`server_config`]).
        what: String,
    },
    /// The key PEM holds no private key block.
    #[error("{what}: no PEM private key found")]
    NoKey {
        /// Where the PEM came from.
        what: String,
    },
    /// A PEM block that does not decode.
    #[error("{what}: bad PEM: {source}")]
    Pem {
        /// Where the PEM came from.
        what: String,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("{what}: certificate and key rejected: {source}")]
    Rustls {
        /// Where the pair came from.
        what: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// rcgen could not make a key or certificate (e.g. a host name that is not a valid SAN).
    #[error("cannot generate a certificate for {hosts:?}: {source}")]
    Generate {
        /// The certificate's names (the CA's common name for the CA itself).
        hosts: Vec<String>,
        /// rcgen's reason.
        source: rcgen::Error,
    },
}

/// The one crypto provider the injector uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A serving `ServerConfig` from PEM text; `what` names the source in errors.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            what: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|source| TlsError::Pem {
            what: what.to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            what: what.to_string(),
        })?;
    let rustls_err = |source| TlsError::Rustls {
        what: what.to_string(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate pair read from files: the config built from it and the raw bytes read, to
/// notice the next change.
pub(crate) struct LoadedPair {
    /// The serving config built from the pair.
    pub config: Arc<ServerConfig>,
    /// The certificate file's bytes followed by the key file's.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for LoadedPair {
    // The bytes hold the private key: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPair").finish_non_exhaustive()
    }
}

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads both files (their raw bytes, to notice changes) and builds a config.
    pub(crate) fn load(&self) -> Result<LoadedPair, TlsError> {
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        self.pair(cert, key)
    }

    /// Reads the files again: `Ok(None)` when their bytes are the ones in `seen`, the new
    /// config and bytes when they changed and parse, an error (naming the files) otherwise.
    pub(crate) fn reload_if_changed(&self, seen: &[u8]) -> Result<Option<LoadedPair>, TlsError> {
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        if cert.len() + key.len() == seen.len() && seen.starts_with(&cert) && seen.ends_with(&key) {
            return Ok(None);
        }
        self.pair(cert, key).map(Some)
    }

    /// The config for the bytes read from the two files (errors name both), and those bytes.
    fn pair(&self, cert: Vec<u8>, key: Vec<u8>) -> Result<LoadedPair, TlsError> {
        let what = format!("{} + {}", self.cert.display(), self.key.display());
        let config = server_config(&cert, &key, &what)?;
        let mut bytes = cert;
        bytes.extend_from_slice(&key);
        Ok(LoadedPair { config, bytes })
    }

    /// Polls the files every `interval` and publishes a new config when their content changes
    /// and parses. A bad or half-written pair keeps the config that is being served (and is
    /// logged once, not at every poll).
    pub(crate) async fn watch(
        self,
        mut seen: Vec<u8>,
        interval: Duration,
        tx: watch::Sender<Arc<ServerConfig>>,
        shutdown: CancellationToken,
    ) {
        let mut last_error = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.reload_if_changed(&seen) {
                Ok(None) => {}
                Ok(Some(pair)) => {
                    tracing::info!(cert.file = %self.cert.display(), "serving certificate reloaded");
                    seen = pair.bytes;
                    last_error = None;
                    tx.send_replace(pair.config);
                }
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        tracing::warn!(error = %message, "keeping the served certificate");
                        last_error = Some(message);
                    }
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A CA made in-process (ECDSA P-256) that issues serving certificates.
pub struct GeneratedCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM.
#[derive(Clone)]
pub struct ServingCert {
    /// The certificate alone (signed by the CA, which is not appended).
    pub cert_pem: String,
    /// Its P-256 key, PKCS#8 PEM.
    pub key_pem: String,
    /// The end of its validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl GeneratedCa {
    /// A new CA valid for `validity` (from one minute ago, for clock skew).
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, TlsError> {
        let gen_err = |source| TlsError::Generate {
            hosts: vec![common_name.to_string()],
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity);
        let key = KeyPair::generate().map_err(gen_err)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(gen_err)?;
        Ok(GeneratedCa { issuer })
    }

    /// The CA certificate, PEM: what goes into a `caBundle` (base64 of this text).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `hosts` (IP literals become IP SANs, the rest DNS SANs).
    pub fn issue_serving(
        &self,
        hosts: &[String],
        validity: Duration,
    ) -> Result<ServingCert, TlsError> {
        let gen_err = |source| TlsError::Generate {
            hosts: hosts.to_vec(),
            source,
        };
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(gen_err)?;
        params.distinguished_name = dn(hosts
            .first()
            .map(String::as_str)
            .unwrap_or("tandem-injector"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let not_after = set_validity(&mut params, validity);
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// Re-issues the serving certificate from `ca` when two thirds of its life have passed.
pub(crate) async fn renew_generated(
    ca: Arc<GeneratedCa>,
    hosts: Vec<String>,
    validity: Duration,
    tx: watch::Sender<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) {
    loop {
        let wait = validity.mul_f64(2.0 / 3.0);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let renewed = ca.issue_serving(&hosts, validity).and_then(|c| {
            server_config(
                c.cert_pem.as_bytes(),
                c.key_pem.as_bytes(),
                "generated certificate",
            )
        });
        match renewed {
            Ok(config) => {
                tracing::info!("generated serving certificate renewed");
                tx.send_replace(config);
            }
            Err(e) => tracing::error!(error = %e, "keeping the served certificate"),
        }
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Duration) -> SystemTime {
    let now = SystemTime::now();
    let not_after = now + validity;
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = not_after.into();
    not_after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cert_loads_into_a_server_config() {
        let ca = GeneratedCa::generate("test CA", Duration::from_secs(3600)).unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaf = ca.issue_serving(&hosts, Duration::from_secs(600)).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), "test").unwrap();
    }

    #[test]
    fn errors_name_the_source() {
        let err = server_config(b"junk", b"junk", "my.crt").unwrap_err();
        assert_eq!(err.to_string(), "my.crt: no PEM certificate found");
        let files = CertFiles {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
        };
        let err = files.load().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
    }

    #[test]
    fn reload_sees_changes_and_keeps_going_on_garbage() {
        let dir = std::env::temp_dir().join(format!("tandem-injector-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        let ca = GeneratedCa::generate("test CA", Duration::from_secs(3600)).unwrap();
        let write = |leaf: &ServingCert| {
            std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
            std::fs::write(&files.key, &leaf.key_pem).unwrap();
        };
        let hosts = ["localhost".to_string()];
        write(&ca.issue_serving(&hosts, Duration::from_secs(60)).unwrap());
        let seen = files.load().unwrap().bytes;
        assert!(files.reload_if_changed(&seen).unwrap().is_none());

        std::fs::write(&files.cert, "half written").unwrap();
        let err = files.reload_if_changed(&seen).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");

        write(&ca.issue_serving(&hosts, Duration::from_secs(60)).unwrap());
        let now = files
            .reload_if_changed(&seen)
            .unwrap()
            .expect("a change")
            .bytes;
        assert_ne!(now, seen);
        assert!(files.reload_if_changed(&now).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_host_is_an_error() {
        let ca = GeneratedCa::generate("test CA", Duration::from_secs(3600)).unwrap();
        assert!(ca
            .issue_serving(&["h\u{f4}st".to_string()], Duration::from_secs(60))
            .is_err());
    }
}
