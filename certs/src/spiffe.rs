//! SPIFFE identities in the forms Consul Connect uses (`agent/connect/uri*.go`).
//!
//! * service: `spiffe://<td>[/ap/<partition>]/ns/<ns>/dc/<dc>/svc/<service>`
//! * client agent: `spiffe://<td>[/ap/<partition>]/agent/client/dc/<dc>/id/<node>`
//! * server agent: `spiffe://<td>/agent/server/dc/<dc>`
//! * mesh gateway: `spiffe://<td>[/ap/<partition>]/gateway/mesh/dc/<dc>`
//! * CA / signing: `spiffe://<td>`
//!
//! Like Consul, the path is matched segment by segment on its raw (percent-encoded) form and each
//! segment is percent-decoded afterwards, so `svc/we%2Fb` names the service `we/b`. Display
//! percent-encodes every segment again, so parse and display round-trip.

use std::fmt;
use std::str::FromStr;

/// The trust domain of a Consul cluster: `<cluster-uuid>.consul`, always lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain Consul derives from a cluster id: `<cluster-id>.consul`, lowercased.
    pub fn from_cluster_id(cluster_id: &str) -> Result<Self, SpiffeError> {
        format!("{cluster_id}.consul").parse()
    }

    /// The trust domain as a string slice (lowercase, no scheme).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeError;

    /// Accepts a bare host name (`1111-...-5555.consul`); upper case is folded to lower case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let valid = !lower.is_empty()
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !valid {
            return Err(SpiffeError::InvalidTrustDomain(s.to_owned()));
        }
        Ok(TrustDomain(lower))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Connect service identity: `spiffe://<td>[/ap/<partition>]/ns/<ns>/dc/<dc>/svc/<service>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceId {
    /// The URI's host: the cluster that issued the identity.
    pub trust_domain: TrustDomain,
    /// `None` when the URI has no `/ap/` segment (Consul's `default` partition).
    pub partition: Option<String>,
    /// The Consul namespace, percent-decoded (`default` in Consul CE).
    pub namespace: String,
    /// The datacenter the service is registered in, percent-decoded.
    pub datacenter: String,
    /// The service name, percent-decoded (`svc/we%2Fb` is `we/b`).
    pub service: String,
}

impl ServiceId {
    /// A service identity in namespace `default` and the default partition, as Consul CE issues.
    pub fn new(trust_domain: TrustDomain, datacenter: &str, service: &str) -> Self {
        ServiceId {
            trust_domain,
            partition: None,
            namespace: "default".to_owned(),
            datacenter: datacenter.to_owned(),
            service: service.to_owned(),
        }
    }

    /// Whether `other` names the same service, the way Consul's client side checks a server:
    /// partition (absent = `default`), namespace, datacenter and service are compared
    /// case-insensitively; the trust domain is **not** compared (the chain of trust covers it).
    pub fn matches_path(&self, other: &ServiceId) -> bool {
        let partition = |id: &ServiceId| id.partition.clone().unwrap_or_else(|| "default".into());
        partition(self).eq_ignore_ascii_case(&partition(other))
            && self.namespace.eq_ignore_ascii_case(&other.namespace)
            && self.datacenter.eq_ignore_ascii_case(&other.datacenter)
            && self.service.eq_ignore_ascii_case(&other.service)
    }

    /// The SNI Consul/Envoy use for this service:
    /// `<service>.<namespace>.<dc>.internal.<trust-domain>`, i.e.
    /// `<service>.default.<dc>.internal.<td>` in CE. For a non-default partition Consul's form
    /// `<service>.<ns>.<partition>.<dc>.internal-v1.<td>` is returned.
    pub fn sni(&self) -> String {
        match self.partition.as_deref() {
            Some(p) if !p.eq_ignore_ascii_case("default") => format!(
                "{}.{}.{}.{}.internal-v1.{}",
                self.service, self.namespace, p, self.datacenter, self.trust_domain
            ),
            _ => format!(
                "{}.{}.{}.internal.{}",
                self.service, self.namespace, self.datacenter, self.trust_domain
            ),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_root(f, &self.trust_domain, self.partition.as_deref())?;
        write!(
            f,
            "/ns/{}/dc/{}/svc/{}",
            Escaped(&self.namespace),
            Escaped(&self.datacenter),
            Escaped(&self.service)
        )
    }
}

impl FromStr for ServiceId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<SpiffeId>()? {
            SpiffeId::Service(id) => Ok(id),
            _ => Err(SpiffeError::NotAService(s.to_owned())),
        }
    }
}

/// Any SPIFFE ID Consul issues or accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SpiffeId {
    /// `spiffe://<td>[/ap/<p>]/ns/<ns>/dc/<dc>/svc/<service>`
    Service(ServiceId),
    /// Client agent: `spiffe://<td>[/ap/<p>]/agent/client/dc/<dc>/id/<node>`
    Agent {
        /// The URI's host.
        trust_domain: TrustDomain,
        /// `None` without an `/ap/` segment (the `default` partition).
        partition: Option<String>,
        /// The agent's datacenter, percent-decoded.
        datacenter: String,
        /// The agent's node ID, percent-decoded.
        node: String,
    },
    /// Server agent: `spiffe://<td>/agent/server/dc/<dc>`
    Server {
        /// The URI's host.
        trust_domain: TrustDomain,
        /// The server's datacenter, percent-decoded.
        datacenter: String,
    },
    /// Mesh gateway: `spiffe://<td>[/ap/<p>]/gateway/mesh/dc/<dc>`
    MeshGateway {
        /// The URI's host.
        trust_domain: TrustDomain,
        /// `None` without an `/ap/` segment (the `default` partition).
        partition: Option<String>,
        /// The gateway's datacenter, percent-decoded.
        datacenter: String,
    },
    /// The CA (signing) identity: `spiffe://<td>`
    Ca(TrustDomain),
}

impl SpiffeId {
    /// The trust domain (URI host) of any form.
    pub fn trust_domain(&self) -> &TrustDomain {
        match self {
            SpiffeId::Service(id) => &id.trust_domain,
            SpiffeId::Agent { trust_domain, .. }
            | SpiffeId::Server { trust_domain, .. }
            | SpiffeId::MeshGateway { trust_domain, .. }
            | SpiffeId::Ca(trust_domain) => trust_domain,
        }
    }

    /// The service identity, if this is one.
    pub fn as_service(&self) -> Option<&ServiceId> {
        match self {
            SpiffeId::Service(id) => Some(id),
            _ => None,
        }
    }
}

impl From<ServiceId> for SpiffeId {
    fn from(id: ServiceId) -> Self {
        SpiffeId::Service(id)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffeId::Service(id) => id.fmt(f),
            SpiffeId::Agent {
                trust_domain,
                partition,
                datacenter,
                node,
            } => {
                write_root(f, trust_domain, partition.as_deref())?;
                write!(
                    f,
                    "/agent/client/dc/{}/id/{}",
                    Escaped(datacenter),
                    Escaped(node)
                )
            }
            SpiffeId::Server {
                trust_domain,
                datacenter,
            } => write!(
                f,
                "spiffe://{trust_domain}/agent/server/dc/{}",
                Escaped(datacenter)
            ),
            SpiffeId::MeshGateway {
                trust_domain,
                partition,
                datacenter,
            } => {
                write_root(f, trust_domain, partition.as_deref())?;
                write!(f, "/gateway/mesh/dc/{}", Escaped(datacenter))
            }
            SpiffeId::Ca(trust_domain) => write!(f, "spiffe://{trust_domain}"),
        }
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| SpiffeError::NotAUri(s.to_owned()))?;
        if !scheme.eq_ignore_ascii_case("spiffe") {
            return Err(SpiffeError::WrongScheme(s.to_owned()));
        }
        if rest.contains(['?', '#']) {
            return Err(SpiffeError::QueryOrFragment(s.to_owned()));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let trust_domain: TrustDomain = host.parse()?;
        if path.is_empty() {
            return Ok(SpiffeId::Ca(trust_domain));
        }
        let bad_format = || SpiffeError::UnexpectedFormat(s.to_owned());
        // `path` starts with '/': the first split element is empty.
        let raw: Vec<&str> = path.split('/').skip(1).collect();
        if raw.iter().any(|segment| segment.is_empty()) {
            return Err(bad_format());
        }
        let (partition, raw) = match raw.as_slice() {
            ["ap", p, rest @ ..] => (Some(decode(s, "partition", p)?), rest),
            rest => (None, rest),
        };
        match raw {
            ["ns", ns, "dc", dc, "svc", svc] => Ok(SpiffeId::Service(ServiceId {
                trust_domain,
                partition,
                namespace: decode(s, "namespace", ns)?,
                datacenter: decode(s, "datacenter", dc)?,
                service: decode(s, "service", svc)?,
            })),
            ["agent", "client", "dc", dc, "id", node] => Ok(SpiffeId::Agent {
                trust_domain,
                partition,
                datacenter: decode(s, "datacenter", dc)?,
                node: decode(s, "node", node)?,
            }),
            ["agent", "server", "dc", dc] if partition.is_none() => Ok(SpiffeId::Server {
                trust_domain,
                datacenter: decode(s, "datacenter", dc)?,
            }),
            ["gateway", "mesh", "dc", dc] => Ok(SpiffeId::MeshGateway {
                trust_domain,
                partition,
                datacenter: decode(s, "datacenter", dc)?,
            }),
            _ => Err(bad_format()),
        }
    }
}

/// Why a string is not a SPIFFE ID Consul would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// No `scheme://` at all; carries the input.
    #[error("{0:?} is not a URI (expected spiffe://<trust-domain>/...)")]
    NotAUri(String),
    /// A URI whose scheme is not `spiffe` (compared case-insensitively); carries the input.
    #[error("SPIFFE ID must have 'spiffe' scheme: {0:?}")]
    WrongScheme(String),
    /// A `?` or `#` anywhere after the scheme; carries the input.
    #[error("SPIFFE ID {0:?} must not have a query or fragment")]
    QueryOrFragment(String),
    /// The host (or a [`TrustDomain`] parsed on its own) is empty or has a character other
    /// than letters, digits, `.`, `-`, `_`; carries the host as given.
    #[error(
        "invalid trust domain {0:?}: expected a non-empty host of letters, digits, '.', '-', '_'"
    )]
    InvalidTrustDomain(String),
    /// The path is none of the forms Consul uses (or has an empty segment); carries the input.
    #[error("SPIFFE ID is not in the expected format: {0:?}")]
    UnexpectedFormat(String),
    /// A path segment that is not `%XX`-encoded UTF-8.
    #[error("invalid {field} in SPIFFE ID {id:?}: bad percent-encoding in {segment:?}")]
    BadEncoding {
        /// The whole input.
        id: String,
        /// Which segment: `partition`, `namespace`, `datacenter`, `service` or `node`.
        field: &'static str,
        /// The segment as written, still encoded.
        segment: String,
    },
    /// A valid SPIFFE ID of another form where a service ID was required (parsing a
    /// [`ServiceId`]); carries the input.
    #[error(
        "SPIFFE ID {0:?} is not a service identity (expected .../ns/<ns>/dc/<dc>/svc/<service>)"
    )]
    NotAService(String),
}

/// `spiffe://<trust-domain>`, then `/ap/<partition>` when there is one.
fn write_root(
    f: &mut fmt::Formatter<'_>,
    trust_domain: &TrustDomain,
    partition: Option<&str>,
) -> fmt::Result {
    write!(f, "spiffe://{trust_domain}")?;
    match partition {
        Some(p) => write!(f, "/ap/{}", Escaped(p)),
        None => Ok(()),
    }
}

/// Percent-decodes one raw path segment (Go's `url.PathUnescape`); the result must be UTF-8.
fn decode(id: &str, field: &'static str, segment: &str) -> Result<String, SpiffeError> {
    let err = || SpiffeError::BadEncoding {
        id: id.to_owned(),
        field,
        segment: segment.to_owned(),
    };
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits, nothing else: `from_str_radix` alone would take "+f" too.
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .ok_or_else(err)?;
            let hex = std::str::from_utf8(hex).map_err(|_| err())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| err())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| err())
}

/// Displays a path segment percent-encoded as Go's `url.URL.EscapedPath` does, plus `/` (which
/// Go leaves alone) so that a segment containing `/` still round-trips.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            let keep = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_'
                        | b'.'
                        | b'~'
                        | b'$'
                        | b'&'
                        | b'+'
                        | b','
                        | b':'
                        | b';'
                        | b'='
                        | b'@'
                );
            if keep {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
