//! An intention write as a client sends it: the body decoded as Consul's `lib.DecodeJSON` reads
//! a `structs.Intention` (Go's `encoding/json`, unknown fields refused), and the two sets of
//! checks Consul 1.10 applies: the legacy ID API's `Intention.Validate` (all problems, as a
//! multierror) and, for writes by name, `ServiceIntentionsConfigEntry.Validate` (the first
//! problem, naming the source's place among the destination's sources).

use std::collections::BTreeMap;

use serde_json::Value;

use super::permissions::{self, Permission};
use super::{IntentionError, WILDCARD};
use crate::json::strict::{each_field, GoField};
use crate::json::{json_kind, DecodeError};

/// `metaMaxKeyPairs`, `metaKeyMaxLength`, `metaValueMaxLength` (`agent/structs/structs.go`).
const META_MAX_PAIRS: usize = 64;
const META_KEY_MAX: usize = 128;
const META_VALUE_MAX: usize = 512;

/// The fields a write supplies (`PUT exact` body or legacy body).
#[derive(Clone, Debug, Default)]
pub(crate) struct IntentionInput {
    pub source_name: String,
    pub destination_name: String,
    pub source_type: String,
    pub action: String,
    pub permissions: Vec<Permission>,
    pub description: String,
    pub meta: BTreeMap<String, String>,
}

/// The fields of `structs.Intention` as its `UnmarshalJSON` wrapper reads them (`Hash`,
/// `CreatedAt` and `UpdatedAt` as plain strings).
const FIELDS: &[&str] = &[
    "ID",
    "Description",
    "SourceNS",
    "SourceName",
    "DestinationNS",
    "DestinationName",
    "SourceType",
    "Action",
    "Permissions",
    "DefaultAddr",
    "DefaultPort",
    "Meta",
    "Precedence",
    "CreatedAt",
    "UpdatedAt",
    "Hash",
    "CreateIndex",
    "ModifyIndex",
];

/// Go's name for the anonymous struct `Intention.UnmarshalJSON` decodes into.
const WRAPPER: &str = "struct { Hash string; CreatedAt string; UpdatedAt string; *structs.Alias }";

impl IntentionInput {
    /// Decodes a request body; the error is Go's text, which each endpoint prefixes its own way.
    pub(crate) fn decode(body: &Value) -> Result<Self, DecodeError> {
        let mut input = IntentionInput::default();
        let object = match body {
            // Go leaves the intention empty; its checks then refuse it.
            Value::Null => return Ok(input),
            Value::Object(object) => object,
            other => {
                return Err(DecodeError(format!(
                    "json: cannot unmarshal {} into Go value of type {WRAPPER}",
                    json_kind(other)
                )))
            }
        };
        each_field(object, FIELDS, |name, value| {
            // The wrapper is anonymous, so Go names no owning struct.
            let at = GoField::top("", name);
            let text = |go_type: &str| at.string(value, go_type);
            match name {
                "SourceName" => set(&mut input.source_name, text("string")?),
                "DestinationName" => set(&mut input.destination_name, text("string")?),
                "SourceType" => set(&mut input.source_type, text("structs.IntentionSourceType")?),
                "Action" => set(&mut input.action, text("structs.IntentionAction")?),
                "Description" => set(&mut input.description, text("string")?),
                "Permissions" => input.permissions = permissions::decode(value, &at)?,
                "Meta" => input.meta = at.string_map(value)?.unwrap_or_default(),
                "DefaultPort" | "Precedence" => {
                    at.integer(value, "int")?;
                }
                "CreateIndex" | "ModifyIndex" => {
                    at.integer(value, "uint64")?;
                }
                // ID, namespaces, DefaultAddr, Hash, CreatedAt, UpdatedAt: strings this
                // single-namespace agent does not keep from a body.
                _ => {
                    text("string")?;
                }
            }
            Ok(())
        })?;
        permissions::normalize(&mut input.permissions);
        Ok(input)
    }

    /// `ServiceIntentionsConfigEntry.Validate` for a write by name (`PUT .../exact`), where
    /// `source` is this source's index among the destination's sources (Consul names it).
    pub(crate) fn validate_by_name(&self, source: usize) -> Result<(), IntentionError> {
        let bad = |m: String| Err(IntentionError::new(500, m));
        if self.destination_name.is_empty() {
            return bad("Name is required".into());
        }
        if partial_wildcard(&self.destination_name) {
            return bad("Name: wildcard character '*' cannot be used with partial values".into());
        }
        let at = format!("Sources[{source}]");
        if self.source_name.is_empty() {
            return bad(format!("{at}.Name is required"));
        }
        if partial_wildcard(&self.source_name) {
            return bad(format!(
                "{at}.Name: wildcard character '*' cannot be used with partial values"
            ));
        }
        if self.description.len() > META_VALUE_MAX {
            return bad(format!(
                "{at}.Description exceeds maximum length {META_VALUE_MAX}"
            ));
        }
        let l7 = !self.permissions.is_empty();
        if !l7 && !matches!(self.action.as_str(), "allow" | "deny") {
            return bad(format!("{at}.Action must be set to 'allow' or 'deny'"));
        }
        if l7 && !self.action.is_empty() {
            return bad(format!(
                "{at}.Action must be omitted if Permissions are specified"
            ));
        }
        if l7 && self.destination_name == WILDCARD {
            return bad(format!(
                "{at}.Permissions cannot be specified on intentions with wildcarded destinations"
            ));
        }
        if !self.source_type.is_empty() && self.source_type != "consul" {
            return bad(format!("{at}.Type must be set to 'consul'"));
        }
        permissions::validate(&self.permissions, source).map_err(|m| IntentionError::new(500, m))
    }

    /// `Intention.Validate` for the legacy ID API: every problem, as a multierror (500).
    pub(crate) fn validate_legacy(&self) -> Result<(), IntentionError> {
        let mut errors = Vec::new();
        if self.source_name.is_empty() {
            errors.push("SourceName must be set".to_string());
        }
        if self.destination_name.is_empty() {
            errors.push("DestinationName must be set".to_string());
        }
        for (name, value) in [
            ("SourceName", &self.source_name),
            ("DestinationName", &self.destination_name),
        ] {
            if partial_wildcard(value) {
                errors.push(format!(
                    "{name}: wildcard character '*' cannot be used with partial values"
                ));
            }
        }
        if self.description.len() > META_VALUE_MAX {
            errors.push(format!(
                "Description exceeds maximum length {META_VALUE_MAX}"
            ));
        }
        if self.meta.len() > META_MAX_PAIRS {
            errors.push(format!(
                "Meta exceeds maximum element count {META_MAX_PAIRS}"
            ));
        }
        for (key, value) in &self.meta {
            if key.len() > META_KEY_MAX {
                errors.push(format!(
                    "Meta key {key:?} exceeds maximum length {META_KEY_MAX}"
                ));
            }
            if value.len() > META_VALUE_MAX {
                errors.push(format!(
                    "Meta value for key {key:?} exceeds maximum length {META_VALUE_MAX}"
                ));
            }
        }
        if !matches!(self.action.as_str(), "allow" | "deny") {
            errors.push("Action must be set to 'allow' or 'deny'".to_string());
        }
        if !self.permissions.is_empty() {
            errors.push("Permissions must not be set when using the legacy APIs".to_string());
        }
        if !self.source_type.is_empty() && self.source_type != "consul" {
            errors.push("SourceType must be set to 'consul'".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(IntentionError::new(500, crate::goerr::multierror(&errors)))
        }
    }
}

fn set(target: &mut String, value: Option<String>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// A name with a `*` that is not just `*`.
fn partial_wildcard(name: &str) -> bool {
    name != WILDCARD && name.contains('*')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decoded(body: Value) -> IntentionInput {
        IntentionInput::decode(&body).unwrap()
    }

    #[test]
    fn bodies_decode_like_go() {
        let input = decoded(json!({"action": "allow", "sourcename": "web", "Meta": {"k": "v"}}));
        assert_eq!(
            (input.action.as_str(), input.source_name.as_str()),
            ("allow", "web")
        );
        let cases = [
            (json!({"Action": 5}), "json: cannot unmarshal number into Go struct field .Action of type structs.IntentionAction"),
            (json!({"Description": 5}), "json: cannot unmarshal number into Go struct field .Description of type string"),
            (json!({"Bogus": 1, "Action": "allow"}), "json: unknown field \"Bogus\""),
            (json!({"source_name": "web"}), "json: unknown field \"source_name\""),
            (json!([]), "json: cannot unmarshal array into Go value of type struct { Hash string; CreatedAt string; UpdatedAt string; *structs.Alias }"),
        ];
        for (body, want) in cases {
            assert_eq!(IntentionInput::decode(&body).unwrap_err().0, want, "{body}");
        }
    }

    #[test]
    fn writes_by_name_name_the_source_index() {
        let mut input = decoded(json!({"Action": "allow",
            "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}));
        input.source_name = "web".into();
        input.destination_name = "db".into();
        assert_eq!(
            input.validate_by_name(1).unwrap_err().message,
            "Sources[1].Action must be omitted if Permissions are specified"
        );
        input.action.clear();
        assert!(input.validate_by_name(0).is_ok());
        input.destination_name = "*".into();
        assert_eq!(
            input.validate_by_name(0).unwrap_err().message,
            "Sources[0].Permissions cannot be specified on intentions with wildcarded destinations"
        );
    }

    #[test]
    fn legacy_writes_list_every_problem() {
        let input = decoded(json!({"SourceName": "web", "DestinationName": "d*",
            "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}));
        assert_eq!(
            input.validate_legacy().unwrap_err().message,
            "3 errors occurred:\n\t* DestinationName: wildcard character '*' cannot be used with partial values\n\t* Action must be set to 'allow' or 'deny'\n\t* Permissions must not be set when using the legacy APIs\n\n"
        );
        let missing = decoded(json!({"SourceName": "web", "Action": "allow"}));
        assert_eq!(
            missing.validate_legacy().unwrap_err().message,
            "1 error occurred:\n\t* DestinationName must be set\n\n"
        );
    }
}
