//! Tandem's identity library: SPIFFE IDs as Consul Connect uses them, a CA that issues what
//! Consul's built-in CA issues, and the rustls configurations (the one crypto-policy module)
//! the proxy uses for mutual TLS.
//!
//! * [`spiffe`]: [`TrustDomain`], [`ServiceId`], [`SpiffeId`] parse/display.
//! * [`ca`]: [`CertificateAuthority`] (roots and leaves, Consul's profile).
//! * [`tls`]: [`Identity`], [`TrustRoots`], [`server_config`], [`client_config`],
//!   [`peer_service_id`], [`leaf_info`].
//! * `testing` (feature `testing`): `testing::TestPki` and named `testing::TestIdentity`s.
//!
//! The public API in one page is `certs/README.md`.

pub mod ca;
pub mod spiffe;
pub mod tls;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use ca::{CaError, CertificateAuthority, IssuedLeaf, RootInfo};
pub use spiffe::{ServiceId, SpiffeError, SpiffeId, TrustDomain};
pub use tls::{
    client_config, crypto_provider, leaf_info, peer_service_id, server_config, server_name,
    Identity, LeafInfo, TlsError, TrustRoots,
};

/// rustls, as the configs returned here use it (ring provider).
pub use rustls;
