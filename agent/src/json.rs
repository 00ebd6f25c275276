//! JSON the way Consul's Go code reads and writes it.
//!
//! Writing: 4-space indentation (what `consul agent -dev` sends), Go's HTML-safe escaping of
//! `<`, `>`, `&`, and map keys sorted (Go sorts map keys; struct fields keep declaration order,
//! which our `Serialize` impls follow).
//! Reading: Go's `encoding/json` matches keys case-insensitively, and Consul's service, proxy,
//! upstream and check decoders also accept snake_case; [`Fields`] gives that lookup with typed
//! accessors whose errors read like Go's.

pub(crate) mod strict;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

/// Serialises `value` with 4-space indentation and Go's escaping; `trailing_newline` for `?pretty`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, trailing_newline: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if value.serialize(&mut serializer).is_err() {
        // Serialising our own in-memory types cannot fail (string keys, finite numbers).
        return b"null".to_vec();
    }
    let mut escaped = Vec::with_capacity(out.len());
    for byte in out {
        match byte {
            b'<' => escaped.extend_from_slice(b"\\u003c"),
            b'>' => escaped.extend_from_slice(b"\\u003e"),
            b'&' => escaped.extend_from_slice(b"\\u0026"),
            other => escaped.push(other),
        }
    }
    if trailing_newline {
        escaped.push(b'\n');
    }
    escaped
}

/// Recursively sorts object keys, as Go does when it marshals a `map[string]interface{}`.
pub(crate) fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// RFC 3339 with only the fractional digits needed, UTC: Go's `time.Time` JSON form.
pub(crate) fn go_time(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let Ok(stamp) = time::OffsetDateTime::from_unix_timestamp(since.as_secs() as i64) else {
        return "0001-01-01T00:00:00Z".to_string();
    };
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    );
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        text.push('.');
        text.push_str(frac.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// A JSON decode error worded like Go's `encoding/json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(pub String);

/// Parses a request body as JSON; an empty body is Go's `EOF`.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError("EOF".to_string()));
    }
    serde_json::from_slice(body).map_err(|e| DecodeError(go_syntax_error(body, &e)))
}

/// Words a JSON syntax error the way Go's decoder does for the common cases.
fn go_syntax_error(body: &[u8], error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Eof => "unexpected EOF".to_string(),
        Category::Syntax => {
            let text = String::from_utf8_lossy(body);
            let offending = text
                .lines()
                .nth(error.line().saturating_sub(1))
                .and_then(|line| line.chars().nth(error.column().saturating_sub(1)));
            match offending {
                Some(c) => format!("invalid character '{c}' looking for beginning of value"),
                None => "unexpected EOF".to_string(),
            }
        }
        _ => format!("invalid JSON: {error}"),
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn normalise(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Case-insensitive (and snake_case tolerant) typed view of a JSON object.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
    go_struct: &'static str,
}

impl<'a> Fields<'a> {
    /// `value` must be an object (`null` reads as an empty object, as in Go).
    pub(crate) fn new(value: &'a Value, go_struct: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Object(map) => Ok(Fields {
                map: Some(map),
                go_struct,
            }),
            Value::Null => Ok(Fields {
                map: None,
                go_struct,
            }),
            other => Err(DecodeError(format!(
                "json: cannot unmarshal {} into Go value of type structs.{go_struct}",
                json_kind(other)
            ))),
        }
    }

    /// Go's `DisallowUnknownFields`, as Consul decodes request bodies: the first key (in the
    /// order sent) that matches none of `known` case-insensitively is refused. `known` lists the
    /// Go field names and the snake_case aliases Consul's decoders accept for this struct.
    pub(crate) fn refuse_unknown(&self, known: &[&str]) -> Result<(), DecodeError> {
        let Some(map) = self.map else { return Ok(()) };
        match map
            .keys()
            .find(|key| !known.iter().any(|k| k.eq_ignore_ascii_case(key)))
        {
            Some(key) => Err(DecodeError(format!("json: unknown field {key:?}"))),
            None => Ok(()),
        }
    }

    /// Go's complaint about field `name` of this struct holding `found` instead of a `go_type`.
    fn wrong_type(&self, found: &Value, name: &str, go_type: &str) -> DecodeError {
        DecodeError(format!(
            "json: cannot unmarshal {} into Go struct field {}.{name} of type {go_type}",
            json_kind(found),
            self.go_struct
        ))
    }

    /// The value of `name` (last matching key wins, like Go); `null` counts as absent.
    pub(crate) fn raw(&self, name: &str) -> Option<&'a Value> {
        let wanted = normalise(name);
        let map = self.map?;
        let mut found = None;
        for (key, value) in map {
            if normalise(key) == wanted {
                found = Some(value);
            }
        }
        found.filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_type(other, name, "string")),
        }
    }

    pub(crate) fn string_or_default(&self, name: &str) -> Result<String, DecodeError> {
        Ok(self.string(name)?.unwrap_or_default())
    }

    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, DecodeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) => Ok(Some(v)),
                None => Err(DecodeError(format!(
                    "json: cannot unmarshal number {n} into Go struct field {}.{name} of type int",
                    self.go_struct
                ))),
            },
            Some(other) => Err(self.wrong_type(other, name, "int")),
        }
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<bool, DecodeError> {
        match self.raw(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong_type(other, name, "bool")),
        }
    }

    pub(crate) fn strings(&self, name: &str) -> Result<Option<Vec<String>>, DecodeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong_type(other, name, "string")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong_type(other, name, "[]string")),
        }
    }

    pub(crate) fn string_map(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, DecodeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(self.wrong_type(other, name, "string")),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong_type(other, name, "map[string]string")),
        }
    }

    /// An opaque JSON object (`Proxy.Config`, `Upstream.Config`), kept with sorted keys.
    pub(crate) fn opaque_object(&self, name: &str) -> Result<Option<Value>, DecodeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(value @ Value::Object(_)) => Ok(Some(sorted(value))),
            Some(other) => Err(self.wrong_type(other, name, "map[string]interface {}")),
        }
    }

    pub(crate) fn object(
        &self,
        name: &str,
        go_struct: &'static str,
    ) -> Result<Option<Fields<'a>>, DecodeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(value @ Value::Object(_)) => Fields::new(value, go_struct).map(Some),
            Some(other) => Err(self.wrong_type(other, name, go_struct)),
        }
    }

    pub(crate) fn objects(
        &self,
        name: &str,
        go_struct: &'static str,
    ) -> Result<Vec<Fields<'a>>, DecodeError> {
        match self.raw(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Object(_) | Value::Null => Fields::new(item, go_struct),
                    other => Err(self.wrong_type(other, name, go_struct)),
                })
                .collect(),
            Some(other) => Err(self.wrong_type(other, name, &format!("[]{go_struct}"))),
        }
    }

    /// A duration given as a Go duration string or as integer nanoseconds.
    pub(crate) fn duration(&self, name: &str) -> Result<Option<Duration>, DecodeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => crate::godur::parse(s)
                .map(Some)
                .map_err(|e| DecodeError(format!("{}.{name}: {e}", self.go_struct))),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(nanos) => Ok(Some(Duration::from_nanos(nanos))),
                None => Err(DecodeError(format!(
                    "{}.{name}: invalid duration {n}",
                    self.go_struct
                ))),
            },
            Some(other) => Err(self.wrong_type(other, name, "time.Duration")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_match_case_insensitively_and_snake_case() {
        let body = json!({"destination_service_name": "web", "LOCALSERVICEPORT": 8080});
        let fields = Fields::new(&body, "ConnectProxyConfig").unwrap();
        assert_eq!(
            fields.string("DestinationServiceName").unwrap().as_deref(),
            Some("web")
        );
        assert_eq!(fields.int("LocalServicePort").unwrap(), Some(8080));
    }

    #[test]
    fn unknown_fields_are_refused_like_go() {
        let body = json!({"name": "web", "Prot": 80, "Zzz": 1});
        let fields = Fields::new(&body, "ServiceDefinition").unwrap();
        assert_eq!(
            fields.refuse_unknown(&["Name", "Port"]).unwrap_err().0,
            "json: unknown field \"Prot\""
        );
        assert!(fields.refuse_unknown(&["Name", "Prot", "zzz"]).is_ok());
    }

    #[test]
    fn wrong_types_are_named_like_go() {
        let body = json!({"Port": "abc"});
        let fields = Fields::new(&body, "ServiceDefinition").unwrap();
        let err = fields.int("Port").unwrap_err();
        assert_eq!(
            err.0,
            "json: cannot unmarshal string into Go struct field ServiceDefinition.Port of type int"
        );
    }

    #[test]
    fn encodes_with_four_spaces_and_go_escapes() {
        let out = encode(&json!({"Reason": "a => b"}), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n    \"Reason\": \"a =\\u003e b\"\n}"
        );
    }

    #[test]
    fn times_are_rfc3339_like_go() {
        let at = UNIX_EPOCH + Duration::new(1_526_920_408, 0);
        assert_eq!(go_time(at), "2018-05-21T16:33:28Z");
        let at = UNIX_EPOCH + Duration::new(1_526_920_408, 977_155_000);
        assert_eq!(go_time(at), "2018-05-21T16:33:28.977155Z");
    }

    #[test]
    fn empty_body_is_eof() {
        assert_eq!(parse_body(b"").unwrap_err().0, "EOF");
    }
}
