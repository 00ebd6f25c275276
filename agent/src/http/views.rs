//! The JSON shapes Consul sends, built field by field in Go struct order with Go's `omitempty`
//! rules (struct-valued fields such as `MeshGateway`, `Expose`, `Connect`, `Definition` are
//! never omitted; Go maps print with sorted keys).

use serde_json::{Map, Value};

use crate::ca::{Ca, Leaf, Root};
use crate::catalog::{Node, ServiceEntry};
use crate::checks::Check;
use crate::intentions::permissions::{HeaderPermission, Permission};
use crate::intentions::Intention;
use crate::json::go_time;
use crate::service::{Proxy, Service, Upstream};

/// The Consul version this agent reports about itself (`Config.Version`, node meta).
pub(crate) const CONSUL_VERSION: &str = "1.10.4";

/// What Consul 1.10 names the roots of its built-in CA (later versions say "Primary").
const ROOT_NAME: &str = "Consul CA Root Cert";

/// An ordered JSON object under construction.
#[derive(Default)]
pub(crate) struct Obj(Map<String, Value>);

impl Obj {
    pub(crate) fn new() -> Self {
        Obj(Map::new())
    }

    pub(crate) fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// Go's `omitempty` for strings.
    pub(crate) fn put_str(self, key: &str, value: &str) -> Self {
        if value.is_empty() {
            self
        } else {
            self.put(key, value)
        }
    }

    /// Go's `omitempty` for numbers.
    pub(crate) fn put_num(self, key: &str, value: i64) -> Self {
        if value == 0 {
            self
        } else {
            self.put(key, value)
        }
    }

    pub(crate) fn put_opt(self, key: &str, value: Option<Value>) -> Self {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    pub(crate) fn build(self) -> Value {
        Value::Object(self.0)
    }
}

/// A Go slice: `null` when empty (nil), as Consul sends a list it never allocated.
pub(crate) fn list_or_null(items: impl Iterator<Item = Value>) -> Value {
    let items: Vec<Value> = items.collect();
    if items.is_empty() {
        Value::Null
    } else {
        Value::Array(items)
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn string_map(map: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The node fields `structs.Node` and `structs.ServiceNode` start with, in the same order.
fn node_fields(obj: Obj, node: &Node) -> Obj {
    obj.put("ID", node.id.as_str())
        .put("Node", node.name.as_str())
        .put("Address", node.address.as_str())
        .put("Datacenter", node.datacenter.as_str())
        .put("TaggedAddresses", node_tagged_addresses(node))
}

/// A node's tagged addresses: the dev agent has one address for LAN and WAN alike.
fn node_tagged_addresses(node: &Node) -> Value {
    Obj::new()
        .put("lan", node.address.as_str())
        .put("lan_ipv4", node.address.as_str())
        .put("wan", node.address.as_str())
        .put("wan_ipv4", node.address.as_str())
        .build()
}

/// The node meta Consul sets on every agent's node.
fn node_meta() -> Value {
    Obj::new().put("consul-network-segment", "").build()
}

/// A service's `Weights`; `serde_json` cannot fail on this plain struct.
fn weights(service: &Service) -> Value {
    serde_json::to_value(service.weights).unwrap_or(Value::Null)
}

fn mesh_gateway(mode: &str) -> Value {
    Obj::new().put_str("Mode", mode).build()
}

/// `structs.Node`.
pub(crate) fn node(node: &Node) -> Value {
    node_fields(Obj::new(), node)
        .put("Meta", node_meta())
        .put("CreateIndex", node.create_index)
        .put("ModifyIndex", node.modify_index)
        .build()
}

fn tagged_addresses(service: &Service) -> Option<Value> {
    if service.tagged_addresses.is_empty() {
        return None;
    }
    Some(Value::Object(
        service
            .tagged_addresses
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Obj::new()
                        .put("Address", v.address.as_str())
                        .put("Port", v.port)
                        .build(),
                )
            })
            .collect(),
    ))
}

/// `structs.ConnectProxyConfig` (its custom MarshalJSON order).
pub(crate) fn proxy(proxy: &Proxy) -> Value {
    let obj = Obj::new().put_opt("TransparentProxy", proxy.transparent_proxy.clone());
    let obj = local_service(obj, proxy).put("Mode", proxy.mode.as_str());
    proxy_tail(obj, proxy, upstream)
}

/// `api.AgentServiceConnectProxyConfig`.
fn api_proxy(proxy: &Proxy) -> Value {
    let obj = local_service(Obj::new(), proxy)
        .put_str("Mode", &proxy.mode)
        .put_opt("TransparentProxy", proxy.transparent_proxy.clone());
    proxy_tail(obj, proxy, api_upstream)
}

/// The proxy fields both proxy views start with, in the same order.
fn local_service(obj: Obj, proxy: &Proxy) -> Obj {
    obj.put_str("DestinationServiceName", &proxy.destination_service_name)
        .put_str("DestinationServiceID", &proxy.destination_service_id)
        .put_str("LocalServiceAddress", &proxy.local_service_address)
        .put_num("LocalServicePort", proxy.local_service_port)
        .put_str("LocalServiceSocketPath", &proxy.local_service_socket_path)
}

/// The proxy fields both proxy views end with, upstreams in the view's own shape.
fn proxy_tail(obj: Obj, proxy: &Proxy, upstream_view: fn(&Upstream) -> Value) -> Value {
    let upstreams = (!proxy.upstreams.is_empty())
        .then(|| Value::Array(proxy.upstreams.iter().map(upstream_view).collect()));
    obj.put_opt("Config", proxy.config.clone())
        .put_opt("Upstreams", upstreams)
        .put("MeshGateway", mesh_gateway(&proxy.mesh_gateway_mode))
        .put(
            "Expose",
            proxy.expose.clone().unwrap_or_else(|| Obj::new().build()),
        )
        .build()
}

/// `structs.Upstream`.
pub(crate) fn upstream(u: &Upstream) -> Value {
    let obj = Obj::new()
        .put("DestinationType", u.destination_type.as_str())
        .put_str("DestinationNamespace", &u.destination_namespace)
        .put_str("DestinationPartition", &u.destination_partition)
        .put_str("DestinationPeer", &u.destination_peer)
        .put("DestinationName", u.destination_name.as_str())
        .put("Datacenter", u.datacenter.as_str());
    local_bind(obj, u)
}

/// `api.Upstream` (what the agent endpoints return): other omitempty rules and order in front.
fn api_upstream(u: &Upstream) -> Value {
    let obj = Obj::new()
        .put_str("DestinationType", &u.destination_type)
        .put_str("DestinationPartition", &u.destination_partition)
        .put_str("DestinationNamespace", &u.destination_namespace)
        .put_str("DestinationPeer", &u.destination_peer)
        .put("DestinationName", u.destination_name.as_str())
        .put_str("Datacenter", &u.datacenter);
    local_bind(obj, u)
}

/// The upstream fields both upstream views end with, in the same order.
fn local_bind(obj: Obj, u: &Upstream) -> Value {
    obj.put_str("LocalBindAddress", &u.local_bind_address)
        .put_num("LocalBindPort", u.local_bind_port)
        .put_str("LocalBindSocketPath", &u.local_bind_socket_path)
        .put_str("LocalBindSocketMode", &u.local_bind_socket_mode)
        .put_opt("Config", u.config.clone())
        .put("MeshGateway", mesh_gateway(&u.mesh_gateway_mode))
        .put_opt(
            "CentrallyConfigured",
            u.centrally_configured.then_some(Value::Bool(true)),
        )
        .build()
}

fn connect(service: &Service) -> Value {
    if service.native {
        Obj::new().put("Native", true).build()
    } else {
        Obj::new().build()
    }
}

/// `structs.NodeService` as the health endpoints send it (nil tags normalised to `[]`).
pub(crate) fn node_service(entry: &ServiceEntry) -> Value {
    let tags = strings(entry.service.tags.as_deref().unwrap_or_default());
    node_service_with_tags(entry, tags)
}

fn node_service_with_tags(entry: &ServiceEntry, tags: Value) -> Value {
    let s = &entry.service;
    Obj::new()
        .put_str("Kind", &s.kind)
        .put("ID", s.id.as_str())
        .put("Service", s.name.as_str())
        .put("Tags", tags)
        .put("Address", s.address.as_str())
        .put_opt("TaggedAddresses", tagged_addresses(s))
        .put("Meta", s.meta.as_ref().map_or(Value::Null, string_map))
        .put_num("Port", s.port)
        .put_str("SocketPath", &s.socket_path)
        .put("Weights", weights(s))
        .put("EnableTagOverride", s.enable_tag_override)
        .put("Proxy", proxy(&s.proxy))
        .put("Connect", connect(s))
        .put("CreateIndex", entry.create_index)
        .put("ModifyIndex", entry.modify_index)
        .build()
}

/// `api.AgentService` (`/v1/agent/services`, `/v1/agent/service/:id`).
pub(crate) fn agent_service(
    entry: &ServiceEntry,
    datacenter: &str,
    content_hash: Option<&str>,
) -> Value {
    let s = &entry.service;
    let mut obj = Obj::new()
        .put_str("Kind", &s.kind)
        .put("ID", s.id.as_str())
        .put("Service", s.name.as_str())
        .put("Tags", strings(s.tags.as_deref().unwrap_or_default()))
        .put(
            "Meta",
            s.meta
                .as_ref()
                .map_or_else(|| Obj::new().build(), string_map),
        )
        .put("Port", s.port)
        .put("Address", s.address.as_str())
        .put_str("SocketPath", &s.socket_path)
        .put_opt("TaggedAddresses", tagged_addresses(s))
        .put("Weights", weights(s))
        .put("EnableTagOverride", s.enable_tag_override);
    if let Some(hash) = content_hash {
        obj = obj.put("ContentHash", hash);
    }
    if s.is_proxy() {
        obj = obj.put("Proxy", api_proxy(&s.proxy));
    }
    if s.native {
        obj = obj.put("Connect", connect(s));
    }
    obj.put("Datacenter", datacenter).build()
}

/// `structs.HealthCheck` (nil service tags normalised to `[]`, as the health endpoints do).
pub(crate) fn health_check(check: &Check, node_name: &str) -> Value {
    health_check_with_tags(check, node_name, strings(&check.service_tags))
}

fn health_check_with_tags(check: &Check, node_name: &str, service_tags: Value) -> Value {
    Obj::new()
        .put("Node", node_name)
        .put("CheckID", check.id.as_str())
        .put("Name", check.name.as_str())
        .put("Status", check.status.as_str())
        .put("Notes", check.notes.as_str())
        .put("Output", check.output.as_str())
        .put("ServiceID", check.service_id.as_str())
        .put("ServiceName", check.service_name.as_str())
        .put("ServiceTags", service_tags)
        .put("Type", check.type_name())
        .put("Interval", check.interval.as_str())
        .put("Timeout", check.timeout.as_str())
        .put("ExposedPort", 0)
        .put("Definition", Obj::new().build())
        .put("CreateIndex", check.create_index)
        .put("ModifyIndex", check.modify_index)
        .build()
}

/// `structs.CheckServiceNode`.
pub(crate) fn check_service_node(
    node_value: &Value,
    entry: &ServiceEntry,
    checks: Vec<Value>,
) -> Value {
    Obj::new()
        .put("Node", node_value.clone())
        .put("Service", node_service(entry))
        .put("Checks", Value::Array(checks))
        .build()
}

/// `structs.CheckServiceNode` as the state store holds it, which is what a prepared query
/// execution sends: tags never given stay `null` (`Tags`, and `ServiceTags` of the node's
/// checks and of a service without tags), unlike on the health endpoints.
pub(crate) fn stored_check_service_node(
    node: &Node,
    entry: &ServiceEntry,
    checks: &[&Check],
) -> Value {
    let tags = entry.service.tags.as_deref().map_or(Value::Null, strings);
    let checks = checks.iter().map(|c| {
        let untagged = c.service_id.is_empty() || entry.service.tags.is_none();
        let service_tags = if c.service_tags.is_empty() && untagged {
            Value::Null
        } else {
            strings(&c.service_tags)
        };
        health_check_with_tags(c, &node.name, service_tags)
    });
    Obj::new()
        .put("Node", self::node(node))
        .put("Service", node_service_with_tags(entry, tags))
        .put("Checks", Value::Array(checks.collect()))
        .build()
}

/// `structs.ServiceNode` (`/v1/catalog/service/:name`).
pub(crate) fn service_node(node: &Node, entry: &ServiceEntry) -> Value {
    let s = &entry.service;
    node_fields(Obj::new(), node)
        .put("NodeMeta", node_meta())
        .put("ServiceKind", s.kind.as_str())
        .put("ServiceID", s.id.as_str())
        .put("ServiceName", s.name.as_str())
        .put(
            "ServiceTags",
            strings(s.tags.as_deref().unwrap_or_default()),
        )
        .put("ServiceAddress", s.address.as_str())
        .put_opt("ServiceTaggedAddresses", tagged_addresses(s))
        .put("ServiceWeights", weights(s))
        // The catalog endpoints turn a nil ServiceMeta into `{}` (health ones keep `null`).
        .put(
            "ServiceMeta",
            s.meta
                .as_ref()
                .map_or_else(|| Obj::new().build(), string_map),
        )
        .put("ServicePort", s.port)
        .put("ServiceSocketPath", s.socket_path.as_str())
        .put("ServiceEnableTagOverride", s.enable_tag_override)
        .put("ServiceProxy", proxy(&s.proxy))
        .put("ServiceConnect", connect(s))
        .put("CreateIndex", entry.create_index)
        .put("ModifyIndex", entry.modify_index)
        .build()
}

/// `structs.Intention` with its custom MarshalJSON (timestamps first, only when set).
pub(crate) fn intention(i: &Intention) -> Value {
    let permissions = i.is_l7().then(|| permissions(&i.permissions));
    let meta = (!i.meta.is_empty()).then(|| string_map(&i.meta));
    Obj::new()
        .put_opt("CreatedAt", i.created_at.map(|t| Value::String(go_time(t))))
        .put_opt("UpdatedAt", i.updated_at.map(|t| Value::String(go_time(t))))
        .put_str("ID", &i.id)
        .put_str("Description", &i.description)
        .put("SourceNS", "default")
        .put("SourceName", i.source_name.as_str())
        .put("DestinationNS", "default")
        .put("DestinationName", i.destination_name.as_str())
        .put("SourceType", i.source_type.as_str())
        .put_str("Action", &i.action)
        .put_opt("Permissions", permissions)
        .put_opt("Meta", meta)
        .put("Precedence", i.precedence)
        .put_opt("Hash", i.hash.clone().map(Value::String))
        .put("CreateIndex", i.create_index)
        .put("ModifyIndex", i.modify_index)
        .build()
}

fn root(ca: &Ca, r: &Root) -> Value {
    let info = r.info();
    Obj::new()
        .put("ID", info.id.as_str())
        .put("Name", ROOT_NAME)
        .put("SerialNumber", info.serial_number)
        .put("SigningKeyID", info.signing_key_id.as_str())
        .put("ExternalTrustDomain", ca.cluster_id())
        .put("NotBefore", go_time(info.not_before))
        .put("NotAfter", go_time(info.not_after))
        .put("RootCert", info.root_cert_pem.as_str())
        .put("IntermediateCerts", Value::Null)
        .put("Active", r.active)
        .put("PrivateKeyType", "ec")
        .put("PrivateKeyBits", 256)
        .put("CreateIndex", r.create_index)
        .put("ModifyIndex", r.modify_index)
        .build()
}

/// `structs.IndexedCARoots`.
pub(crate) fn roots(ca: &Ca) -> Value {
    Obj::new()
        .put("ActiveRootID", ca.active_root().info().id.as_str())
        .put("TrustDomain", ca.trust_domain().as_str())
        .put(
            "Roots",
            Value::Array(ca.roots().into_iter().map(|r| root(ca, r)).collect()),
        )
        .build()
}

/// `structs.IssuedCert`.
pub(crate) fn leaf(leaf: &Leaf) -> Value {
    Obj::new()
        .put("SerialNumber", leaf.issued.serial_number.as_str())
        .put("CertPEM", leaf.issued.cert_pem.as_str())
        .put("PrivateKeyPEM", leaf.issued.private_key_pem.as_str())
        .put("Service", leaf.service.as_str())
        .put("ServiceURI", leaf.service_uri.as_str())
        .put("ValidAfter", go_time(leaf.issued.valid_after))
        .put("ValidBefore", go_time(leaf.issued.valid_before))
        .put("CreateIndex", leaf.create_index)
        .put("ModifyIndex", leaf.modify_index)
        .build()
}

/// `structs.CAConfiguration`.
pub(crate) fn ca_configuration(ca: &Ca) -> Value {
    let (create, modify) = ca.config_indexes();
    Obj::new()
        .put("Provider", "consul")
        .put("Config", ca.config_map())
        .put("State", Value::Null)
        .put("ForceWithoutCrossSigning", false)
        .put("CreateIndex", create)
        .put("ModifyIndex", modify)
        .build()
}

/// `[]*structs.IntentionPermission` as Consul sends it.
pub(crate) fn permissions(permissions: &[Permission]) -> Value {
    Value::Array(permissions.iter().map(permission_json).collect())
}

fn permission_json(permission: &Permission) -> Value {
    let http = permission.http.as_ref().map(|http| {
        let headers = (!http.header.is_empty())
            .then(|| Value::Array(http.header.iter().map(header_json).collect()));
        let methods = (!http.methods.is_empty())
            .then(|| Value::Array(http.methods.iter().cloned().map(Value::String).collect()));
        Obj::new()
            .put_str("PathExact", &http.path_exact)
            .put_str("PathPrefix", &http.path_prefix)
            .put_str("PathRegex", &http.path_regex)
            .put_opt("Header", headers)
            .put_opt("Methods", methods)
            .build()
    });
    Obj::new()
        .put("Action", permission.action.as_str())
        .put_opt("HTTP", http)
        .build()
}

fn header_json(header: &HeaderPermission) -> Value {
    let flag = |on: bool| on.then_some(Value::Bool(true));
    Obj::new()
        .put("Name", header.name.as_str())
        .put_opt("Present", flag(header.present))
        .put_str("Exact", &header.exact)
        .put_str("Prefix", &header.prefix)
        .put_str("Suffix", &header.suffix)
        .put_str("Regex", &header.regex)
        .put_opt("Invert", flag(header.invert))
        .build()
}
