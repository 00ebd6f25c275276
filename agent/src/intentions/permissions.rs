//! L7 intention permissions (`[]*structs.IntentionPermission`): decoded from a request body as
//! Go's `encoding/json` does, normalised and checked as `ServiceIntentionsConfigEntry` does
//! (`agent/structs/config_entry_intentions.go`), with its texts. `http::views` renders them.

use serde_json::Value;

use crate::json::strict::{each_field, GoField};
use crate::json::DecodeError;

/// One permission: an action and what HTTP requests it applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Permission {
    /// `allow` or `deny`.
    pub action: String,
    pub http: Option<HttpPermission>,
}

/// `structs.IntentionHTTPPermission`: at most one path match, header matches, methods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HttpPermission {
    pub path_exact: String,
    pub path_prefix: String,
    pub path_regex: String,
    pub header: Vec<HeaderPermission>,
    pub methods: Vec<String>,
}

/// `structs.IntentionHTTPHeaderPermission`: a header name and exactly one way to match it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderPermission {
    pub name: String,
    pub present: bool,
    pub exact: String,
    pub prefix: String,
    pub suffix: String,
    pub regex: String,
    pub invert: bool,
}

/// The methods Consul accepts (`isValidHTTPMethod`: Go's `net/http` method constants).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

/// Decodes the `Permissions` value of an intention body (`field` names it for Go's error
/// texts); `null` is no permissions. A `null` element decodes as an empty permission, which
/// validation then refuses (Consul 1.10.4 stores a nil pointer and its leader panics).
pub(crate) fn decode(value: &Value, field: &GoField) -> Result<Vec<Permission>, DecodeError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(field.type_error(other, "[]*structs.IntentionPermission")),
    };
    items
        .iter()
        .map(|item| match item {
            Value::Null => Ok(Permission::default()),
            Value::Object(_) => decode_permission(item, field),
            other => Err(field.type_error(other, "structs.IntentionPermission")),
        })
        .collect()
}

fn decode_permission(value: &Value, field: &GoField) -> Result<Permission, DecodeError> {
    const OWNER: &str = "IntentionPermission";
    let mut permission = Permission::default();
    let object = value.as_object().expect("decode() passes objects only");
    each_field(object, &["Action", "HTTP"], |name, v| {
        let at = field.child(OWNER, name);
        match name {
            "Action" => {
                if let Some(action) = at.string(v, "structs.IntentionAction")? {
                    permission.action = action;
                }
            }
            _ => match v {
                Value::Null => permission.http = None,
                Value::Object(_) => permission.http = Some(decode_http(v, &at)?),
                other => return Err(at.type_error(other, "structs.IntentionHTTPPermission")),
            },
        }
        Ok(())
    })?;
    Ok(permission)
}

fn decode_http(value: &Value, field: &GoField) -> Result<HttpPermission, DecodeError> {
    const OWNER: &str = "IntentionHTTPPermission";
    const FIELDS: &[&str] = &["PathExact", "PathPrefix", "PathRegex", "Header", "Methods"];
    let mut http = HttpPermission::default();
    let object = value
        .as_object()
        .expect("decode_permission() passes objects only");
    each_field(object, FIELDS, |name, v| {
        let at = field.child(OWNER, name);
        let text = |target: &mut String| -> Result<(), DecodeError> {
            if let Some(s) = at.string(v, "string")? {
                *target = s;
            }
            Ok(())
        };
        match name {
            "PathExact" => text(&mut http.path_exact)?,
            "PathPrefix" => text(&mut http.path_prefix)?,
            "PathRegex" => text(&mut http.path_regex)?,
            "Methods" => http.methods = at.strings(v)?.unwrap_or_default(),
            _ => http.header = decode_headers(v, &at)?,
        }
        Ok(())
    })?;
    Ok(http)
}

fn decode_headers(value: &Value, field: &GoField) -> Result<Vec<HeaderPermission>, DecodeError> {
    const OWNER: &str = "IntentionHTTPHeaderPermission";
    const FIELDS: &[&str] = &[
        "Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert",
    ];
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(field.type_error(other, "[]structs.IntentionHTTPHeaderPermission")),
    };
    let mut headers = Vec::new();
    for item in items {
        let mut header = HeaderPermission::default();
        match item {
            Value::Null => {}
            Value::Object(object) => each_field(object, FIELDS, |name, v| {
                let at = field.child(OWNER, name);
                match name {
                    "Present" => header.present = at.boolean(v)?.unwrap_or(header.present),
                    "Invert" => header.invert = at.boolean(v)?.unwrap_or(header.invert),
                    _ => {
                        let target = match name {
                            "Name" => &mut header.name,
                            "Exact" => &mut header.exact,
                            "Prefix" => &mut header.prefix,
                            "Suffix" => &mut header.suffix,
                            _ => &mut header.regex,
                        };
                        if let Some(s) = at.string(v, "string")? {
                            *target = s;
                        }
                    }
                }
                Ok(())
            })?,
            other => return Err(field.type_error(other, "structs.IntentionHTTPHeaderPermission")),
        }
        headers.push(header);
    }
    Ok(headers)
}

/// `normalize`: methods upper-cased.
pub(crate) fn normalize(permissions: &mut [Permission]) {
    for http in permissions.iter_mut().filter_map(|p| p.http.as_mut()) {
        for method in &mut http.methods {
            *method = method.to_ascii_uppercase();
        }
    }
}

/// The per-permission checks of `ServiceIntentionsConfigEntry.validate` for the source at
/// `source` (its index among the destination's sources), in Consul's order and words.
pub(crate) fn validate(permissions: &[Permission], source: usize) -> Result<(), String> {
    for (j, permission) in permissions.iter().enumerate() {
        let prefix = format!("Sources[{source}].Permissions[{j}]");
        if !matches!(permission.action.as_str(), "allow" | "deny") {
            return Err(format!("{prefix}.Action must be set to 'allow' or 'deny'"));
        }
        let Some(http) = &permission.http else {
            return Err(format!("{prefix}.HTTP is required"));
        };
        let prefix = format!("{prefix}.HTTP");
        let mut path_parts = 0;
        for (name, path) in [
            ("PathExact", &http.path_exact),
            ("PathPrefix", &http.path_prefix),
        ] {
            if !path.is_empty() {
                path_parts += 1;
                if !path.starts_with('/') {
                    return Err(format!("{prefix}.{name} doesn't start with '/': {path:?}"));
                }
            }
        }
        if !http.path_regex.is_empty() {
            path_parts += 1;
        }
        if path_parts > 1 {
            return Err(format!(
                "{prefix} should only contain at most one of PathExact, PathPrefix, or PathRegex"
            ));
        }
        let mut parts = path_parts;
        for (k, header) in http.header.iter().enumerate() {
            if header.name.is_empty() {
                return Err(format!("{prefix}.Header[{k}] missing required Name field"));
            }
            let matches = [
                header.present,
                !header.exact.is_empty(),
                !header.regex.is_empty(),
                !header.prefix.is_empty(),
                !header.suffix.is_empty(),
            ];
            if matches.iter().filter(|m| **m).count() != 1 {
                return Err(format!(
                    "{prefix}.Header[{k}] should only contain one of Present, Exact, Prefix, Suffix, or Regex"
                ));
            }
            parts += 1;
        }
        if !http.methods.is_empty() {
            let mut seen: Vec<&str> = Vec::new();
            for method in &http.methods {
                if !METHODS.contains(&method.as_str()) {
                    return Err(format!(
                        "{prefix}.Methods contains an invalid method {method:?}"
                    ));
                }
                if seen.contains(&method.as_str()) {
                    return Err(format!(
                        "{prefix}.Methods contains {method:?} more than once"
                    ));
                }
                seen.push(method);
            }
            parts += 1;
        }
        if parts == 0 {
            return Err(format!("{prefix} should not be empty"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field() -> GoField {
        GoField::top("", "Permissions")
    }

    fn checked(value: Value) -> Result<(), String> {
        let mut permissions = decode(&value, &field()).map_err(|e| e.0)?;
        normalize(&mut permissions);
        validate(&permissions, 1)
    }

    #[test]
    fn decodes_any_case_and_renders_in_go_order() {
        let body = json!([{"action": "allow", "http": {
            "methods": ["get"], "header": [{"invert": true, "regex": "b", "name": "a"}],
            "pathPrefix": "/x"}}]);
        let mut permissions = decode(&body, &field()).unwrap();
        normalize(&mut permissions);
        assert_eq!(permissions[0].http.as_ref().unwrap().methods, ["GET"]);
        let text = String::from_utf8(crate::json::encode(
            &crate::http::views::permissions(&permissions),
            false,
        ))
        .unwrap();
        let compact: String = text.split_whitespace().collect();
        assert_eq!(
            compact,
            r#"[{"Action":"allow","HTTP":{"PathPrefix":"/x","Header":[{"Name":"a","Regex":"b","Invert":true}],"Methods":["GET"]}}]"#
        );
    }

    #[test]
    fn decode_errors_read_like_go() {
        let cases = [
            (json!({}), "json: cannot unmarshal object into Go struct field .Permissions of type []*structs.IntentionPermission"),
            (json!([5]), "json: cannot unmarshal number into Go struct field .Permissions of type structs.IntentionPermission"),
            (json!([{"HTTP": "x"}]), "json: cannot unmarshal string into Go struct field IntentionPermission.Permissions.HTTP of type structs.IntentionHTTPPermission"),
            (json!([{"Action": "allow", "HTTP": {"Header": [{"Name": "x", "Present": "yes"}]}}]), "json: cannot unmarshal string into Go struct field IntentionHTTPHeaderPermission.Permissions.HTTP.Header.Present of type bool"),
            (json!([{"Action": "allow", "HTTP": {"Methods": "GET"}}]), "json: cannot unmarshal string into Go struct field IntentionHTTPPermission.Permissions.HTTP.Methods of type []string"),
            (json!([{"Action": "allow", "HTTP": {"path_prefix": "/x"}}]), "json: unknown field \"path_prefix\""),
            (json!([{"Action": "allow", "Bogus": 1}]), "json: unknown field \"Bogus\""),
        ];
        for (body, want) in cases {
            assert_eq!(decode(&body, &field()).unwrap_err().0, want, "{body}");
        }
    }

    #[test]
    fn validation_follows_consul_order_and_words() {
        let cases = [
            (json!([{"Action": "maybe", "HTTP": {"PathPrefix": "/x"}}]), "Sources[1].Permissions[0].Action must be set to 'allow' or 'deny'"),
            (json!([null]), "Sources[1].Permissions[0].Action must be set to 'allow' or 'deny'"),
            (json!([{"Action": "allow"}]), "Sources[1].Permissions[0].HTTP is required"),
            (json!([{"Action": "allow", "HTTP": {}}]), "Sources[1].Permissions[0].HTTP should not be empty"),
            (json!([{"Action": "allow", "HTTP": {"PathExact": "x"}}]), "Sources[1].Permissions[0].HTTP.PathExact doesn't start with '/': \"x\""),
            (json!([{"Action": "allow", "HTTP": {"PathPrefix": "x"}}]), "Sources[1].Permissions[0].HTTP.PathPrefix doesn't start with '/': \"x\""),
            (json!([{"Action": "allow", "HTTP": {"PathPrefix": "/x", "PathRegex": ".*"}}]), "Sources[1].Permissions[0].HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex"),
            (json!([{"Action": "allow", "HTTP": {"Header": [{"Exact": "x"}]}}]), "Sources[1].Permissions[0].HTTP.Header[0] missing required Name field"),
            (json!([{"Action": "allow", "HTTP": {"Header": [{"Name": "x"}]}}]), "Sources[1].Permissions[0].HTTP.Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex"),
            (json!([{"Action": "allow", "HTTP": {"Header": [{"Name": "x", "Present": true, "Prefix": "a"}]}}]), "Sources[1].Permissions[0].HTTP.Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex"),
            (json!([{"Action": "allow", "HTTP": {"Methods": ["GET", "FETCH"]}}]), "Sources[1].Permissions[0].HTTP.Methods contains an invalid method \"FETCH\""),
            (json!([{"Action": "allow", "HTTP": {"Methods": ["GET", "get"]}}]), "Sources[1].Permissions[0].HTTP.Methods contains \"GET\" more than once"),
            (json!([{"Action": "allow", "HTTP": {"Methods": ["GET"]}}, {"Action": "deny", "HTTP": {"PathExact": "nope"}}]), "Sources[1].Permissions[1].HTTP.PathExact doesn't start with '/': \"nope\""),
        ];
        for (body, want) in cases {
            assert_eq!(checked(body.clone()).unwrap_err(), want, "{body}");
        }
        let good = json!([
            {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
            {"Action": "allow", "HTTP": {"PathExact": "/", "Methods": ["GET"], "Header": [{"Name": "x-debug", "Present": true}]}},
            {"Action": "allow", "HTTP": {"PathRegex": "^/v[0-9]+/", "Header": [{"Name": "a", "Suffix": "z", "Invert": true}]}},
        ]);
        assert_eq!(checked(good), Ok(()));
    }
}
