//! A prepared query definition as `POST /v1/query` and `PUT /v1/query/:id` send it
//! (`structs.PreparedQuery`), decoded the way Consul 1.10 decodes it (case-insensitive keys,
//! unknown fields refused, Go's type errors) and checked the way its `parseQuery` checks it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::QueryError;
use crate::json::{DecodeError, Fields};

/// `structs.PreparedQuery` without its ID and indexes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Definition {
    /// The `ID` the body carried: must be empty on create, ignored on update.
    pub id: String,
    pub name: String,
    pub session: String,
    pub token: String,
    pub template: Template,
    pub service: ServiceQuery,
    pub dns_ttl: String,
}

/// `structs.QueryTemplateOptions`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Template {
    pub kind: String,
    pub regexp: String,
    pub remove_empty_tags: bool,
}

/// `structs.ServiceQuery`: which instances an execution returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ServiceQuery {
    pub service: String,
    pub failover_nearest_n: i64,
    pub failover_datacenters: Option<Vec<String>>,
    pub only_passing: bool,
    pub ignore_check_ids: Option<Vec<String>>,
    pub near: String,
    pub tags: Option<Vec<String>>,
    pub node_meta: Option<BTreeMap<String, String>>,
    pub service_meta: Option<BTreeMap<String, String>>,
    pub connect: bool,
}

/// What Consul shows instead of a token to callers who may not see it; refused as input.
const REDACTED_TOKEN: &str = "<hidden>";

/// How Go names a field of the body (`PreparedQuery.Name`) and of its `Service`
/// (`ServiceQuery.Service.Tags`) in a type error.
const TOP: &str = "PreparedQuery";
const SERVICE: &str = "ServiceQuery.Service";

const QUERY_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Session",
    "Token",
    "Template",
    "Service",
    "DNS",
    "CreateIndex",
    "ModifyIndex",
];
const SERVICE_FIELDS: &[&str] = &[
    "Service",
    "Failover",
    "OnlyPassing",
    "IgnoreCheckIDs",
    "Near",
    "Tags",
    "NodeMeta",
    "ServiceMeta",
    "Connect",
];

impl Definition {
    /// Decodes a request body; errors are Consul's `Request decode failed: ...` (400).
    pub(crate) fn decode(body: &[u8]) -> Result<Self, QueryError> {
        let value = crate::json::parse_body(body).map_err(decode_failed)?;
        Self::from_value(&value).map_err(decode_failed)
    }

    fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let f = Fields::new(value, "PreparedQuery")?;
        f.refuse_unknown(QUERY_FIELDS)?;
        let template = match nested(
            &f,
            (TOP, "Template"),
            ("QueryTemplateOptions", "QueryTemplateOptions.Template"),
        )? {
            None => Template::default(),
            Some(t) => {
                t.refuse_unknown(&["Type", "Regexp", "RemoveEmptyTags"])?;
                Template {
                    kind: t.string_or_default("Type")?,
                    regexp: t.string_or_default("Regexp")?,
                    remove_empty_tags: t.boolean("RemoveEmptyTags")?,
                }
            }
        };
        let service = match nested(&f, (TOP, "Service"), ("ServiceQuery", SERVICE))? {
            None => ServiceQuery::default(),
            Some(s) => decode_service(&s)?,
        };
        let dns_ttl = match nested(&f, (TOP, "DNS"), ("QueryDNSOptions", "QueryDNSOptions.DNS"))? {
            None => String::new(),
            Some(d) => {
                d.refuse_unknown(&["TTL"])?;
                d.string_or_default("TTL")?
            }
        };
        Ok(Definition {
            id: f.string_or_default("ID")?,
            name: f.string_or_default("Name")?,
            session: f.string_or_default("Session")?,
            token: f.string_or_default("Token")?,
            template,
            service,
            dns_ttl,
        })
    }

    /// Consul's `parseQuery`, in its order; the text follows `Invalid prepared query: ` (500).
    pub(crate) fn validate(&self) -> Result<(), QueryError> {
        let invalid = |why: String| QueryError::new(500, format!("Invalid prepared query: {why}"));
        if self.name.is_empty() && self.template.kind.is_empty() && self.session.is_empty() {
            return Err(invalid("Must be bound to a session".into()));
        }
        if self.token == REDACTED_TOKEN {
            return Err(invalid(format!(
                "Bad Token '{}', it looks like a query definition with a redacted token was submitted",
                self.token
            )));
        }
        let s = &self.service;
        if s.service.is_empty() {
            return Err(invalid("Must provide a Service name to query".into()));
        }
        if s.failover_nearest_n < 0 {
            return Err(invalid(format!(
                "Bad NearestN '{}', must be >= 0",
                s.failover_nearest_n
            )));
        }
        // Consul 1.10 checks the node-meta filter only; any service-meta filter is stored.
        if let Some(meta) = &s.node_meta {
            validate_meta(meta).map_err(invalid)?;
        }
        if !self.dns_ttl.is_empty() {
            validate_ttl(&self.dns_ttl).map_err(invalid)?;
        }
        Ok(())
    }
}

fn decode_service(s: &Fields<'_>) -> Result<ServiceQuery, DecodeError> {
    s.refuse_unknown(SERVICE_FIELDS)?;
    let (nearest_n, datacenters) = match nested(
        s,
        (SERVICE, "Failover"),
        (
            "QueryDatacenterOptions",
            "QueryDatacenterOptions.Service.Failover",
        ),
    )? {
        None => (0, None),
        Some(fo) => {
            fo.refuse_unknown(&["NearestN", "Datacenters"])?;
            (fo.int("NearestN")?.unwrap_or(0), fo.strings("Datacenters")?)
        }
    };
    Ok(ServiceQuery {
        service: s.string_or_default("Service")?,
        failover_nearest_n: nearest_n,
        failover_datacenters: datacenters,
        only_passing: s.boolean("OnlyPassing")?,
        ignore_check_ids: s.strings("IgnoreCheckIDs")?,
        near: s.string_or_default("Near")?,
        tags: s.strings("Tags")?,
        node_meta: s.string_map("NodeMeta")?,
        service_meta: s.string_map("ServiceMeta")?,
        connect: s.boolean("Connect")?,
    })
}

/// The struct-valued field `name` of an object Go names `parent` (see [`TOP`]). A value that
/// is not an object is Go's type error naming `structs.<go_type>`; errors inside it name their
/// fields after `inner` (`<go_type>.<path from the body>`).
fn nested<'a>(
    fields: &Fields<'a>,
    (parent, name): (&'static str, &'static str),
    (go_type, inner): (&'static str, &'static str),
) -> Result<Option<Fields<'a>>, DecodeError> {
    match fields.raw(name) {
        None => Ok(None),
        Some(value @ Value::Object(_)) => Fields::new(value, inner).map(Some),
        Some(other) => Err(DecodeError(format!(
            "json: cannot unmarshal {} into Go struct field {parent}.{name} of type structs.{go_type}",
            crate::json::json_kind(other),
        ))),
    }
}

fn decode_failed(e: DecodeError) -> QueryError {
    QueryError::new(400, format!("Request decode failed: {e}"))
}

/// `structs.ValidateMetadata` for query filters (reserved `consul-` keys allowed).
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    const MAX_PAIRS: usize = 64;
    const MAX_KEY: usize = 128;
    const MAX_VALUE: usize = 512;
    if meta.len() > MAX_PAIRS {
        return Err(format!(
            "Node metadata cannot contain more than {MAX_PAIRS} key/value pairs"
        ));
    }
    for (key, value) in meta {
        let why = if key.is_empty() {
            "Key cannot be blank".to_string()
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            "Key contains invalid characters".to_string()
        } else if key.len() > MAX_KEY {
            format!("Key is too long (limit: {MAX_KEY} characters)")
        } else if value.len() > MAX_VALUE {
            format!("Value is too long (limit: {MAX_VALUE} characters)")
        } else {
            continue;
        };
        return Err(format!(
            "Couldn't load metadata pair ('{key}', '{value}'): {why}"
        ));
    }
    Ok(())
}

/// `parseDNS`: a Go duration, not negative.
fn validate_ttl(ttl: &str) -> Result<(), String> {
    let negative = ttl.starts_with('-');
    let magnitude = ttl.trim_start_matches(['-', '+']);
    match crate::godur::parse(magnitude) {
        Err(_) => Err(format!(
            "Bad DNS TTL '{ttl}': time: invalid duration {ttl:?}"
        )),
        Ok(d) if negative && !d.is_zero() => Err(format!(
            "DNS TTL '{}', must be >=0",
            -(d.as_nanos() as i128)
        )),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<Definition, QueryError> {
        Definition::decode(body.as_bytes())
    }

    #[test]
    fn keys_match_any_case_and_unknown_ones_are_refused() {
        let d = decode(r#"{"name":"db","service":{"service":"db","onlypassing":true}}"#).unwrap();
        assert_eq!((d.name.as_str(), d.service.only_passing), ("db", true));
        let e = decode(r#"{"Name":"x","Service":{"Service":"db","Bogus":1}}"#).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "Request decode failed: json: unknown field \"Bogus\"")
        );
    }

    #[test]
    fn type_errors_name_the_go_field_path() {
        let e =
            decode(r#"{"Name":"x","Service":{"Service":"db","OnlyPassing":"yes"}}"#).unwrap_err();
        assert_eq!(
            e.message,
            "Request decode failed: json: cannot unmarshal string into Go struct field \
             ServiceQuery.Service.OnlyPassing of type bool"
        );
    }

    #[test]
    fn nested_type_errors_name_go_types() {
        let message = |body: &str| decode(body).unwrap_err().message;
        assert_eq!(
            message(r#"{"Name":"x","Service":5}"#),
            "Request decode failed: json: cannot unmarshal number into Go struct field \
             PreparedQuery.Service of type structs.ServiceQuery"
        );
        assert_eq!(
            message(r#"{"Name":"x","Service":{"Service":"web","Failover":{"NearestN":"a"}}}"#),
            "Request decode failed: json: cannot unmarshal string into Go struct field \
             QueryDatacenterOptions.Service.Failover.NearestN of type int"
        );
        assert_eq!(
            message(r#"{"Name":"x","DNS":{"TTL":5}}"#),
            "Request decode failed: json: cannot unmarshal number into Go struct field \
             QueryDNSOptions.DNS.TTL of type string"
        );
    }

    #[test]
    fn validation_follows_parse_query_order() {
        let check = |body: &str| decode(body).unwrap().validate().unwrap_err().message;
        assert_eq!(
            check(r#"{}"#),
            "Invalid prepared query: Must be bound to a session"
        );
        assert_eq!(
            check(r#"{"Name":"x"}"#),
            "Invalid prepared query: Must provide a Service name to query"
        );
        assert_eq!(
            check(r#"{"Name":"x","Service":{"Service":"db"},"DNS":{"TTL":"-5s"}}"#),
            "Invalid prepared query: DNS TTL '-5000000000', must be >=0"
        );
        assert_eq!(
            check(r#"{"Name":"x","Service":{"Service":"db","NodeMeta":{"a b":"v"}}}"#),
            "Invalid prepared query: Couldn't load metadata pair ('a b', 'v'): \
             Key contains invalid characters"
        );
        let service_meta = r#"{"Name":"x","Service":{"Service":"db","ServiceMeta":{"":"v"}}}"#;
        assert!(decode(service_meta).unwrap().validate().is_ok());
        let ok = decode(r#"{"Name":"x","Service":{"Service":"db"},"DNS":{"TTL":"10s"}}"#);
        assert!(ok.unwrap().validate().is_ok());
    }
}
