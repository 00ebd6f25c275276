//! Consul's JSON bodies: only the fields the proxy reads or sends, with Consul's names.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// `GET /v1/agent/connect/ca/roots`: the CA roots every mesh certificate chains to.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoots {
    /// The ID of the root that signs new leaves.
    #[serde(default, rename = "ActiveRootID", deserialize_with = "nullable")]
    pub active_root_id: String,
    /// The cluster's SPIFFE trust domain (`<uuid>.consul`).
    #[serde(default, deserialize_with = "nullable")]
    pub trust_domain: String,
    /// Every root still trusted (more than one during a rotation).
    #[serde(default, deserialize_with = "nullable")]
    pub roots: Option<Vec<CaRoot>>,
}

/// One CA root.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoot {
    /// Consul's ID of the root.
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    /// Colon-hex ID of its key: the authority key ID of the leaves it signs.
    #[serde(default, rename = "SigningKeyID", deserialize_with = "nullable")]
    pub signing_key_id: String,
    /// The root certificate, PEM.
    #[serde(default, deserialize_with = "nullable")]
    pub root_cert: String,
    /// Intermediates between the root and the leaves, PEM (external CAs).
    #[serde(default, deserialize_with = "nullable")]
    pub intermediate_certs: Option<Vec<String>>,
    /// Whether it signs new leaves.
    #[serde(default, deserialize_with = "nullable")]
    pub active: bool,
}

/// `GET /v1/agent/connect/ca/leaf/<service>`: the service's leaf certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeafCert {
    /// Colon-hex serial number.
    #[serde(default, deserialize_with = "nullable")]
    pub serial_number: String,
    /// The leaf certificate, PEM.
    #[serde(rename = "CertPEM", default, deserialize_with = "nullable")]
    pub cert_pem: String,
    /// Its private key, PEM.
    #[serde(rename = "PrivateKeyPEM", default, deserialize_with = "nullable")]
    pub private_key_pem: String,
    /// When it expires, RFC 3339.
    #[serde(default, deserialize_with = "nullable")]
    pub valid_before: Option<String>,
    /// The index the leaf was issued at.
    #[serde(default, deserialize_with = "nullable")]
    pub modify_index: u64,
}

/// One instance in a `/v1/health/connect/<service>` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// `*structs.Node` in Consul: may be null.
    #[serde(default, deserialize_with = "nullable")]
    pub node: EntryNode,
    /// `*structs.NodeService` in Consul: may be null.
    #[serde(default, deserialize_with = "nullable")]
    pub service: EntryService,
}

/// The node an instance runs on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryNode {
    /// The node's address (used when the service has none).
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    /// The node's datacenter: part of the identity its instances present.
    #[serde(default, deserialize_with = "nullable")]
    pub datacenter: String,
}

/// The instance's registration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryService {
    /// The instance's service ID.
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    /// The service name (of the sidecar, for a proxy instance).
    #[serde(default, deserialize_with = "nullable")]
    pub service: String,
    /// The instance's address; empty means the node's.
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    /// Consul registers any integer port, negative ones included: only 1-65535 is dialable.
    #[serde(default, deserialize_with = "nullable")]
    pub port: i64,
    /// Set for a `connect-proxy` instance: the service it fronts.
    #[serde(default, deserialize_with = "nullable")]
    pub proxy: Option<EntryProxy>,
    /// Set for a Connect-native instance.
    #[serde(default, deserialize_with = "nullable")]
    pub connect: Option<EntryConnect>,
    /// The instance's `Meta` (a Tandem sidecar with `--tunnel` advertises the tunnel here).
    #[serde(default, deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
}

/// The proxy part of a sidecar's registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryProxy {
    /// The service the sidecar fronts: the identity it presents.
    #[serde(default, deserialize_with = "nullable")]
    pub destination_service_name: String,
}

/// The Connect part of a registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryConnect {
    /// The app speaks mTLS itself and presents its own service's identity.
    #[serde(default, deserialize_with = "nullable")]
    pub native: bool,
}

/// `GET /v1/query/<name>/execute`: what a prepared query found.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryExecution {
    /// The service the query searched.
    #[serde(default, deserialize_with = "nullable")]
    pub service: String,
    /// The instances, as `/v1/health/connect` lists them for a query with `Connect: true`.
    #[serde(default, deserialize_with = "nullable")]
    pub nodes: Vec<ServiceEntry>,
    /// The datacenter the answer came from (another one after a failover).
    #[serde(default, deserialize_with = "nullable")]
    pub datacenter: String,
}

/// An intention as `/v1/connect/intentions/match` returns it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Intention {
    /// Consul's ID of the intention (empty for config-entry intentions).
    #[serde(default, rename = "ID", deserialize_with = "nullable")]
    pub id: String,
    /// The source namespace (`*` for any; empty means `default`).
    #[serde(default, rename = "SourceNS", deserialize_with = "nullable")]
    pub source_ns: String,
    /// The source service (`*` for any).
    #[serde(default, deserialize_with = "nullable")]
    pub source_name: String,
    /// The source admin partition (Enterprise; empty means `default`).
    #[serde(default, deserialize_with = "nullable")]
    pub source_partition: String,
    /// A peered cluster the source is in: never matches a local caller.
    #[serde(default, deserialize_with = "nullable")]
    pub source_peer: String,
    /// A sameness group the source is in: never matches a local caller.
    #[serde(default, deserialize_with = "nullable")]
    pub source_sameness_group: String,
    /// The destination namespace.
    #[serde(default, rename = "DestinationNS", deserialize_with = "nullable")]
    pub destination_ns: String,
    /// The destination service.
    #[serde(default, deserialize_with = "nullable")]
    pub destination_name: String,
    /// `allow` or `deny` for an L4 intention; empty when `permissions` is set.
    #[serde(default, deserialize_with = "nullable")]
    pub action: String,
    /// L7 permissions, evaluated per request (an L4 proxy denies them).
    #[serde(default, deserialize_with = "nullable")]
    pub permissions: Option<Vec<serde_json::Value>>,
    /// Consul's precedence: more specific intentions come first.
    #[serde(default, deserialize_with = "nullable")]
    pub precedence: i64,
}

/// `GET /v1/connect/intentions/match` answers a map from each queried name to its intentions;
/// a name with none maps to `null` in real Consul.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct IntentionMatch(pub BTreeMap<String, Option<Vec<Intention>>>);

impl IntentionMatch {
    /// The intentions matched for `name` (none if the answer lists it as `null` or not at all).
    pub fn take(&mut self, name: &str) -> Vec<Intention> {
        self.0.remove(name).flatten().unwrap_or_default()
    }
}

/// `PUT /v1/agent/service/register` body (CamelCase as Consul's Go API sends it).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// `connect-proxy` for the sidecar; none for the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The registration's ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name.
    pub name: String,
    /// The address other services reach it at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its port (the public listener's, for the sidecar).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `pod-name` and `k8s-namespace`, as consul-k8s sets them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// The sidecar's proxy configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRegistration>,
    /// The sidecar's checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRegistration>,
}

/// The `Proxy` block of a sidecar registration.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyRegistration {
    /// The service the sidecar fronts.
    pub destination_service_name: String,
    /// The ID of that service's registration.
    #[serde(rename = "DestinationServiceID")]
    pub destination_service_id: String,
    /// Where the app listens.
    pub local_service_address: String,
    /// The app's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_service_port: Option<u16>,
    /// The upstreams the sidecar serves locally.
    pub upstreams: Vec<UpstreamRegistration>,
}

/// One upstream in a sidecar registration.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpstreamRegistration {
    /// `service` or `prepared_query`.
    pub destination_type: String,
    /// The service or query name.
    pub destination_name: String,
    /// Another datacenter, if the upstream is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// The local listener's address.
    pub local_bind_address: String,
    /// The local listener's port.
    pub local_bind_port: u16,
}

/// One check registered with the sidecar.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckRegistration {
    /// The check's name.
    pub name: String,
    /// `host:port` for a TCP check.
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// How often a TCP check runs (Go duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// The service ID an alias check follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_service: Option<String>,
    /// Initial status (Consul's default is critical until the first run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `GET /v1/config/<kind>/<name>`: a `service-defaults` or `proxy-defaults` config entry,
/// only what the proxy reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigEntry {
    /// `service-defaults` or `proxy-defaults`.
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    /// The service, or `global`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// A service-defaults entry's protocol (`tcp`, `http`, `http2`, `grpc`).
    #[serde(default, deserialize_with = "nullable")]
    pub protocol: String,
    /// A proxy-defaults entry's opaque proxy configuration; its `protocol` key is the default
    /// protocol of every service.
    #[serde(default, deserialize_with = "nullable")]
    pub config: BTreeMap<String, serde_json::Value>,
}

/// Reads `null` as the type's default. Go encodes a nil slice, map or pointer as `null` (an
/// empty list of intentions, roots or checks is `null` in real Consul), so every field the
/// proxy reads accepts it; a missing field reads the same way.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Parses Consul's RFC 3339 timestamps (as in `ValidBefore`).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim()).ok()
}
