//! Certificates for the HAProxy pair, issued the way Consul's built-in CA issues them: an EC
//! P-256 root whose URI SAN is `spiffe://<trust-domain>`, and leaves with the service's SPIFFE
//! ID as URI SAN, usable as both TLS server and client.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

pub const TRUST_DOMAIN: &str = "11111111-2222-3333-4444-555555555555.consul";
pub const DATACENTER: &str = "dc1";

/// A root CA and the leaves issued from it.
pub struct BenchPki {
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// One leaf: certificate and PKCS#8 key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl BenchPki {
    pub fn generate() -> anyhow::Result<Self> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Tandem Bench CA 1");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{TRUST_DOMAIN}")
                .try_into()
                .context("trust domain URI")?,
        )];
        let root = params.self_signed(&key)?;
        Ok(Self {
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// A leaf for `service` in the default namespace of [`DATACENTER`].
    pub fn leaf(&self, service: &str) -> anyhow::Result<Leaf> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, service);
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{TRUST_DOMAIN}/ns/default/dc/{DATACENTER}/svc/{service}")
                .try_into()
                .with_context(|| format!("SPIFFE URI for service {service:?}"))?,
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_carry_the_spiffe_id_and_chain_to_the_root() {
        let pki = BenchPki::generate().unwrap();
        let leaf = pki.leaf("echo").unwrap();
        assert!(pki.root_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        let der = rustls_pem_der(&leaf.cert_pem);
        let text = String::from_utf8_lossy(&der);
        assert!(text.contains(&format!(
            "spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/echo"
        )));
    }

    fn rustls_pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&body)
    }

    // A tiny decoder so the test needs no extra dependency.
    fn base64_decode(s: &str) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }
}
