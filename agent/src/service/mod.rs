//! The service model and how a `PUT /v1/agent/service/register` body becomes services and checks;
//! [`sidecar`] has the `Connect.SidecarService` expansion Consul does in
//! `agent/sidecar_service.go`.

mod sidecar;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use crate::checks::{CheckDefinition, CHECK_TYPE_FIELDS};
use crate::json::{DecodeError, Fields};

pub(crate) use sidecar::{default_sidecar_checks, SidecarRequest, SIDECAR_PORTS};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Service {
    /// `""` for a plain service, `connect-proxy`, gateways...
    pub kind: String,
    pub id: String,
    pub name: String,
    pub tags: Option<Vec<String>>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: Option<BTreeMap<String, String>>,
    pub port: i64,
    pub socket_path: String,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub proxy: Proxy,
    pub native: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceAddress {
    pub address: String,
    pub port: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Weights {
    pub passing: i64,
    pub warning: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// `structs.ConnectProxyConfig`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Proxy {
    pub destination_service_name: String,
    pub destination_service_id: String,
    pub local_service_address: String,
    pub local_service_port: i64,
    pub local_service_socket_path: String,
    pub mode: String,
    pub transparent_proxy: Option<Value>,
    pub config: Option<Value>,
    pub upstreams: Vec<Upstream>,
    pub mesh_gateway_mode: String,
    pub expose: Option<Value>,
}

/// `structs.Upstream`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Upstream {
    pub destination_type: String,
    pub destination_namespace: String,
    pub destination_partition: String,
    pub destination_peer: String,
    pub destination_name: String,
    pub datacenter: String,
    pub local_bind_address: String,
    pub local_bind_port: i64,
    pub local_bind_socket_path: String,
    pub local_bind_socket_mode: String,
    pub config: Option<Value>,
    pub mesh_gateway_mode: String,
    pub centrally_configured: bool,
}

impl Service {
    pub(crate) fn is_proxy(&self) -> bool {
        self.kind == "connect-proxy"
    }
}

/// A decoded registration: the service, its checks and an optional sidecar to register with it.
#[derive(Clone, Debug)]
pub(crate) struct Registration {
    pub service: Service,
    pub checks: Vec<CheckDefinition>,
    pub sidecar: Option<SidecarRequest>,
}

/// Why a registration was refused: the status code and Consul's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RegisterError {
    pub status: u16,
    pub message: String,
}

impl RegisterError {
    fn bad(message: impl Into<String>) -> Self {
        RegisterError {
            status: 400,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for RegisterError {
    fn from(e: DecodeError) -> Self {
        RegisterError::bad(format!("Request decode failed: {e}"))
    }
}

/// Decodes and validates a `ServiceDefinition` body, expanding `Connect.SidecarService`.
pub(crate) fn decode_registration(body: &Value) -> Result<Registration, RegisterError> {
    let fields = Fields::new(body, "ServiceDefinition")?;
    let (service, checks, sidecar_fields) = decode_definition(&fields)?;
    if service.name.is_empty() {
        return Err(RegisterError::bad("Missing service name"));
    }
    validate_service(&service)?;
    validate_checks(&checks, "Invalid check")?;
    let sidecar = match sidecar_fields {
        None => None,
        Some(sidecar_fields) => {
            let sidecar = sidecar::expand_sidecar(&service, &sidecar_fields)?;
            validate_checks(&sidecar.checks, "Invalid check in sidecar_service")?;
            // The port is assigned at registration; validate as if it were.
            let mut probe = sidecar.service.clone();
            if probe.port == 0 {
                probe.port = i64::from(*SIDECAR_PORTS.start());
            }
            validate_service(&probe)?;
            Some(sidecar)
        }
    };
    Ok(Registration {
        service,
        checks,
        sidecar,
    })
}

/// Check validation as the register handler does it; `context` prefixes the reason
/// (`Invalid check` or `Invalid check in sidecar_service`).
fn validate_checks(checks: &[CheckDefinition], context: &str) -> Result<(), RegisterError> {
    for check in checks {
        check
            .validate()
            .map_err(|e| RegisterError::bad(format!("{context}: {e}")))?;
    }
    if checks.iter().any(|c| !c.status_is_valid()) {
        return Err(RegisterError::bad(
            "Status for checks must 'passing', 'warning', 'critical'",
        ));
    }
    Ok(())
}

/// The keys Consul 1.10 accepts in a `ServiceDefinition` (Go field names, matched
/// case-insensitively, and the snake_case aliases its decoder knows).
const SERVICE_FIELDS: &[&str] = &[
    "Kind",
    "ID",
    "Name",
    "Tags",
    "Address",
    "TaggedAddresses",
    "tagged_addresses",
    "Meta",
    "Port",
    "SocketPath",
    "Check",
    "Checks",
    "Weights",
    "Token",
    "EnableTagOverride",
    "enable_tag_override",
    "Proxy",
    "Connect",
];
/// `structs.ConnectProxyConfig`.
const PROXY_FIELDS: &[&str] = &[
    "DestinationServiceName",
    "destination_service_name",
    "DestinationServiceID",
    "destination_service_id",
    "LocalServiceAddress",
    "local_service_address",
    "LocalServicePort",
    "local_service_port",
    "LocalServiceSocketPath",
    "local_service_socket_path",
    "Mode",
    "TransparentProxy",
    "transparent_proxy",
    "Config",
    "Upstreams",
    "MeshGateway",
    "mesh_gateway",
    "Expose",
];
/// `structs.Upstream`.
const UPSTREAM_FIELDS: &[&str] = &[
    "DestinationType",
    "destination_type",
    "DestinationNamespace",
    "destination_namespace",
    "DestinationName",
    "destination_name",
    "Datacenter",
    "LocalBindAddress",
    "local_bind_address",
    "LocalBindPort",
    "local_bind_port",
    "LocalBindSocketPath",
    "local_bind_socket_path",
    "LocalBindSocketMode",
    "local_bind_socket_mode",
    "Config",
    "MeshGateway",
    "mesh_gateway",
    "CentrallyConfigured",
];
/// `structs.ExposeConfig` and `structs.ExposePath`.
const EXPOSE_FIELDS: &[&str] = &["Checks", "Paths"];
const EXPOSE_PATH_FIELDS: &[&str] = &[
    "ListenerPort",
    "listener_port",
    "Path",
    "LocalPathPort",
    "local_path_port",
    "Protocol",
    "ParsedFromCheck",
];

type Decoded<'a> = (Service, Vec<CheckDefinition>, Option<Fields<'a>>);

fn decode_definition<'a>(fields: &Fields<'a>) -> Result<Decoded<'a>, RegisterError> {
    fields.refuse_unknown(SERVICE_FIELDS)?;
    let name = fields.string_or_default("Name")?;
    let id = fields
        .string("ID")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let port = fields.int("Port")?.unwrap_or(0);
    let address = fields.string_or_default("Address")?;
    let mut tagged_addresses = BTreeMap::new();
    if let Some(tagged) = fields.object("TaggedAddresses", "map[string]ServiceAddress")? {
        if let Some(Value::Object(map)) = fields.raw("TaggedAddresses") {
            for key in map.keys() {
                if let Some(entry) = tagged.object(key, "ServiceAddress")? {
                    entry.refuse_unknown(&["Address", "Port"])?;
                    tagged_addresses.insert(
                        key.clone(),
                        ServiceAddress {
                            address: entry.string_or_default("Address")?,
                            port: entry.int("Port")?.unwrap_or(0),
                        },
                    );
                }
            }
        }
    }
    let weights = match fields.object("Weights", "Weights")? {
        None => Weights::default(),
        Some(w) => {
            w.refuse_unknown(&["Passing", "Warning"])?;
            Weights {
                passing: w.int("Passing")?.unwrap_or(0),
                warning: w.int("Warning")?.unwrap_or(0),
            }
        }
    };
    let proxy = match fields.object("Proxy", "ConnectProxyConfig")? {
        None => Proxy::default(),
        Some(p) => decode_proxy(&p)?,
    };
    let (native, sidecar) = match fields.object("Connect", "ServiceConnect")? {
        None => (false, None),
        Some(connect) => {
            let sidecar = match connect.raw("SidecarService") {
                None => None,
                Some(_) => connect.object("SidecarService", "ServiceDefinition")?,
            };
            (connect.boolean("Native")?, sidecar)
        }
    };
    let mut checks = Vec::new();
    if let Some(check) = fields.object("Check", "CheckType")? {
        check.refuse_unknown(CHECK_TYPE_FIELDS)?;
        checks.push(CheckDefinition::decode(&check)?);
    }
    for check in fields.objects("Checks", "CheckType")? {
        check.refuse_unknown(CHECK_TYPE_FIELDS)?;
        checks.push(CheckDefinition::decode(&check)?);
    }
    let service = Service {
        kind: fields.string_or_default("Kind")?,
        id,
        name,
        tags: fields.strings("Tags")?,
        address,
        tagged_addresses,
        meta: fields.string_map("Meta")?,
        port,
        socket_path: fields.string_or_default("SocketPath")?,
        weights,
        enable_tag_override: fields.boolean("EnableTagOverride")?,
        proxy,
        native,
    };
    Ok((service, checks, sidecar))
}

fn decode_proxy(p: &Fields<'_>) -> Result<Proxy, DecodeError> {
    p.refuse_unknown(PROXY_FIELDS)?;
    if let Some(expose) = p.object("Expose", "ExposeConfig")? {
        expose.refuse_unknown(EXPOSE_FIELDS)?;
        for path in expose.objects("Paths", "ExposePath")? {
            path.refuse_unknown(EXPOSE_PATH_FIELDS)?;
        }
    }
    if let Some(tproxy) = p.object("TransparentProxy", "TransparentProxyConfig")? {
        tproxy.refuse_unknown(&["OutboundListenerPort", "DialedDirectly"])?;
    }
    let upstreams = p
        .objects("Upstreams", "Upstream")?
        .iter()
        .map(decode_upstream)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Proxy {
        destination_service_name: p.string_or_default("DestinationServiceName")?,
        destination_service_id: p.string_or_default("DestinationServiceID")?,
        local_service_address: p.string_or_default("LocalServiceAddress")?,
        local_service_port: p.int("LocalServicePort")?.unwrap_or(0),
        local_service_socket_path: p.string_or_default("LocalServiceSocketPath")?,
        mode: p.string_or_default("Mode")?,
        transparent_proxy: p.opaque_object("TransparentProxy")?,
        config: p.opaque_object("Config")?,
        upstreams,
        mesh_gateway_mode: mesh_gateway_mode(p)?,
        expose: p.opaque_object("Expose")?,
    })
}

fn decode_upstream(u: &Fields<'_>) -> Result<Upstream, DecodeError> {
    u.refuse_unknown(UPSTREAM_FIELDS)?;
    let destination_type = u
        .string("DestinationType")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "service".to_string());
    Ok(Upstream {
        destination_type,
        destination_namespace: u.string_or_default("DestinationNamespace")?,
        destination_partition: u.string_or_default("DestinationPartition")?,
        destination_peer: u.string_or_default("DestinationPeer")?,
        destination_name: u.string_or_default("DestinationName")?,
        datacenter: u.string_or_default("Datacenter")?,
        local_bind_address: u.string_or_default("LocalBindAddress")?,
        local_bind_port: u.int("LocalBindPort")?.unwrap_or(0),
        local_bind_socket_path: u.string_or_default("LocalBindSocketPath")?,
        local_bind_socket_mode: u.string_or_default("LocalBindSocketMode")?,
        config: u.opaque_object("Config")?,
        mesh_gateway_mode: mesh_gateway_mode(u)?,
        centrally_configured: u.boolean("CentrallyConfigured")?,
    })
}

fn mesh_gateway_mode(fields: &Fields<'_>) -> Result<String, DecodeError> {
    match fields.object("MeshGateway", "MeshGatewayConfig")? {
        None => Ok(String::new()),
        Some(m) => {
            m.refuse_unknown(&["Mode"])?;
            m.string_or_default("Mode")
        }
    }
}

/// `structs.NodeService.Validate` for plain services and connect proxies; errors in
/// go-multierror's format.
fn validate_service(service: &Service) -> Result<(), RegisterError> {
    let mut problems = Vec::new();
    match service.kind.as_str() {
        "" => {}
        "connect-proxy" => {
            let proxy = &service.proxy;
            if service.port == 0 && service.socket_path.is_empty() {
                problems.push("Port or SocketPath must be set for a connect-proxy".to_string());
            }
            if proxy.destination_service_name.trim().is_empty() {
                problems.push(
                    "Proxy.DestinationServiceName must be non-empty for Connect proxy services"
                        .to_string(),
                );
            }
            if proxy.destination_service_name == "*" {
                problems.push(
                    "Proxy.DestinationServiceName must not be a wildcard for Connect proxy services"
                        .to_string(),
                );
            }
            if service.native {
                problems.push(
                    "A Proxy cannot also be Connect Native, only typical services".to_string(),
                );
            }
            let mut keys = Vec::new();
            let mut binds = Vec::new();
            for upstream in &proxy.upstreams {
                if let Err(problem) = validate_upstream(upstream) {
                    problems.push(problem);
                    continue;
                }
                let key = (
                    upstream.destination_type.clone(),
                    upstream.destination_name.clone(),
                    upstream.datacenter.clone(),
                    upstream.destination_peer.clone(),
                );
                if keys.contains(&key) {
                    problems.push(format!(
                        "upstreams cannot contain duplicates of {}",
                        upstream.destination_name
                    ));
                    continue;
                }
                keys.push(key);
                let host = if upstream.local_bind_address.is_empty() {
                    "127.0.0.1"
                } else {
                    upstream.local_bind_address.as_str()
                };
                let bind = if host.contains(':') {
                    format!("[{host}]:{}", upstream.local_bind_port)
                } else {
                    format!("{host}:{}", upstream.local_bind_port)
                };
                if upstream.local_bind_socket_path.is_empty() && binds.contains(&bind) {
                    problems.push(format!(
                        "upstreams cannot contain duplicates by local bind address and port; {bind:?} is specified twice"
                    ));
                    continue;
                }
                binds.push(bind);
            }
        }
        // Consul 1.10 stores any other Kind as given (it validates only its gateway kinds,
        // which this agent does not run) and any port number, negative or above 65535.
        _ => {}
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = format!(
        "Validation failed: {} error{} occurred:\n",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems {
        message.push_str(&format!("\t* {problem}\n"));
    }
    message.push('\n');
    Err(RegisterError::bad(message))
}

/// `structs.Upstream.Validate`.
fn validate_upstream(u: &Upstream) -> Result<(), String> {
    if u.destination_type != "service" && u.destination_type != "prepared_query" {
        return Err(format!(
            "unknown upstream destination type: {:?}",
            u.destination_type
        ));
    }
    if u.destination_name.is_empty() {
        return Err("upstream destination name cannot be empty".to_string());
    }
    if u.destination_name == "*" && !u.centrally_configured {
        return Err("upstream destination name cannot be a wildcard".to_string());
    }
    if !u.destination_peer.is_empty() && !u.datacenter.is_empty() {
        return Err("upstream cannot specify both destination peer and datacenter".to_string());
    }
    if u.local_bind_port == 0 && u.local_bind_socket_path.is_empty() && !u.centrally_configured {
        return Err(
            "upstream local bind port or local socket path must be defined and nonzero".to_string(),
        );
    }
    if u.local_bind_port != 0 && !u.local_bind_socket_path.is_empty() && !u.centrally_configured {
        return Err(
            "only one of upstream local bind port or local socket path can be defined and nonzero"
                .to_string(),
        );
    }
    Ok(())
}

/// Consul's default tagged addresses: `lan_ipv4`/`wan_ipv4` (or `_ipv6`) from an IP `Address`.
pub(crate) fn add_default_tagged_addresses(service: &mut Service) {
    let suffix = match service.address.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => "ipv4",
        Ok(IpAddr::V6(_)) => "ipv6",
        Err(_) => return,
    };
    for scope in ["lan", "wan"] {
        service
            .tagged_addresses
            .entry(format!("{scope}_{suffix}"))
            .or_insert_with(|| ServiceAddress {
                address: service.address.clone(),
                port: service.port,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sidecar_shorthand_expands_like_consul() {
        let body = json!({
            "name": "web", "port": 8080,
            "connect": {"sidecar_service": {"proxy": {"upstreams": [
                {"destination_name": "db", "local_bind_port": 9191}]}}}
        });
        let reg = decode_registration(&body).unwrap();
        let sidecar = reg.sidecar.unwrap();
        assert_eq!(sidecar.service.id, "web-sidecar-proxy");
        assert_eq!(sidecar.service.name, "web-sidecar-proxy");
        assert_eq!(sidecar.service.kind, "connect-proxy");
        assert_eq!(sidecar.service.proxy.destination_service_name, "web");
        assert_eq!(sidecar.service.proxy.local_service_address, "127.0.0.1");
        assert_eq!(sidecar.service.proxy.local_service_port, 8080);
        assert_eq!(
            sidecar.service.proxy.upstreams[0].destination_type,
            "service"
        );
        assert!(!sidecar.port_given);
    }

    #[test]
    fn proxy_without_destination_is_refused_with_consul_text() {
        let body = json!({"Kind": "connect-proxy", "Name": "p", "Port": 1});
        let err = decode_registration(&body).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err
            .message
            .starts_with("Validation failed: 1 error occurred:"));
        assert!(err
            .message
            .contains("Proxy.DestinationServiceName must be non-empty for Connect proxy services"));
    }

    #[test]
    fn missing_name_and_wrong_types() {
        let err = decode_registration(&json!({"Port": 1})).unwrap_err();
        assert_eq!(err.message, "Missing service name");
        let err = decode_registration(&json!({"Name": "a", "Port": "x"})).unwrap_err();
        assert!(err
            .message
            .starts_with("Request decode failed: json: cannot unmarshal string"));
    }
}
