//! A config entry body decoded as Consul's `structs.DecodeConfigEntry` does: the `Kind` picks
//! the struct, then `mapstructure` with weakly typed input fills it (keys in any case plus the
//! snake_case aliases, numbers and booleans accepted as strings and back, a one-element list
//! for a single value, a single value for a list), collecting every type problem
//! (`1 error(s) decoding: ...`) and, if there are none, every key no field took
//! (`invalid config key "MeshGateway.Zap"`), with Consul's texts.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::{ConfigEntry, ExposePath, Kind, KindError};
use crate::json::DecodeError;

/// Decodes a `PUT /v1/config` body; the error is the text Consul puts after `Request
/// decoding failed: `.
pub(crate) fn decode(body: &Value) -> Result<ConfigEntry, DecodeError> {
    let (object, kind) = kind_of(body)?;
    let kind = kind.map_err(|e| DecodeError(e.to_string()))?;
    let (entry, unsupported) = fill(object, kind)?;
    if let Some(field) = unsupported {
        return Err(DecodeError(format!(
            "tandem-agent dev does not support {field} in {kind} config entries"
        )));
    }
    Ok(entry)
}

/// What `consul config write` checks before it sends a body: the kind is one Consul has, and
/// for the kinds this agent keeps, the fields decode (same texts as [`decode`]); any other
/// Consul kind, or a field only Consul keeps, is left to the agent. Returns the kind and the
/// name as given, for the command's messages.
pub(crate) fn check_for_write(body: &Value) -> Result<(String, String), DecodeError> {
    let (object, kind) = kind_of(body)?;
    match kind {
        Ok(kind) => {
            let (entry, _) = fill(object, kind)?;
            Ok((kind.as_str().to_string(), entry.name))
        }
        Err(KindError::Unsupported(kind)) => {
            let name = object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("name"))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_default();
            Ok((kind, name.to_string()))
        }
        Err(e @ KindError::Invalid(_)) => Err(DecodeError(e.to_string())),
    }
}

/// A body's object and the kind it names, which this agent may not keep.
type Named<'v> = (&'v Map<String, Value>, Result<Kind, KindError>);

/// The body as an object and the kind it names (`Kind`, else `kind`).
fn kind_of(body: &Value) -> Result<Named<'_>, DecodeError> {
    let object = match body {
        // Go decodes `null` into a nil map, which has no kind.
        Value::Null => return Err(no_kind()),
        Value::Object(object) => object,
        other => {
            return Err(DecodeError(format!(
                "'' expected a map, got '{}'",
                go_kind(other)
            )))
        }
    };
    match object.get("Kind").or_else(|| object.get("kind")) {
        None => Err(no_kind()),
        Some(Value::String(kind)) => Ok((object, Kind::parse(kind))),
        Some(_) => Err(DecodeError(
            "Kind value in payload is not a string".to_string(),
        )),
    }
}

/// mapstructure's pass over the object; also names a field Consul has that is not kept here.
fn fill(
    object: &Map<String, Value>,
    kind: Kind,
) -> Result<(ConfigEntry, Option<&'static str>), DecodeError> {
    let mut decoder = Weak::default();
    let mut entry = ConfigEntry::empty(kind);
    decoder.entry(object, &mut entry);
    if !decoder.errors.is_empty() {
        return Err(DecodeError(crate::goerr::mapstructure(&decoder.errors)));
    }
    // Consul lists them in Go's random map order; sorted, ours are stable.
    decoder.unused.sort();
    let unused: Vec<String> = decoder
        .unused
        .iter()
        .filter_map(|key| unused_key_error(key))
        .collect();
    if !unused.is_empty() {
        return Err(DecodeError(crate::goerr::multierror(&unused)));
    }
    Ok((entry, decoder.unsupported))
}

fn no_kind() -> DecodeError {
    DecodeError("Payload does not contain a kind/Kind key at the top level".to_string())
}

/// `validateUnusedKeys` (OSS): which left-over keys are errors, and how they read.
fn unused_key_error(key: &str) -> Option<String> {
    match key {
        "CreateIndex" | "ModifyIndex" | "kind" | "Kind" => None,
        k if k.to_lowercase().ends_with("namespace") => Some(format!(
            "invalid config key {k:?}, namespaces are a consul enterprise feature"
        )),
        k => Some(format!("invalid config key {k:?}")),
    }
}

/// A struct field: its Go name and the `alias` tags that also name it.
type Field = (&'static str, &'static [&'static str]);

const SERVICE_DEFAULTS: &[Field] = &[
    ("Kind", &[]),
    ("Name", &[]),
    ("Protocol", &[]),
    ("Mode", &[]),
    ("TransparentProxy", &["transparent_proxy"]),
    ("MeshGateway", &["mesh_gateway"]),
    ("Expose", &[]),
    ("ExternalSNI", &["external_sni"]),
    ("UpstreamConfig", &["upstream_config"]),
    ("Meta", &[]),
];

const PROXY_DEFAULTS: &[Field] = &[
    ("Kind", &[]),
    ("Name", &[]),
    ("Config", &[]),
    ("Mode", &[]),
    ("TransparentProxy", &["transparent_proxy"]),
    ("MeshGateway", &["mesh_gateway"]),
    ("Expose", &[]),
    ("Meta", &[]),
];

const TRANSPARENT_PROXY: &[Field] = &[
    ("OutboundListenerPort", &["outbound_listener_port"]),
    ("DialedDirectly", &["dialed_directly"]),
];
const MESH_GATEWAY: &[Field] = &[("Mode", &[])];
const EXPOSE: &[Field] = &[("Checks", &[]), ("Paths", &[])];
const EXPOSE_PATH: &[Field] = &[
    ("ListenerPort", &["listener_port"]),
    ("Path", &[]),
    ("LocalPathPort", &["local_path_port"]),
    ("Protocol", &[]),
    ("ParsedFromCheck", &["parsed_from_check"]),
];

/// mapstructure's weakly typed decoding: problems and unused keys are collected, not returned.
#[derive(Default)]
struct Weak {
    errors: Vec<String>,
    unused: Vec<String>,
    /// A field Consul has and this agent does not keep (`UpstreamConfig`).
    unsupported: Option<&'static str>,
}

impl Weak {
    fn entry(&mut self, object: &Map<String, Value>, entry: &mut ConfigEntry) {
        let fields = match entry.kind {
            Kind::ServiceDefaults => SERVICE_DEFAULTS,
            Kind::ProxyDefaults => PROXY_DEFAULTS,
        };
        for (field, value) in self.fields("", object, fields) {
            let value = unslice(value);
            match field {
                // Already decided by `decode`; mapstructure still type-checks it.
                "Kind" => {
                    self.string(field, value, "string");
                }
                "Name" => set(&mut entry.name, self.string(field, value, "string")),
                "Protocol" => set(&mut entry.protocol, self.string(field, value, "string")),
                "Mode" => set(
                    &mut entry.mode,
                    self.string(field, value, "structs.ProxyMode"),
                ),
                "ExternalSNI" => set(&mut entry.external_sni, self.string(field, value, "string")),
                "Meta" => {
                    if let Some(meta) = self.string_map(field, value) {
                        entry.meta = meta;
                    }
                }
                "Config" => {
                    if let Some(config) = self.opaque_map(field, value) {
                        entry.config = Some(config);
                    }
                }
                "TransparentProxy" => {
                    let at = field.to_string();
                    for (inner, v) in self.struct_fields(&at, value, TRANSPARENT_PROXY) {
                        let at = format!("{at}.{inner}");
                        let proxy = &mut entry.transparent_proxy;
                        match inner {
                            "OutboundListenerPort" => {
                                set(&mut proxy.outbound_listener_port, self.int(&at, v))
                            }
                            _ => set(&mut proxy.dialed_directly, self.boolean(&at, v)),
                        }
                    }
                }
                "MeshGateway" => {
                    let at = field.to_string();
                    for (_, v) in self.struct_fields(&at, value, MESH_GATEWAY) {
                        let mode = self.string(&format!("{at}.Mode"), v, "structs.MeshGatewayMode");
                        set(&mut entry.mesh_gateway_mode, mode);
                    }
                }
                "Expose" => {
                    let at = field.to_string();
                    for (inner, v) in self.struct_fields(&at, value, EXPOSE) {
                        let at = format!("{at}.{inner}");
                        match inner {
                            "Checks" => set(&mut entry.expose.checks, self.boolean(&at, v)),
                            _ => entry.expose.paths = self.expose_paths(&at, v),
                        }
                    }
                }
                _ => {
                    if !value.is_null() {
                        self.unsupported = Some("UpstreamConfig");
                    }
                }
            }
        }
    }

    fn expose_paths(&mut self, at: &str, value: &Value) -> Vec<ExposePath> {
        let items: Vec<&Value> = match value {
            Value::Null => return Vec::new(),
            Value::Array(items) => items.iter().collect(),
            // Weakly typed: a single value is a list of one.
            single => vec![single],
        };
        let mut paths = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("{at}[{i}]");
            let mut path = ExposePath::default();
            for (field, v) in self.struct_fields(&at, item, EXPOSE_PATH) {
                let at = format!("{at}.{field}");
                match field {
                    "ListenerPort" => set(&mut path.listener_port, self.int(&at, v)),
                    "LocalPathPort" => set(&mut path.local_path_port, self.int(&at, v)),
                    "Path" => set(&mut path.path, self.string(&at, v, "string")),
                    "Protocol" => set(&mut path.protocol, self.string(&at, v, "string")),
                    _ => set(&mut path.parsed_from_check, self.boolean(&at, v)),
                }
            }
            paths.push(path);
        }
        paths
    }

    /// A nested struct at `at`: its fields, or nothing (and an error unless `null`) when the
    /// value is not a map.
    fn struct_fields<'v>(
        &mut self,
        at: &str,
        value: &'v Value,
        fields: &[Field],
    ) -> Vec<(&'static str, &'v Value)> {
        match unslice(value) {
            Value::Null => Vec::new(),
            Value::Object(object) => self
                .fields(at, object, fields)
                .into_iter()
                .map(|(f, v)| (f, unslice(v)))
                .collect(),
            other => {
                self.errors
                    .push(format!("'{at}' expected a map, got '{}'", go_kind(other)));
                Vec::new()
            }
        }
    }

    /// `decodeStructFromMap`: each field takes the key that names it (exactly, else ignoring
    /// case, aliases included); keys no field takes are recorded as unused (`at.key`).
    fn fields<'v>(
        &mut self,
        at: &str,
        object: &'v Map<String, Value>,
        fields: &[Field],
    ) -> Vec<(&'static str, &'v Value)> {
        let names = |key: &str, field: &Field| {
            key.eq_ignore_ascii_case(field.0) || field.1.iter().any(|a| a.eq_ignore_ascii_case(key))
        };
        let mut taken = vec![false; object.len()];
        let mut found = Vec::new();
        for field in fields {
            let position = object
                .keys()
                .position(|k| k == field.0)
                .or_else(|| object.keys().position(|k| names(k, field)));
            if let Some(p) = position {
                taken[p] = true;
                let (_, value) = object.iter().nth(p).expect("position() found it");
                found.push((field.0, value));
            }
        }
        for (key, taken) in object.keys().zip(taken) {
            if !taken {
                self.unused.push(if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                });
            }
        }
        found
    }

    /// A Go string (or named string type `go_type`), weakly: booleans are `1`/`0`, numbers
    /// their decimal text.
    fn string(&mut self, at: &str, value: &Value, go_type: &str) -> Option<String> {
        match unslice(value) {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
            Value::Number(n) => Some(go_number_text(n)),
            other => {
                self.unconvertible(at, other, go_type);
                None
            }
        }
    }

    fn boolean(&mut self, at: &str, value: &Value) -> Option<bool> {
        match unslice(value) {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            Value::Number(n) => Some(n.as_f64().is_some_and(|f| f != 0.0)),
            Value::String(s) => match s.as_str() {
                "" => Some(false),
                "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
                "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
                _ => {
                    self.errors.push(format!(
                        "cannot parse '{at}' as bool: strconv.ParseBool: parsing {s:?}: invalid syntax"
                    ));
                    None
                }
            },
            other => {
                self.unconvertible(at, other, "bool");
                None
            }
        }
    }

    fn int(&mut self, at: &str, value: &Value) -> Option<i64> {
        match unslice(value) {
            Value::Null => None,
            // mapstructure truncates a float into an int.
            Value::Number(n) => Some(
                n.as_i64()
                    .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64),
            ),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::String(s) if s.is_empty() => Some(0),
            Value::String(s) => match parse_go_int(s) {
                Ok(v) => Some(v),
                Err(why) => {
                    self.errors.push(format!(
                        "cannot parse '{at}' as int: strconv.ParseInt: parsing {s:?}: {why}"
                    ));
                    None
                }
            },
            other => {
                self.unconvertible(at, other, "int");
                None
            }
        }
    }

    /// `map[string]string` (`Meta`): every value weakly a string (`null` is `""`).
    fn string_map(&mut self, at: &str, value: &Value) -> Option<BTreeMap<String, String>> {
        let object = self.map(at, value)?;
        let mut out = BTreeMap::new();
        for (k, v) in &object {
            let text = self.string(&format!("{at}[{k}]"), v, "string");
            out.insert(k.clone(), text.unwrap_or_default());
        }
        Some(out)
    }

    /// `map[string]interface{}` (`Config`): kept as given, except that a one-element list
    /// holding the value of a key is unwrapped, in depth (`decode.HookWeakDecodeFromSlice`).
    fn opaque_map(&mut self, at: &str, value: &Value) -> Option<Map<String, Value>> {
        let object = self.map(at, value)?;
        Some(
            object
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Array(mut items) if items.len() == 1 => {
                        let mut inner = items.remove(0);
                        unslice_in_depth(&mut inner);
                        (k, inner)
                    }
                    other => (k, other),
                })
                .collect(),
        )
    }

    /// A map value: an object, or (weakly) a list of objects merged in order.
    fn map(&mut self, at: &str, value: &Value) -> Option<Map<String, Value>> {
        match unslice(value) {
            Value::Null => None,
            Value::Object(object) => Some(object.clone()),
            Value::Array(items) if items.iter().all(Value::is_object) => {
                let mut merged = Map::new();
                for item in items.iter().filter_map(Value::as_object) {
                    merged.extend(item.clone());
                }
                Some(merged)
            }
            other => {
                self.errors
                    .push(format!("'{at}' expected a map, got '{}'", go_kind(other)));
                None
            }
        }
    }

    fn unconvertible(&mut self, at: &str, value: &Value, go_type: &str) {
        self.errors.push(format!(
            "'{at}' expected type '{go_type}', got unconvertible type '{}', value: '{}'",
            go_type_name(value),
            go_format(value)
        ));
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// `HookWeakDecodeFromSlice` for a target that is not a list: a one-element list is its
/// element.
fn unslice(value: &Value) -> &Value {
    match value {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    }
}

/// `unSliceWalker`: inside a value, every map element that is a one-element list becomes
/// that element.
fn unslice_in_depth(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                if let Value::Array(items) = v {
                    if items.len() == 1 {
                        *v = items.remove(0);
                    }
                }
                unslice_in_depth(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unslice_in_depth),
        _ => {}
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then decimal, or `0x`/`0o`/`0b`/`0`
/// prefixed hexadecimal, octal or binary; the error is its reason.
fn parse_go_int(text: &str) -> Result<i64, &'static str> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err("invalid syntax");
    }
    let magnitude = i128::from_str_radix(&digits, radix).map_err(|_| "value out of range")?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| "value out of range")
}

/// A JSON number as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it (what mapstructure
/// makes of a number given for a string).
pub(super) fn go_number_text(n: &Number) -> String {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => i.to_string(),
        (_, Some(u)) => u.to_string(),
        _ => format!("{}", n.as_f64().unwrap_or(0.0)),
    }
}

/// The `reflect.Kind` mapstructure names in `expected a map, got '...'`.
fn go_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// The Go type of a decoded JSON value, as `%T` names it.
fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "map[string]interface {}",
        Value::Array(_) => "[]interface {}",
        Value::String(_) => "string",
        Value::Number(_) => "float64",
        Value::Bool(_) => "bool",
        Value::Null => "<nil>",
    }
}

/// A decoded JSON value as Go's `%v` prints it: `map[a:1 b:[x y]]`, floats in `%g` form.
fn go_format(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or(0.0)),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_format).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut parts: Vec<(&String, String)> =
                map.iter().map(|(k, v)| (k, go_format(v))).collect();
            parts.sort();
            let parts: Vec<String> = parts.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// Go's `%v` of a float64 (`%g` with the shortest digits): `e` notation with at least two
/// exponent digits when the decimal exponent is below -4 or 6 and up (`1e+06`, `123456`).
fn go_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return format!("{f}");
    }
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("Rust's {:e} always has an exponent");
    let exponent: i32 = exponent.parse().expect("a decimal exponent");
    if (-4..6).contains(&exponent) {
        format!("{f}")
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error(body: Value) -> String {
        decode(&body).unwrap_err().0
    }

    #[test]
    fn kinds_and_shapes_are_checked_first() {
        assert_eq!(
            error(json!(null)),
            "Payload does not contain a kind/Kind key at the top level"
        );
        assert_eq!(
            error(json!({})),
            "Payload does not contain a kind/Kind key at the top level"
        );
        assert_eq!(error(json!([])), "'' expected a map, got 'slice'");
        assert_eq!(error(json!("x")), "'' expected a map, got 'string'");
        assert_eq!(error(json!(5)), "'' expected a map, got 'float64'");
        assert_eq!(
            error(json!({"Kind": 5})),
            "Kind value in payload is not a string"
        );
        assert_eq!(
            error(json!({"Kind": "bogus"})),
            "invalid config entry kind: bogus"
        );
        // `Kind` wins over `kind`, and both are taken.
        let entry = decode(&json!({"kind": "service-defaults", "Kind": "proxy-defaults"})).unwrap();
        assert_eq!(entry.kind, Kind::ProxyDefaults);
    }

    #[test]
    fn values_are_weakly_typed_like_mapstructure() {
        let entry = decode(&json!({
            "kind": "service-defaults", "name": "web", "Protocol": ["HTTP"],
            "mesh_gateway": {"mode": "local"},
            "transparent_proxy": {"outbound_listener_port": "0x10", "dialed_directly": 5},
            "Expose": {"Checks": "true", "Paths": {"path": "/m", "listener_port": 1.5}},
            "Meta": {"n": 1, "b": true, "z": null},
        }))
        .unwrap();
        assert_eq!(
            (entry.name.as_str(), entry.protocol.as_str()),
            ("web", "HTTP")
        );
        assert_eq!(entry.mesh_gateway_mode, "local");
        assert_eq!(entry.transparent_proxy.outbound_listener_port, 16);
        assert!(entry.transparent_proxy.dialed_directly);
        assert!(entry.expose.checks);
        assert_eq!(entry.expose.paths[0].path, "/m");
        assert_eq!(entry.expose.paths[0].listener_port, 1);
        let meta: Vec<(&str, &str)> = entry
            .meta
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(meta, [("b", "1"), ("n", "1"), ("z", "")]);
        let proxy = decode(&json!({"Kind": "proxy-defaults", "Config": {"a": [1], "e": [{"f": [4]}], "h": [1, 2]}})).unwrap();
        assert_eq!(
            Value::Object(proxy.config.unwrap()),
            json!({"a": 1, "e": {"f": 4}, "h": [1, 2]})
        );
    }

    #[test]
    fn type_problems_are_listed_sorted() {
        assert_eq!(
            error(json!({"Kind": "service-defaults", "Name": "y",
                "MeshGateway": {"Mode": {"a": [1, 2.5, "s", true, null]}},
                "Expose": {"Checks": "yes"}, "Protocol": [1, 2]})),
            "3 error(s) decoding:\n\n* 'MeshGateway.Mode' expected type 'structs.MeshGatewayMode', got unconvertible type 'map[string]interface {}', value: 'map[a:[1 2.5 s true <nil>]]'\n* 'Protocol' expected type 'string', got unconvertible type '[]interface {}', value: '[1 2]'\n* cannot parse 'Expose.Checks' as bool: strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
        assert_eq!(
            error(json!({"Kind": "service-defaults", "Name": "m2", "Meta": {"a": {"b": 1}},
                "TransparentProxy": {"OutboundListenerPort": "abc"}})),
            "2 error(s) decoding:\n\n* 'Meta[a]' expected type 'string', got unconvertible type 'map[string]interface {}', value: 'map[b:1]'\n* cannot parse 'TransparentProxy.OutboundListenerPort' as int: strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            error(json!({"Kind": "service-defaults", "Name": "x", "Protocol": {"a": 1e6, "b": [], "c": {}, "d": 123456, "e": 0.00001, "f": "s t"}})),
            "1 error(s) decoding:\n\n* 'Protocol' expected type 'string', got unconvertible type 'map[string]interface {}', value: 'map[a:1e+06 b:[] c:map[] d:123456 e:1e-05 f:s t]'"
        );
        assert_eq!(
            error(json!({"Kind": "service-defaults", "Name": "x", "Expose": {"Paths": "x"}, "MeshGateway": [1, 2]})),
            "2 error(s) decoding:\n\n* 'Expose.Paths[0]' expected a map, got 'string'\n* 'MeshGateway' expected a map, got 'slice'"
        );
    }

    #[test]
    fn unused_keys_are_named_with_their_path() {
        assert_eq!(
            error(
                json!({"Kind": "service-defaults", "Name": "x", "Bogus": 1, "CreateIndex": 5, "ModifyIndex": "x"})
            ),
            "1 error occurred:\n\t* invalid config key \"Bogus\"\n\n"
        );
        assert_eq!(
            error(json!({"Kind": "service-defaults", "Name": "x",
                "Expose": {"Paths": [{"Path": "/a", "Bogus": 1}]},
                "MeshGateway": {"namespace": "x"}, "createindex": 1})),
            "3 errors occurred:\n\t* invalid config key \"Expose.Paths[0].Bogus\"\n\t* invalid config key \"MeshGateway.namespace\", namespaces are a consul enterprise feature\n\t* invalid config key \"createindex\"\n\n"
        );
        // Config belongs to proxy-defaults only.
        assert_eq!(
            error(json!({"Kind": "service-defaults", "Name": "x", "Config": {}})),
            "1 error occurred:\n\t* invalid config key \"Config\"\n\n"
        );
        assert!(error(
            json!({"Kind": "service-defaults", "Name": "x", "UpstreamConfig": {"Defaults": {}}})
        )
        .contains("does not support UpstreamConfig"));
    }

    #[test]
    fn go_formats_floats_like_percent_v() {
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(2.5), "2.5");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(parse_go_int("-0x10"), Ok(-16));
        assert_eq!(parse_go_int("010"), Ok(8));
        assert_eq!(parse_go_int("1.5"), Err("invalid syntax"));
    }
}
