//! Go's `encoding/json` with `DisallowUnknownFields`, as Consul's `lib.DecodeJSON` reads the
//! intention bodies: keys match Go field names case-insensitively (no snake_case aliases), an
//! unknown key is `json: unknown field "k"`, `null` leaves a field unset, and a value of the
//! wrong type is `json: cannot unmarshal number into Go struct field Owner.Path.To.Field of type
//! string`, where `Owner` is the innermost Go struct and the path runs from the top (array
//! indexes left out, as Go does). Objects are walked in document order and the first problem is
//! reported, which is the one Go reports.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{json_kind, DecodeError};

/// One field being decoded: the Go struct that owns it and its dotted path from the top.
#[derive(Clone, Debug)]
pub(crate) struct GoField {
    owner: &'static str,
    path: String,
}

impl GoField {
    /// The field `name` of the top-level struct `owner` (`""` for an anonymous struct, as
    /// Consul's `UnmarshalJSON` wrappers are).
    pub(crate) fn top(owner: &'static str, name: &str) -> Self {
        GoField {
            owner,
            path: name.to_string(),
        }
    }

    /// The field `name` of the struct `owner` that this field holds.
    pub(crate) fn child(&self, owner: &'static str, name: &str) -> Self {
        GoField {
            owner,
            path: format!("{}.{name}", self.path),
        }
    }

    /// Go's `UnmarshalTypeError` for `found` where a `go_type` was expected.
    pub(crate) fn type_error(&self, found: &Value, go_type: &str) -> DecodeError {
        self.error(json_kind(found), go_type)
    }

    fn error(&self, what: &str, go_type: &str) -> DecodeError {
        DecodeError(format!(
            "json: cannot unmarshal {what} into Go struct field {}.{} of type {go_type}",
            self.owner, self.path
        ))
    }

    /// A Go string (or a named string type, `go_type`); `None` for `null`.
    pub(crate) fn string(
        &self,
        value: &Value,
        go_type: &str,
    ) -> Result<Option<String>, DecodeError> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(self.type_error(other, go_type)),
        }
    }

    pub(crate) fn boolean(&self, value: &Value) -> Result<Option<bool>, DecodeError> {
        match value {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            other => Err(self.type_error(other, "bool")),
        }
    }

    /// A Go `int` or `uint64` (`go_type`): a fraction or a sign that does not fit is Go's
    /// `cannot unmarshal number 1.5 into ...`.
    pub(crate) fn integer(
        &self,
        value: &Value,
        go_type: &str,
    ) -> Result<Option<i128>, DecodeError> {
        match value {
            Value::Null => Ok(None),
            Value::Number(n) => {
                let fits = match go_type {
                    "uint64" => n.as_u64().map(i128::from),
                    _ => n.as_i64().map(i128::from),
                };
                fits.map(Some)
                    .ok_or_else(|| self.error(&format!("number {n}"), go_type))
            }
            other => Err(self.type_error(other, go_type)),
        }
    }

    pub(crate) fn strings(&self, value: &Value) -> Result<Option<Vec<String>>, DecodeError> {
        match value {
            Value::Null => Ok(None),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    // A null element is Go's zero value.
                    Value::Null => Ok(String::new()),
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.type_error(other, "string")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            other => Err(self.type_error(other, "[]string")),
        }
    }

    pub(crate) fn string_map(
        &self,
        value: &Value,
    ) -> Result<Option<BTreeMap<String, String>>, DecodeError> {
        match value {
            Value::Null => Ok(None),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    // Go stores a null element as the zero value.
                    Value::Null => Ok((k.clone(), String::new())),
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(self.type_error(other, "string")),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(Some),
            other => Err(self.type_error(other, "map[string]string")),
        }
    }
}

/// Walks the keys of a Go struct's JSON object in document order: each key that names one of
/// `fields` (case-insensitively) is handed to `on_field` with the field's Go name; any other
/// key is Go's `json: unknown field`.
pub(crate) fn each_field<'v>(
    object: &'v Map<String, Value>,
    fields: &[&'static str],
    mut on_field: impl FnMut(&'static str, &'v Value) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    for (key, value) in object {
        let field = fields
            .iter()
            .find(|f| **f == key.as_str())
            .or_else(|| fields.iter().find(|f| f.eq_ignore_ascii_case(key)));
        match field {
            Some(field) => on_field(field, value)?,
            None => return Err(DecodeError(format!("json: unknown field {key:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn type_errors_name_the_owner_and_the_path() {
        let field = GoField::top("", "Permissions").child("IntentionPermission", "Action");
        let err = field
            .string(&json!(5), "structs.IntentionAction")
            .unwrap_err();
        assert_eq!(
            err.0,
            "json: cannot unmarshal number into Go struct field IntentionPermission.Permissions.Action of type structs.IntentionAction"
        );
        let port = GoField::top("", "DefaultPort");
        assert_eq!(
            port.integer(&json!(1.5), "int").unwrap_err().0,
            "json: cannot unmarshal number 1.5 into Go struct field .DefaultPort of type int"
        );
        assert_eq!(port.integer(&json!(null), "int").unwrap(), None);
    }

    #[test]
    fn unknown_keys_are_refused_and_case_is_ignored() {
        let body = json!({"action": "allow", "Bogus": 1});
        let mut seen = Vec::new();
        let err = each_field(body.as_object().unwrap(), &["Action"], |name, _| {
            seen.push(name);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.0, "json: unknown field \"Bogus\"");
        assert_eq!(seen, ["Action"]);
    }
}
