//! Consul's JSON bodies: only the fields the proxy reads or sends, with Consul's names.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoots {
    #[serde(default, rename = "ActiveRootID", deserialize_with = "nullable")]
    pub active_root_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub trust_domain: String,
    #[serde(default, deserialize_with = "nullable")]
    pub roots: Option<Vec<CaRoot>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoot {
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, rename = "SigningKeyID", deserialize_with = "nullable")]
    pub signing_key_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub root_cert: String,
    #[serde(default, deserialize_with = "nullable")]
    pub intermediate_certs: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub active: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeafCert {
    #[serde(default, deserialize_with = "nullable")]
    pub serial_number: String,
    #[serde(rename = "CertPEM", default, deserialize_with = "nullable")]
    pub cert_pem: String,
    #[serde(rename = "PrivateKeyPEM", default, deserialize_with = "nullable")]
    pub private_key_pem: String,
    #[serde(default, deserialize_with = "nullable")]
    pub valid_before: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub modify_index: u64,
}

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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryNode {
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    #[serde(default, deserialize_with = "nullable")]
    pub datacenter: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryService {
    #[serde(rename = "ID", default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub service: String,
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    /// Consul registers any integer port, negative ones included: only 1-65535 is dialable.
    #[serde(default, deserialize_with = "nullable")]
    pub port: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub proxy: Option<EntryProxy>,
    #[serde(default, deserialize_with = "nullable")]
    pub connect: Option<EntryConnect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryProxy {
    #[serde(default, deserialize_with = "nullable")]
    pub destination_service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryConnect {
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
    #[serde(default, rename = "ID", deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, rename = "SourceNS", deserialize_with = "nullable")]
    pub source_ns: String,
    #[serde(default, deserialize_with = "nullable")]
    pub source_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub source_partition: String,
    #[serde(default, deserialize_with = "nullable")]
    pub source_peer: String,
    #[serde(default, deserialize_with = "nullable")]
    pub source_sameness_group: String,
    #[serde(default, rename = "DestinationNS", deserialize_with = "nullable")]
    pub destination_ns: String,
    #[serde(default, deserialize_with = "nullable")]
    pub destination_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub action: String,
    #[serde(default, deserialize_with = "nullable")]
    pub permissions: Option<Vec<serde_json::Value>>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRegistration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRegistration>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyRegistration {
    pub destination_service_name: String,
    #[serde(rename = "DestinationServiceID")]
    pub destination_service_id: String,
    pub local_service_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_service_port: Option<u16>,
    pub upstreams: Vec<UpstreamRegistration>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpstreamRegistration {
    pub destination_type: String,
    pub destination_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    pub local_bind_address: String,
    pub local_bind_port: u16,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckRegistration {
    pub name: String,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_service: Option<String>,
    /// Initial status (Consul's default is critical until the first run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
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
