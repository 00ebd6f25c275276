//! One client and one server config per provider, and the measurements over them.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, HandshakeKind,
    RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
};
use tandem_certs::tls::PROTOCOL_VERSIONS;

use super::{restricted, Kx, Provider};
use crate::pki::BenchPki;

/// Plaintext written per call in the bulk measurement: one full TLS record.
pub const BULK_WRITE: usize = 16 * 1024;

/// What one measurement did: `count` handshakes (or writes), `bytes` of plaintext delivered.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    pub count: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Measurement {
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// Plaintext throughput in MB/s (10^6 bytes).
    pub fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// How long a measurement runs: a fixed count (tests) or a duration (the bench).
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Count(u64),
    Time(Duration),
}

impl Budget {
    fn done(self, count: u64, started: Instant) -> bool {
        match self {
            Budget::Count(n) => count >= n,
            Budget::Time(d) => started.elapsed() >= d,
        }
    }
}

/// A client and a server config built from one provider, one key-exchange group and the bench
/// PKI: a "web" client calling a "db" server.
pub struct Pair {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: ServerName<'static>,
}

impl Pair {
    pub fn new(pki: &BenchPki, provider: Provider, kx: Kx) -> anyhow::Result<Pair> {
        Pair::with_client_roots(pki, pki.root_pem(), provider, kx)
    }

    /// Like [`Pair::new`], but the client trusts `client_roots_pem` (tests: a foreign CA).
    fn with_client_roots(
        pki: &BenchPki,
        client_roots_pem: &str,
        provider: Provider,
        kx: Kx,
    ) -> anyhow::Result<Pair> {
        let provider = restricted(provider, kx)?;
        let client_key = certified_key(pki, "web", &provider)?;
        let server_key = certified_key(pki, "db", &provider)?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots(pki.root_pem())?, provider.clone())
                .build()
                .context("building the client verifier")?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(server_key)));

        let server_verifier = ChainVerifier {
            roots: roots(client_roots_pem)?,
            provider: provider.clone(),
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)?
            .dangerous() // rustls' name for a custom verifier; this one is webpki's chain check
            .with_custom_certificate_verifier(Arc::new(server_verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(client_key)));
        Ok(Pair {
            client: Arc::new(client),
            server: Arc::new(server),
            server_name: ServerName::try_from("db.default.dc1.internal.consul")?,
        })
    }

    /// Full mutual-TLS handshakes, each on fresh connections with resumption off on the client.
    pub fn full_handshakes(&self, budget: Budget) -> anyhow::Result<Measurement> {
        let client = self.client(Resumption::disabled());
        self.handshakes(&client, HandshakeKind::Full, budget)
    }

    /// Resumed handshakes: one full handshake fills the client's session cache, then every
    /// connection resumes with a ticket from the one before (TLS 1.3 PSK with ECDHE).
    pub fn resumed_handshakes(&self, budget: Budget) -> anyhow::Result<Measurement> {
        // A fresh store (a cloned config shares its store): runs stay independent.
        let client = self.client(Resumption::in_memory_sessions(256));
        self.handshake(&client, HandshakeKind::Full)
            .context("priming the session cache")?;
        self.handshakes(&client, HandshakeKind::Resumed, budget)
    }

    /// Bulk: the client writes [`BULK_WRITE`] bytes at a time, each encrypted into one record
    /// and decrypted by the server, over one connection. Fails unless the suite is
    /// TLS13_AES_128_GCM_SHA256 and every byte arrives.
    pub fn bulk(&self, budget: Budget) -> anyhow::Result<Measurement> {
        let client = self.client(Resumption::disabled());
        let (mut client, mut server) = self.handshake(&client, HandshakeKind::Full)?;
        let suite = client.negotiated_cipher_suite().map(|s| s.suite());
        anyhow::ensure!(
            suite == Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "negotiated {suite:?}, expected TLS13_AES_128_GCM_SHA256"
        );
        let block = vec![0x5a_u8; BULK_WRITE];
        let mut wire = Vec::with_capacity(2 * BULK_WRITE);
        let (mut count, mut bytes) = (0, 0);
        let started = Instant::now();
        while !budget.done(count, started) {
            client.writer().write_all(&block)?;
            bytes += transfer(&mut client, &mut server, &mut wire)? as u64;
            count += 1;
        }
        let elapsed = started.elapsed();
        let sent = count * BULK_WRITE as u64;
        anyhow::ensure!(bytes == sent, "server read {bytes} bytes of {sent}");
        Ok(Measurement {
            count,
            bytes,
            elapsed,
        })
    }

    /// The client config with its own `resumption`.
    fn client(&self, resumption: Resumption) -> Arc<ClientConfig> {
        let mut client = (*self.client).clone();
        client.resumption = resumption;
        Arc::new(client)
    }

    fn handshakes(
        &self,
        client: &Arc<ClientConfig>,
        kind: HandshakeKind,
        budget: Budget,
    ) -> anyhow::Result<Measurement> {
        let mut count = 0;
        let started = Instant::now();
        while !budget.done(count, started) {
            self.handshake(client, kind)
                .with_context(|| format!("handshake {}", count + 1))?;
            count += 1;
        }
        Ok(Measurement {
            count,
            bytes: 0,
            elapsed: started.elapsed(),
        })
    }

    /// One handshake to the end, session tickets delivered; fails unless it was of `kind` and
    /// both sides hold the other's certificate.
    fn handshake(
        &self,
        client: &Arc<ClientConfig>,
        kind: HandshakeKind,
    ) -> anyhow::Result<(Connection, Connection)> {
        let mut c = Connection::from(ClientConnection::new(
            client.clone(),
            self.server_name.clone(),
        )?);
        let mut s = Connection::from(ServerConnection::new(self.server.clone())?);
        let mut wire = Vec::new();
        loop {
            transfer(&mut c, &mut s, &mut wire)?;
            let to_server = wire.len();
            transfer(&mut s, &mut c, &mut wire)?;
            if to_server == 0 && wire.is_empty() {
                break;
            }
        }
        anyhow::ensure!(
            !c.is_handshaking() && !s.is_handshaking(),
            "handshake stalled"
        );
        anyhow::ensure!(
            c.handshake_kind() == Some(kind) && s.handshake_kind() == Some(kind),
            "expected a {kind:?} handshake, the client saw {:?}, the server {:?}",
            c.handshake_kind(),
            s.handshake_kind()
        );
        // A resumed handshake sends no certificates; rustls carries the peer's over.
        anyhow::ensure!(
            c.peer_certificates().is_some_and(|p| !p.is_empty())
                && s.peer_certificates().is_some_and(|p| !p.is_empty()),
            "a side has no peer certificate"
        );
        Ok((c, s))
    }
}

/// Moves every record `from` has to send into `to` and processes it; returns the plaintext
/// bytes `to` received (read and dropped). `wire` holds the records afterwards.
fn transfer(
    from: &mut Connection,
    to: &mut Connection,
    wire: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire)?;
    }
    let mut plaintext = 0;
    let mut scratch = [0_u8; BULK_WRITE];
    let mut records = &wire[..];
    while !records.is_empty() {
        to.read_tls(&mut records)?;
        to.process_new_packets()?;
        loop {
            match to.reader().read(&mut scratch) {
                Ok(0) => break, // close_notify
                Ok(n) => plaintext += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(plaintext)
}

fn certified_key(
    pki: &BenchPki,
    service: &str,
    provider: &CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let leaf = pki.leaf(service)?;
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the leaf PEM")?;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).context("reading the key")?;
    Ok(Arc::new(CertifiedKey::from_der(chain, key, provider)?))
}

fn roots(pem: &str) -> anyhow::Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        store.add(der.context("reading the root PEM")?)?;
    }
    Ok(Arc::new(store))
}

/// webpki's server chain verification with the provider's algorithms, no name check.
#[derive(Debug)]
struct ChainVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_server_cert_signed_by_trust_anchor(
            &ParsedCertificate::try_from(end_entity)?,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measurement_completes_real_handshakes_and_transfers() {
        let pki = BenchPki::generate().unwrap();
        for provider in Provider::ALL {
            for kx in [Kx::P256, Kx::X25519] {
                let pair = Pair::new(&pki, provider, kx).unwrap();
                let what = format!("{provider} {kx}");
                // Twice, as `run` does: a run must not leave sessions behind for the next.
                for _ in 0..2 {
                    assert_eq!(
                        pair.full_handshakes(Budget::Count(3)).unwrap().count,
                        3,
                        "{what}"
                    );
                    assert_eq!(
                        pair.resumed_handshakes(Budget::Count(3)).unwrap().count,
                        3,
                        "{what}"
                    );
                    let bulk = pair.bulk(Budget::Count(4)).unwrap();
                    assert_eq!(bulk.bytes, 4 * BULK_WRITE as u64, "{what}");
                }
            }
        }
    }

    #[test]
    fn the_negotiated_group_and_suite_are_the_ones_asked_for() {
        let pki = BenchPki::generate().unwrap();
        for provider in Provider::ALL {
            for kx in [Kx::P256, Kx::X25519] {
                let pair = Pair::new(&pki, provider, kx).unwrap();
                let client = pair.client(Resumption::disabled());
                let (client, server) = pair.handshake(&client, HandshakeKind::Full).unwrap();
                for conn in [&client, &server] {
                    assert_eq!(
                        conn.negotiated_key_exchange_group().map(|g| g.name()),
                        Some(kx.group())
                    );
                    assert_eq!(
                        conn.negotiated_cipher_suite().map(|s| s.suite()),
                        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
                    );
                }
            }
        }
    }

    #[test]
    fn a_server_from_another_ca_is_refused() {
        let pki = BenchPki::generate().unwrap();
        let other = BenchPki::generate().unwrap();
        for provider in Provider::ALL {
            let pair = Pair::with_client_roots(&pki, other.root_pem(), provider, Kx::P256).unwrap();
            let err = pair.full_handshakes(Budget::Count(1)).unwrap_err();
            assert!(
                format!("{err:#}").contains("UnknownIssuer"),
                "{provider}: {err:#}"
            );
        }
    }
}
