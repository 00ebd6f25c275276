//! Certificates for the HAProxy pair, from `tandem-certs`' CA: exactly what Consul's built-in CA
//! issues (an EC P-256 root with URI SAN `spiffe://<trust-domain>`, leaves with the service's
//! SPIFFE ID, clientAuth + serverAuth), so both pairs do the same mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tandem_certs::{CertificateAuthority, ServiceId, TrustDomain};

pub const CLUSTER_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const DATACENTER: &str = "dc1";
const LEAF_TTL: Duration = Duration::from_secs(72 * 3600);

/// A root CA and the leaves issued from it.
pub struct BenchPki {
    trust_domain: TrustDomain,
    ca: CertificateAuthority,
}

/// One leaf: certificate and SEC1 key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl BenchPki {
    pub fn generate() -> anyhow::Result<Self> {
        let trust_domain = TrustDomain::from_cluster_id(CLUSTER_ID)?;
        let ca = CertificateAuthority::generate(&trust_domain, CLUSTER_ID)?;
        Ok(Self { trust_domain, ca })
    }

    pub fn root_pem(&self) -> &str {
        &self.ca.root().root_cert_pem
    }

    /// A leaf for `service` in the default namespace of [`DATACENTER`].
    pub fn leaf(&self, service: &str) -> anyhow::Result<Leaf> {
        let id = ServiceId::new(self.trust_domain.clone(), DATACENTER, service);
        let leaf = self
            .ca
            .issue_leaf(&id, LEAF_TTL)
            .with_context(|| format!("issuing a leaf for {id}"))?;
        Ok(Leaf {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.private_key_pem,
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
    fn leaves_carry_the_spiffe_id() {
        let pki = BenchPki::generate().unwrap();
        let leaf = pki.leaf("echo").unwrap();
        assert!(pki.root_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("EC PRIVATE KEY"));
        let info = tandem_certs::leaf_info(&leaf.cert_pem).unwrap();
        assert_eq!(
            info.spiffe.to_string(),
            format!("spiffe://{CLUSTER_ID}.consul/ns/default/dc/dc1/svc/echo")
        );
    }
}
