//! Config entries of the kinds `service-defaults` and `proxy-defaults` (`/v1/config`), stored
//! and checked as Consul 1.10's state store does: names match case-insensitively, a write may
//! be a check-and-set, and no write may leave an L7 intention's destination with a protocol
//! that is not HTTP-like. The protocol a service speaks (what L7 intentions need) comes from
//! here. Bodies are decoded in `decode`.

mod decode;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

pub(crate) use decode::{check_for_write, decode};

use crate::intentions::{is_http_like, l7_protocol_error};
use crate::state::Txn;

/// `structs.ProxyConfigGlobal`: the one name a proxy-defaults entry has.
pub(crate) const GLOBAL: &str = "global";
/// `structs.DefaultServiceProtocol`.
const DEFAULT_PROTOCOL: &str = "tcp";

/// The config entry kinds this agent stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    ProxyDefaults,
    ServiceDefaults,
}

/// Consul 1.10's other kinds: known to Consul, refused here with our own text.
const OTHER_KINDS: &[&str] = &[
    "service-router",
    "service-splitter",
    "service-resolver",
    "ingress-gateway",
    "terminating-gateway",
    "service-intentions",
    "mesh",
];

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::ProxyDefaults => "proxy-defaults",
            Kind::ServiceDefaults => "service-defaults",
        }
    }

    /// `MakeConfigEntry`'s kind check (exact, case-sensitive), with our refusal for the kinds
    /// Consul has and this agent does not.
    pub(crate) fn parse(kind: &str) -> Result<Kind, KindError> {
        match kind {
            "service-defaults" => Ok(Kind::ServiceDefaults),
            "proxy-defaults" => Ok(Kind::ProxyDefaults),
            other if OTHER_KINDS.contains(&other) => Err(KindError::Unsupported(other.into())),
            other => Err(KindError::Invalid(other.into())),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind this agent cannot store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KindError {
    /// Not a Consul kind at all (`invalid config entry kind: x`).
    Invalid(String),
    /// A Consul kind this agent does not implement.
    Unsupported(String),
}

impl fmt::Display for KindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KindError::Invalid(kind) => write!(f, "invalid config entry kind: {kind}"),
            KindError::Unsupported(kind) => write!(
                f,
                "tandem-agent dev supports only the service-defaults and proxy-defaults config entry kinds, not {kind:?}"
            ),
        }
    }
}

/// `structs.TransparentProxyConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransparentProxy {
    pub outbound_listener_port: i64,
    pub dialed_directly: bool,
}

/// `structs.ExposeConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Expose {
    pub checks: bool,
    pub paths: Vec<ExposePath>,
}

/// `structs.ExposePath`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExposePath {
    pub listener_port: i64,
    pub path: String,
    pub local_path_port: i64,
    pub protocol: String,
    pub parsed_from_check: bool,
}

/// One config entry: the fields of `structs.ServiceConfigEntry` and `ProxyConfigEntry` this
/// agent keeps (each kind renders only its own).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConfigEntry {
    pub kind: Kind,
    pub name: String,
    /// service-defaults: the service's protocol (lower-cased; empty means `tcp`).
    pub protocol: String,
    /// proxy-defaults: the opaque proxy configuration (`None` is Go's nil map, `null`).
    pub config: Option<Map<String, Value>>,
    pub mode: String,
    pub transparent_proxy: TransparentProxy,
    /// `MeshGateway.Mode`.
    pub mesh_gateway_mode: String,
    pub expose: Expose,
    /// service-defaults only.
    pub external_sni: String,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl ConfigEntry {
    /// An entry of `kind` with nothing set.
    pub(crate) fn empty(kind: Kind) -> Self {
        ConfigEntry {
            kind,
            name: String::new(),
            protocol: String::new(),
            config: None,
            mode: String::new(),
            transparent_proxy: TransparentProxy::default(),
            mesh_gateway_mode: String::new(),
            expose: Expose::default(),
            external_sni: String::new(),
            meta: BTreeMap::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// `Normalize` then `Validate`, as `ConfigEntry.Apply` runs them (500 on a problem).
    pub(crate) fn normalize_and_validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::new(500, m));
        match self.kind {
            Kind::ServiceDefaults => {
                self.protocol = self.protocol.to_lowercase();
                if self.name.is_empty() {
                    return invalid("Name is required".into());
                }
                if self.name == "*" {
                    return invalid(
                        "service-defaults name must be the name of a service, and not a wildcard"
                            .into(),
                    );
                }
            }
            // Normalize forces the name, so Validate's check of it can never fail.
            Kind::ProxyDefaults => self.name = GLOBAL.to_string(),
        }
        validate_meta(&self.meta).map_err(|m| ConfigError::new(500, m))
    }

    /// The protocol a proxy-defaults `Config` sets (`mapstructure.WeakDecode` into a struct
    /// with a `protocol` field: any key case, numbers and booleans as text, else nothing).
    fn config_protocol(&self) -> String {
        let Some(config) = &self.config else {
            return String::new();
        };
        let value = config.get("protocol").or_else(|| {
            config
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("protocol"))
                .map(|(_, v)| v)
        });
        match value {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => decode::go_number_text(n),
            Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_string(),
            _ => String::new(),
        }
    }
}

/// `validateConfigEntryMeta`: Consul reports all problems as a multierror.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    let mut errors = Vec::new();
    if meta.len() > 64 {
        errors.push("Meta exceeds maximum element count 64".to_string());
    }
    for (key, value) in meta {
        if key.len() > 128 {
            errors.push(format!("Meta key {key:?} exceeds maximum length 128"));
        }
        if value.len() > 512 {
            errors.push(format!(
                "Meta value for key {key:?} exceeds maximum length 512"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::goerr::multierror(&errors))
    }
}

/// A refused config entry request: status code and Consul's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ConfigError {
    pub status: u16,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        ConfigError {
            status,
            message: message.into(),
        }
    }
}

/// The store key: the kind and the lower-cased name (Consul's `id` index).
type Key = (Kind, String);

fn key(kind: Kind, name: &str) -> Key {
    (kind, name.to_lowercase())
}

/// Every stored config entry, in Consul's order (kind, then name ignoring case).
#[derive(Default)]
pub(crate) struct ConfigEntries {
    entries: BTreeMap<Key, ConfigEntry>,
    table_index: u64,
}

impl ConfigEntries {
    /// The index of the last write to a config entry (0 before any).
    pub(crate) fn table_index(&self) -> u64 {
        self.table_index
    }

    pub(crate) fn get(&self, kind: Kind, name: &str) -> Option<&ConfigEntry> {
        self.entries.get(&key(kind, name))
    }

    /// The entries of `kind`, or of every kind.
    pub(crate) fn list(&self, kind: Option<Kind>) -> impl Iterator<Item = &ConfigEntry> {
        self.entries
            .values()
            .filter(move |e| kind.is_none_or(|k| e.kind == k))
    }

    /// The protocol `service` speaks, as Consul's discovery chain compiles it: its
    /// service-defaults `Protocol` when it has that entry (empty meaning `tcp`), else
    /// proxy-defaults' `Config.protocol`, else `tcp`.
    pub(crate) fn protocol(&self, service: &str) -> String {
        protocol_in(&self.entries, service)
    }

    /// `PUT /v1/config[?cas=N]`: an entry already normalised and validated. `Ok(false)` when
    /// the check-and-set does not hold (`cas=0`: only if absent; else only if `ModifyIndex`
    /// is `N`). `l7_destinations` are the services L7 intentions protect: the write is refused
    /// if it would leave one of them without an HTTP-like protocol.
    pub(crate) fn apply(
        &mut self,
        mut entry: ConfigEntry,
        cas: Option<u64>,
        l7_destinations: &[String],
        tx: &mut Txn,
    ) -> Result<bool, ConfigError> {
        let key = key(entry.kind, &entry.name);
        let existing = self.entries.get(&key);
        if let Some(cas) = cas {
            let holds = match existing {
                None => cas == 0,
                Some(e) => cas != 0 && cas == e.modify_index,
            };
            if !holds {
                return Ok(false);
            }
        }
        let create_index = existing.map(|e| e.create_index);
        let mut proposed = self.entries.clone();
        proposed.insert(key.clone(), entry.clone());
        check_l7_protocols(&proposed, l7_destinations)?;
        let index = tx.index();
        entry.create_index = create_index.unwrap_or(index);
        entry.modify_index = index;
        self.entries.insert(key, entry);
        self.table_index = index;
        Ok(true)
    }

    /// `DELETE /v1/config/:kind/:name`: nothing to do for a missing entry; refused if an L7
    /// intention's destination would lose its HTTP-like protocol. A proxy-defaults entry is
    /// always `global`, whatever name is given (Consul normalises the name before deleting).
    pub(crate) fn delete(
        &mut self,
        kind: Kind,
        name: &str,
        l7_destinations: &[String],
        tx: &mut Txn,
    ) -> Result<(), ConfigError> {
        let name = match kind {
            Kind::ProxyDefaults => GLOBAL,
            Kind::ServiceDefaults => name,
        };
        let key = key(kind, name);
        if !self.entries.contains_key(&key) {
            return Ok(());
        }
        let mut proposed = self.entries.clone();
        proposed.remove(&key);
        check_l7_protocols(&proposed, l7_destinations)?;
        self.entries = proposed;
        self.table_index = tx.index();
        Ok(())
    }
}

fn protocol_in(entries: &BTreeMap<Key, ConfigEntry>, service: &str) -> String {
    let protocol = match entries.get(&key(Kind::ServiceDefaults, service)) {
        Some(defaults) => defaults.protocol.clone(),
        None => entries
            .get(&key(Kind::ProxyDefaults, GLOBAL))
            .map(ConfigEntry::config_protocol)
            .unwrap_or_default(),
    };
    if protocol.is_empty() {
        DEFAULT_PROTOCOL.to_string()
    } else {
        protocol.to_lowercase()
    }
}

/// The graph check of `validateProposedConfigEntryInServiceGraph` for L7 intentions: the first
/// destination (in name order) whose protocol would not be HTTP-like refuses the write.
fn check_l7_protocols(
    proposed: &BTreeMap<Key, ConfigEntry>,
    l7_destinations: &[String],
) -> Result<(), ConfigError> {
    for service in l7_destinations {
        let protocol = protocol_in(proposed, service);
        if !is_http_like(&protocol) {
            return Err(ConfigError::new(500, l7_protocol_error(service, &protocol)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(body: Value) -> ConfigEntry {
        let mut entry = decode(&body).expect("a valid config entry body");
        entry
            .normalize_and_validate()
            .expect("a valid config entry");
        entry
    }

    fn write(store: &mut ConfigEntries, body: Value, l7: &[&str]) -> Result<bool, ConfigError> {
        let l7: Vec<String> = l7.iter().map(|s| s.to_string()).collect();
        let index = store.table_index() + 1;
        store.apply(entry(body), None, &l7, &mut Txn::for_tests(index))
    }

    #[test]
    fn the_protocol_comes_from_service_then_proxy_defaults() {
        let mut store = ConfigEntries::default();
        assert_eq!(store.protocol("web"), "tcp");
        write(
            &mut store,
            json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"Protocol": "HTTP2"}}),
            &[],
        )
        .unwrap();
        assert_eq!(store.protocol("web"), "http2");
        write(
            &mut store,
            json!({"Kind": "service-defaults", "Name": "Web", "Protocol": "GRPC"}),
            &[],
        )
        .unwrap();
        assert_eq!(store.protocol("web"), "grpc");
        // A service-defaults entry without a protocol means tcp, whatever proxy-defaults says.
        write(
            &mut store,
            json!({"Kind": "service-defaults", "Name": "api"}),
            &[],
        )
        .unwrap();
        assert_eq!(store.protocol("api"), "tcp");
        assert_eq!(store.protocol("other"), "http2");
    }

    #[test]
    fn writes_that_break_l7_intentions_are_refused() {
        let mut store = ConfigEntries::default();
        write(
            &mut store,
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
            &[],
        )
        .unwrap();
        let err = write(
            &mut store,
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}),
            &["web"],
        )
        .unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (500, "service \"web\" has protocol \"tcp\", which is incompatible with L7 intentions permissions")
        );
        assert_eq!(store.protocol("web"), "http");
        let mut tx = Txn::for_tests(9);
        let l7 = vec!["web".to_string()];
        assert!(store
            .delete(Kind::ServiceDefaults, "WEB", &l7, &mut tx)
            .is_err());
        write(
            &mut store,
            json!({"Kind": "proxy-defaults", "Config": {"protocol": "http"}}),
            &[],
        )
        .unwrap();
        store
            .delete(Kind::ServiceDefaults, "WEB", &l7, &mut tx)
            .unwrap();
        assert!(store.get(Kind::ServiceDefaults, "web").is_none());
        let err = store
            .delete(Kind::ProxyDefaults, "anything", &l7, &mut tx)
            .unwrap_err();
        assert!(err
            .message
            .starts_with("service \"web\" has protocol \"tcp\""));
        assert!(store
            .delete(Kind::ProxyDefaults, "anything", &[], &mut tx)
            .is_ok());
        assert!(store.get(Kind::ProxyDefaults, GLOBAL).is_none());
    }

    #[test]
    fn check_and_set_follows_the_modify_index() {
        let mut store = ConfigEntries::default();
        let body = json!({"Kind": "service-defaults", "Name": "web"});
        let mut tx = Txn::for_tests(5);
        assert_eq!(
            store.apply(entry(body.clone()), Some(3), &[], &mut tx),
            Ok(false)
        );
        assert_eq!(
            store.apply(entry(body.clone()), Some(0), &[], &mut tx),
            Ok(true)
        );
        let mut tx = Txn::for_tests(6);
        assert_eq!(
            store.apply(entry(body.clone()), Some(0), &[], &mut tx),
            Ok(false)
        );
        assert_eq!(
            store.apply(entry(body.clone()), Some(4), &[], &mut tx),
            Ok(false)
        );
        assert_eq!(store.apply(entry(body), Some(5), &[], &mut tx), Ok(true));
        let stored = store.get(Kind::ServiceDefaults, "web").unwrap();
        assert_eq!((stored.create_index, stored.modify_index), (5, 6));
        assert_eq!(store.table_index(), 6);
    }

    #[test]
    fn names_and_kinds_are_checked_like_consul() {
        let mut nameless = decode(&json!({"Kind": "service-defaults"})).unwrap();
        assert_eq!(
            nameless.normalize_and_validate().unwrap_err().message,
            "Name is required"
        );
        let mut wildcard = decode(&json!({"Kind": "service-defaults", "Name": "*"})).unwrap();
        assert_eq!(
            wildcard.normalize_and_validate().unwrap_err().message,
            "service-defaults name must be the name of a service, and not a wildcard"
        );
        // Consul forces a proxy-defaults entry's name to global.
        let proxy = entry(json!({"Kind": "proxy-defaults", "Name": "other"}));
        assert_eq!(proxy.name, GLOBAL);
        assert_eq!(
            Kind::parse("bogus").unwrap_err().to_string(),
            "invalid config entry kind: bogus"
        );
        assert_eq!(
            Kind::parse("Service-Defaults").unwrap_err().to_string(),
            "invalid config entry kind: Service-Defaults"
        );
        assert!(matches!(
            Kind::parse("service-router"),
            Err(KindError::Unsupported(_))
        ));
    }
}
