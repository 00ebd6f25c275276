//! Certificate verifiers: rustls/webpki chain verification first, then the SPIFFE check.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use super::{crypto_provider, service_id_of, TlsError, TrustRoots};
use crate::spiffe::{ServiceId, TrustDomain};

/// Verifies clients for the public listener: webpki's client verifier (chain to the roots,
/// EKU clientAuth, validity), then the end entity's first URI SAN must be a service SPIFFE ID
/// in the roots' trust domain. A client certificate is mandatory.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

impl SpiffeClientVerifier {
    /// A verifier trusting `roots` and accepting service IDs in their trust domain. Fails only
    /// if rustls cannot build its verifier from the roots ([`TlsError::Verifier`]).
    pub fn new(roots: &TrustRoots) -> Result<Self, TlsError> {
        let inner = WebPkiClientVerifier::builder_with_provider(roots.store(), crypto_provider())
            .build()?;
        Ok(SpiffeClientVerifier {
            inner,
            trust_domain: roots.trust_domain().clone(),
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = service_id_of(end_entity).map_err(rejected)?;
        if id.trust_domain != self.trust_domain {
            return Err(rejected(TlsError::WrongTrustDomain {
                actual: id.to_string(),
                expected: self.trust_domain.clone(),
            }));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies an upstream server: webpki chain verification to the roots with EKU serverAuth
/// (rustls' `verify_server_cert_signed_by_trust_anchor`), then the end entity's first URI SAN
/// must be a service SPIFFE ID whose path matches the expected service (trust domain not
/// compared, as Consul). The TLS server name is not checked: Connect leaves carry no DNS SAN.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: ServiceId,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier trusting `roots` and accepting only a server whose ID matches `expected`.
    pub fn new(roots: &TrustRoots, expected: ServiceId) -> Self {
        SpiffeServerVerifier {
            roots: roots.store(),
            expected,
            provider: crypto_provider(),
        }
    }

    /// The service this verifier accepts.
    pub fn expected(&self) -> &ServiceId {
        &self.expected
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let id = service_id_of(end_entity).map_err(rejected)?;
        if !id.matches_path(&self.expected) {
            return Err(rejected(TlsError::UnexpectedService {
                actual: id.to_string(),
                expected: self.expected.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A SPIFFE check failure as a rustls certificate error (sent as a `bad_certificate` alert);
/// the [`TlsError`] inside keeps the reason for the caller's log.
fn rejected(err: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}
