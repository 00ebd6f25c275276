//! Consul's JSON bodies: only the fields the proxy reads or sends, with Consul's names.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSelf {
    pub config: AgentSelfConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSelfConfig {
    pub datacenter: String,
    #[serde(default)]
    pub node_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoots {
    #[serde(default, rename = "ActiveRootID")]
    pub active_root_id: String,
    #[serde(default)]
    pub trust_domain: String,
    #[serde(default)]
    pub roots: Option<Vec<CaRoot>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoot {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default, rename = "SigningKeyID")]
    pub signing_key_id: String,
    #[serde(default)]
    pub root_cert: String,
    #[serde(default)]
    pub intermediate_certs: Option<Vec<String>>,
    #[serde(default)]
    pub active: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeafCert {
    #[serde(default)]
    pub serial_number: String,
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    #[serde(rename = "PrivateKeyPEM")]
    pub private_key_pem: String,
    #[serde(default)]
    pub valid_before: Option<String>,
    #[serde(default)]
    pub modify_index: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: EntryNode,
    pub service: EntryService,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryNode {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub datacenter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryService {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub proxy: Option<EntryProxy>,
    #[serde(default)]
    pub connect: Option<EntryConnect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryProxy {
    #[serde(default)]
    pub destination_service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntryConnect {
    #[serde(default)]
    pub native: bool,
}

/// An intention as `/v1/connect/intentions/match` returns it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Intention {
    #[serde(default, rename = "ID")]
    pub id: String,
    #[serde(default, rename = "SourceNS")]
    pub source_ns: String,
    #[serde(default)]
    pub source_name: String,
    #[serde(default)]
    pub source_partition: String,
    #[serde(default)]
    pub source_peer: String,
    #[serde(default)]
    pub source_sameness_group: String,
    #[serde(default, rename = "DestinationNS")]
    pub destination_ns: String,
    #[serde(default)]
    pub destination_name: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub permissions: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub precedence: i64,
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

/// Parses Consul's RFC 3339 timestamps (as in `ValidBefore`).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim()).ok()
}
