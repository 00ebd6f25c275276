//! Named test identities for the other crates' tests (feature `testing`).
//!
//! ```
//! use tandem_certs::testing::{TestIdentity, TestPki};
//! let pki = TestPki::new();
//! let (cert_pem, key_pem) = pki.identity(TestIdentity::Valid, "web");
//! let identity = tandem_certs::Identity::from_pem(&cert_pem, &key_pem).unwrap();
//! assert_eq!(identity.service_id().unwrap().service, "web");
//! let _roots = pki.roots();
//! ```

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::ca::{CertificateAuthority, LeafSpec, DEFAULT_LEAF_TTL};
use crate::spiffe::{ServiceId, TrustDomain};
use crate::tls::{Identity, TrustRoots};

/// The kinds of leaf a test can ask for. All are Consul-profile leaves (empty subject, critical
/// SAN, clientAuth + serverAuth) unless the name says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestIdentity {
    /// Signed by the PKI's CA for `spiffe://<td>/ns/default/dc/dc1/svc/<service>`, valid now.
    Valid,
    /// Same SPIFFE ID and trust domain, signed by a different CA (not in [`TestPki::roots`]).
    OtherCa,
    /// Expired an hour ago.
    Expired,
    /// Becomes valid in an hour.
    NotYetValid,
    /// Valid, but names the service `not-<service>`.
    WrongService,
    /// Signed by the PKI's CA, but the SPIFFE ID's trust domain is another cluster's.
    WrongTrustDomain,
    /// Signed by the PKI's CA, with a DNS SAN and no URI SAN.
    NoUriSan,
}

impl TestIdentity {
    /// Every kind, for table-driven tests.
    pub const ALL: [TestIdentity; 7] = [
        TestIdentity::Valid,
        TestIdentity::OtherCa,
        TestIdentity::Expired,
        TestIdentity::NotYetValid,
        TestIdentity::WrongService,
        TestIdentity::WrongTrustDomain,
        TestIdentity::NoUriSan,
    ];
}

/// A CA for a random trust domain and datacenter `dc1`, plus an unrelated CA of the same
/// trust domain for [`TestIdentity::OtherCa`].
#[derive(Debug)]
pub struct TestPki {
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
}

impl TestPki {
    /// The datacenter of every test identity.
    pub const DATACENTER: &'static str = "dc1";

    /// A new PKI with a random cluster id and fresh keys.
    pub fn new() -> Self {
        let cluster_id = random_uuid();
        let trust_domain =
            TrustDomain::from_cluster_id(&cluster_id).expect("a UUID makes a valid trust domain");
        let ca = CertificateAuthority::generate(&trust_domain, &cluster_id)
            .expect("generating a P-256 test CA cannot fail");
        let other_ca = CertificateAuthority::generate(&trust_domain, &cluster_id)
            .expect("generating a P-256 test CA cannot fail");
        TestPki { ca, other_ca }
    }

    /// `<random cluster id>.consul`, the trust domain of every identity but
    /// [`TestIdentity::WrongTrustDomain`].
    pub fn trust_domain(&self) -> &TrustDomain {
        self.ca.trust_domain()
    }

    /// The CA itself, e.g. to issue leaves with [`CertificateAuthority::issue_leaf`] or to
    /// [`rotate`](CertificateAuthority::rotate) it.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The root PEM of the CA.
    pub fn root_pem(&self) -> &str {
        &self.ca.root().root_cert_pem
    }

    /// Trust set holding the CA root (not the other CA's), in the PKI's trust domain.
    pub fn roots(&self) -> TrustRoots {
        TrustRoots::from_pems([self.root_pem()], self.trust_domain().clone())
            .expect("the test root is a valid certificate")
    }

    /// `spiffe://<td>/ns/default/dc/dc1/svc/<service>`
    pub fn service_id(&self, service: &str) -> ServiceId {
        ServiceId::new(self.trust_domain().clone(), Self::DATACENTER, service)
    }

    /// `(cert_pem, key_pem)` of the given kind for `service`; the key is SEC1 as from Consul.
    pub fn identity(&self, kind: TestIdentity, service: &str) -> (String, String) {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let valid_from = now - Duration::from_secs(60);
        let id = self.service_id(service);
        let (ca, uri, not_before, not_after) = match kind {
            TestIdentity::Valid => (
                &self.ca,
                Some(id.to_string()),
                valid_from,
                now + DEFAULT_LEAF_TTL,
            ),
            TestIdentity::OtherCa => (
                &self.other_ca,
                Some(id.to_string()),
                valid_from,
                now + DEFAULT_LEAF_TTL,
            ),
            TestIdentity::Expired => (
                &self.ca,
                Some(id.to_string()),
                now - DEFAULT_LEAF_TTL - hour,
                now - hour,
            ),
            TestIdentity::NotYetValid => (
                &self.ca,
                Some(id.to_string()),
                now + hour,
                now + hour + DEFAULT_LEAF_TTL,
            ),
            TestIdentity::WrongService => {
                let other = self.service_id(&format!("not-{service}"));
                (
                    &self.ca,
                    Some(other.to_string()),
                    valid_from,
                    now + DEFAULT_LEAF_TTL,
                )
            }
            TestIdentity::WrongTrustDomain => {
                let foreign: TrustDomain = "99999999-8888-7777-6666-555555555555.consul"
                    .parse()
                    .expect("a valid trust domain literal");
                let other = ServiceId::new(foreign, Self::DATACENTER, service);
                (
                    &self.ca,
                    Some(other.to_string()),
                    valid_from,
                    now + DEFAULT_LEAF_TTL,
                )
            }
            TestIdentity::NoUriSan => (&self.ca, None, valid_from, now + DEFAULT_LEAF_TTL),
        };
        let leaf = ca
            .issue(LeafSpec {
                uri,
                not_before,
                not_after,
            })
            .expect("issuing a test leaf cannot fail");
        (leaf.cert_pem, leaf.private_key_pem)
    }

    /// [`identity`](Self::identity) loaded as a TLS [`Identity`].
    pub fn tls_identity(&self, kind: TestIdentity, service: &str) -> Identity {
        let (cert, key) = self.identity(kind, service);
        Identity::from_pem(&cert, &key).expect("test identities load")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::leaf_info;
    use crate::SpiffeId;

    #[test]
    fn each_kind_is_what_its_name_says() {
        let pki = TestPki::new();
        let now = SystemTime::now();
        for kind in TestIdentity::ALL {
            let (cert, key) = pki.identity(kind, "web");
            let identity = Identity::from_pem(&cert, &key)
                .unwrap_or_else(|e| panic!("{kind:?} must load: {e}"));
            let info = leaf_info(&cert);
            match kind {
                TestIdentity::Valid | TestIdentity::OtherCa => {
                    let info = info.unwrap();
                    assert_eq!(info.spiffe, SpiffeId::Service(pki.service_id("web")));
                    assert!(info.not_before < now && now < info.not_after, "{kind:?}");
                    let signed_by_pki = info.authority_key_id.as_deref()
                        == Some(pki.ca().root().signing_key_id.as_str());
                    assert_eq!(signed_by_pki, kind == TestIdentity::Valid, "{kind:?}");
                }
                TestIdentity::Expired => assert!(info.unwrap().not_after < now),
                TestIdentity::NotYetValid => assert!(info.unwrap().not_before > now),
                TestIdentity::WrongService => {
                    assert_eq!(identity.service_id(), Some(&pki.service_id("not-web")))
                }
                TestIdentity::WrongTrustDomain => {
                    let id = identity.service_id().unwrap();
                    assert_ne!(&id.trust_domain, pki.trust_domain());
                    assert!(id.matches_path(&pki.service_id("web")));
                }
                TestIdentity::NoUriSan => assert!(identity.spiffe_id().is_none()),
            }
        }
    }

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CertificateAuthority>();
        check::<Identity>();
        check::<TrustRoots>();
        check::<TestPki>();
        check::<crate::TlsError>();
    }
}
