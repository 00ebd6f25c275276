//! The pod annotations the injector reads and writes, parsed into types.
//!
//! Keys and defaults follow the seed document ("Connect Sidecar on Kubernetes"); where
//! consul-k8s silently dropped or panicked on a bad value, the value is rejected here with an
//! [`AnnotationError`] that names the annotation and the value.

use std::collections::HashSet;

use serde_json::{Map, Value};
pub(crate) use tandem_contract::{
    ServiceName, Upstream, ADMIN_LISTENER_PORT, PUBLIC_LISTENER_PORT,
};

/// `"true"` enables injection, `"false"` disables it; any spelling Go's `strconv.ParseBool` takes.
pub const CONNECT_INJECT: &str = "consul.hashicorp.com/connect-inject";
/// Written as `injected`; any non-empty value means "already injected".
pub(crate) const CONNECT_INJECT_STATUS: &str = "consul.hashicorp.com/connect-inject-status";
/// The Consul service name (default: the first container's name).
pub const CONNECT_SERVICE: &str = "consul.hashicorp.com/connect-service";
/// The port the application listens on: a number or a container port's name.
pub const CONNECT_SERVICE_PORT: &str = "consul.hashicorp.com/connect-service-port";
/// `name:port[:dc]`, comma-separated.
pub const CONNECT_SERVICE_UPSTREAMS: &str = "consul.hashicorp.com/connect-service-upstreams";

/// The value written to [`CONNECT_INJECT_STATUS`].
pub(crate) const STATUS_INJECTED: &str = "injected";

/// A pod annotation with a value the injector cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid annotation {annotation}={value:?}: {reason}")]
pub struct AnnotationError {
    /// The annotation's key, e.g. [`CONNECT_SERVICE_PORT`].
    pub annotation: &'static str,
    /// Its value as written: JSON text for a non-string value; when it was not set, the
    /// default that could not be used (empty for the service name).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl AnnotationError {
    fn new(annotation: &'static str, value: &str, reason: impl Into<String>) -> Self {
        AnnotationError {
            annotation,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does (consul-k8s compatibility).
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The `<NAME>` of `<NAME>_CONNECT_SERVICE_HOST`: uppercased, every character outside
/// `[A-Z0-9_]` turned into `_`.
pub fn env_prefix(name: &ServiceName) -> String {
    sanitize_env(name.as_str())
}

/// What the annotations (and the pod's containers, for the defaults) say the sidecar must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// `connect-service`, or the first container's name.
    pub service: ServiceName,
    /// The port inbound connections are forwarded to; `None` means no inbound listener.
    pub service_port: Option<u16>,
    /// `connect-service-upstreams`, in the order written.
    pub upstreams: Vec<Upstream>,
}

/// The pod's annotations (an absent or `null` map reads as empty).
pub(crate) fn of(pod: &Value) -> Map<String, Value> {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// A string annotation; a non-string value is reported as the bad value.
pub(crate) fn string_value<'a>(
    annotations: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, AnnotationError> {
    match annotations.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(AnnotationError::new(
            key,
            &other.to_string(),
            "annotation values must be strings",
        )),
    }
}

/// Resolves `connect-service`, `connect-service-port` and `connect-service-upstreams`
/// against the pod's containers.
pub(crate) fn connect_settings(pod: &Value) -> Result<ConnectSettings, AnnotationError> {
    let annotations = of(pod);
    let containers = containers(pod);

    let service = match string_value(&annotations, CONNECT_SERVICE)? {
        Some(raw) => raw
            .trim()
            .parse::<ServiceName>()
            .map_err(|reason| AnnotationError::new(CONNECT_SERVICE, raw, reason))?,
        None => {
            let first = containers
                .first()
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            first.parse::<ServiceName>().map_err(|reason| {
                AnnotationError::new(
                    CONNECT_SERVICE,
                    "",
                    format!(
                        "not set, and the first container's name {first:?} cannot be the default: {reason}"
                    ),
                )
            })?
        }
    };

    let service_port = match string_value(&annotations, CONNECT_SERVICE_PORT)? {
        Some(raw) => Some(
            resolve_port(raw.trim(), &containers)
                .map_err(|reason| AnnotationError::new(CONNECT_SERVICE_PORT, raw, reason))?,
        ),
        None => first_container_port(&containers),
    };
    if let Some(port) = service_port {
        if let Some(owner) = reserved_port_owner(port) {
            let raw = string_value(&annotations, CONNECT_SERVICE_PORT)?
                .map(str::to_string)
                .unwrap_or_else(|| port.to_string());
            return Err(AnnotationError::new(
                CONNECT_SERVICE_PORT,
                &raw,
                format!("port {port} is taken by tandem-proxy's {owner}"),
            ));
        }
    }

    let upstreams = match string_value(&annotations, CONNECT_SERVICE_UPSTREAMS)? {
        Some(raw) => parse_upstreams(raw, service_port)
            .map_err(|reason| AnnotationError::new(CONNECT_SERVICE_UPSTREAMS, raw, reason))?,
        None => Vec::new(),
    };

    Ok(ConnectSettings {
        service,
        service_port,
        upstreams,
    })
}

/// Parses the upstreams list: entries separated by `,`, whitespace around entries and parts
/// ignored, empty entries (a trailing comma) skipped. Local ports must be unique, must not be the
/// service port or a port of the sidecar, and two upstreams may not share an env-var name.
pub fn parse_upstreams(raw: &str, service_port: Option<u16>) -> Result<Vec<Upstream>, String> {
    let mut upstreams: Vec<Upstream> = Vec::new();
    let mut ports = HashSet::new();
    for entry in tandem_contract::upstream_entries(raw) {
        let entry = entry.as_str();
        let upstream: Upstream = entry
            .parse()
            .map_err(|e: tandem_contract::UpstreamError| e.to_string())?;
        if !ports.insert(upstream.local_port) {
            return Err(format!(
                "local port {} is used by more than one upstream",
                upstream.local_port
            ));
        }
        if Some(upstream.local_port) == service_port {
            return Err(format!(
                "upstream {entry:?}: local port {} is the service port",
                upstream.local_port
            ));
        }
        if let Some(owner) = reserved_port_owner(upstream.local_port) {
            return Err(format!(
                "upstream {entry:?}: local port {} is taken by tandem-proxy's {owner}",
                upstream.local_port
            ));
        }
        if env_prefix(&upstream.name).starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "upstream {entry:?}: its variable {}_CONNECT_SERVICE_HOST would start with a digit, \
                 which Kubernetes before 1.32 refuses in env names",
                env_prefix(&upstream.name)
            ));
        }
        upstreams.push(upstream);
    }
    Ok(upstreams)
}

/// The `<NAME>` of each upstream's `<NAME>_CONNECT_SERVICE_HOST/PORT`, in order, never twice:
/// the first upstream of a name gets the name itself (what consul-k8s sets and apps read);
/// a later one of the same name gets `<NAME>_<DATACENTER>` if it has a datacenter and that is
/// free, else `<NAME>_<LOCAL PORT>`. Every upstream's own plain name is reserved first, so a
/// suffixed name never takes the one another service needs (`db:1,db:2:dc2,db_dc2:3`).
pub fn env_prefixes(upstreams: &[Upstream]) -> Vec<String> {
    let plain: Vec<String> = upstreams.iter().map(|u| env_prefix(&u.name)).collect();
    let mut taken: HashSet<String> = plain.iter().cloned().collect();
    let mut owners: HashSet<&str> = HashSet::new();
    upstreams
        .iter()
        .zip(&plain)
        .map(|(u, base)| {
            if owners.insert(base.as_str()) {
                return base.clone();
            }
            let by_dc = u
                .datacenter
                .as_ref()
                .map(|dc| format!("{base}_{}", sanitize_env(dc.as_str())))
                .filter(|p| !taken.contains(p));
            let mut chosen = by_dc.unwrap_or_else(|| format!("{base}_{}", u.local_port));
            while taken.contains(&chosen) {
                chosen.push('_');
            }
            taken.insert(chosen.clone());
            chosen
        })
        .collect()
}

fn sanitize_env(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_ascii_uppercase() {
            u @ ('A'..='Z' | '0'..='9' | '_') => u,
            _ => '_',
        })
        .collect()
}

/// `spec.containers` as a slice (empty when absent).
pub(crate) fn containers(pod: &Value) -> Vec<&Map<String, Value>> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

/// A port number (decimal, 1-65535) or the name of a port on any container (first match wins).
fn resolve_port(raw: &str, containers: &[&Map<String, Value>]) -> Result<u16, String> {
    if raw.is_empty() {
        return Err("empty: want a port number or a container port's name".into());
    }
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        return tandem_contract::parse_port(raw);
    }
    container_ports(containers)
        .find(|p| p.get("name").and_then(Value::as_str) == Some(raw))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| "no container has a port by that name".to_string())
}

/// The first port any container exposes.
fn first_container_port(containers: &[&Map<String, Value>]) -> Option<u16> {
    container_ports(containers)
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .find_map(|n| u16::try_from(n).ok().filter(|n| *n > 0))
}

fn container_ports<'a>(
    containers: &'a [&'a Map<String, Value>],
) -> impl Iterator<Item = &'a Map<String, Value>> + 'a {
    containers
        .iter()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_object)
}

fn reserved_port_owner(port: u16) -> Option<&'static str> {
    match port {
        PUBLIC_LISTENER_PORT => Some("public listener"),
        ADMIN_LISTENER_PORT => Some("admin listener"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(annotations: Value, containers: Value) -> Value {
        json!({"metadata": {"annotations": annotations}, "spec": {"containers": containers}})
    }

    #[test]
    fn parse_bool_takes_go_spellings_only() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "no", "", " true", "tRUE", "on", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn env_prefix_mangles_everything_outside_upper_alnum_underscore() {
        let cases = [
            ("static-server", "STATIC_SERVER"),
            ("web.ns", "WEB_NS"),
            ("db_1", "DB_1"),
            ("Api-V2.x", "API_V2_X"),
        ];
        for (name, want) in cases {
            let name: ServiceName = name.parse().unwrap();
            assert_eq!(env_prefix(&name), want);
        }
    }

    #[test]
    fn upstream_parses_name_port_and_datacenter_with_whitespace() {
        let u: Upstream = " db : 1234 : dc2 ".trim().parse().unwrap();
        assert_eq!(u.name.as_str(), "db");
        assert_eq!(u.local_port, 1234);
        assert_eq!(u.datacenter.as_ref().map(|d| d.as_str()), Some("dc2"));
        assert_eq!(u.to_string(), "db:1234:dc2");
    }

    #[test]
    fn upstream_errors_name_the_entry() {
        let cases = [
            ("db", "has no local port"),
            ("db:", "local port is missing"),
            ("db:abc", "\"abc\" is not a number"),
            ("db:0", "out of range"),
            ("db:65536", "out of range"),
            ("db:-1", "not a number"),
            (":1234", "must not be empty"),
            ("db:1:dc:x", "too many"),
            ("db:1:", "datacenter is empty"),
            ("d b:1", "not allowed"),
        ];
        for (entry, want) in cases {
            let err = entry.parse::<Upstream>().unwrap_err().to_string();
            assert!(err.contains(want), "{entry}: {err}");
        }
    }

    #[test]
    fn upstream_list_rejects_duplicates_and_reserved_ports() {
        assert!(parse_upstreams("a:1,b:1", None)
            .unwrap_err()
            .contains("more than one"));
        assert!(parse_upstreams("a:8080", Some(8080))
            .unwrap_err()
            .contains("service port"));
        assert!(parse_upstreams("a:20000", None)
            .unwrap_err()
            .contains("public listener"));
        assert!(parse_upstreams("a:19000", None)
            .unwrap_err()
            .contains("admin listener"));
        assert!(parse_upstreams("9lives:1", None)
            .unwrap_err()
            .contains("9LIVES_CONNECT_SERVICE_HOST would start with a digit"));
        let ok = parse_upstreams(" db:1234 ,\n auth:6789:dc2, ", None).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].to_string(), "auth:6789:dc2");
        assert!(parse_upstreams("", None).unwrap().is_empty());
    }

    #[test]
    fn env_names_never_collide_and_the_first_keeps_the_plain_name() {
        let list = parse_upstreams(
            "db:1234,db:1235:dc2,db:1236,a-b:1237,a.b:1238,db:1239:dc2,prepared_query:geo-db:1240",
            None,
        )
        .unwrap();
        assert_eq!(
            env_prefixes(&list),
            ["DB", "DB_DC2", "DB_1236", "A_B", "A_B_1238", "DB_1239", "GEO_DB"]
        );
        // A suffixed name never takes the plain name of another upstream.
        let list = parse_upstreams("db:1,db:2:dc2,db_dc2:3,db:4,db_4:5", None).unwrap();
        assert_eq!(
            env_prefixes(&list),
            ["DB", "DB_2", "DB_DC2", "DB_4_", "DB_4"]
        );
    }

    #[test]
    fn defaults_come_from_the_containers() {
        let p = pod(
            json!({}),
            json!([{"name": "web"}, {"name": "side", "ports": [{"containerPort": 9090}, {"containerPort": 9091}]}]),
        );
        let s = connect_settings(&p).unwrap();
        assert_eq!(s.service.as_str(), "web");
        assert_eq!(s.service_port, Some(9090));
        assert!(s.upstreams.is_empty());
    }

    #[test]
    fn no_ports_means_no_inbound_listener() {
        let p = pod(json!({}), json!([{"name": "client"}]));
        assert_eq!(connect_settings(&p).unwrap().service_port, None);
    }

    #[test]
    fn named_port_resolves_on_any_container() {
        let p = pod(
            json!({CONNECT_SERVICE_PORT: "metrics"}),
            json!([{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]},
                   {"name": "b", "ports": [{"containerPort": 9102, "name": "metrics"}]}]),
        );
        assert_eq!(connect_settings(&p).unwrap().service_port, Some(9102));
    }

    #[test]
    fn bad_service_port_names_annotation_and_value() {
        let containers = json!([{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]);
        for (value, want) in [
            ("grpc", "no container has a port by that name"),
            ("0", "out of range"),
            ("70000", "out of range"),
            ("", "empty"),
            ("20000", "public listener"),
        ] {
            let err = connect_settings(&pod(
                json!({CONNECT_SERVICE_PORT: value}),
                containers.clone(),
            ))
            .unwrap_err();
            assert_eq!(err.annotation, CONNECT_SERVICE_PORT);
            assert_eq!(err.value, value);
            assert!(err.reason.contains(want), "{value}: {err}");
            assert!(err.to_string().contains(CONNECT_SERVICE_PORT));
        }
    }

    #[test]
    fn bad_service_name_is_rejected() {
        let err = connect_settings(&pod(json!({CONNECT_SERVICE: ""}), json!([{"name": "a"}])))
            .unwrap_err();
        assert_eq!(err.annotation, CONNECT_SERVICE);
        let err = connect_settings(&pod(
            json!({CONNECT_SERVICE: "a/b"}),
            json!([{"name": "a"}]),
        ))
        .unwrap_err();
        assert!(err.reason.contains("not allowed"));
    }

    #[test]
    fn non_string_annotation_is_reported() {
        let err = connect_settings(&pod(
            json!({CONNECT_SERVICE_PORT: 8080}),
            json!([{"name": "a"}]),
        ))
        .unwrap_err();
        assert_eq!(err.value, "8080");
        assert!(err.reason.contains("strings"));
    }
}
