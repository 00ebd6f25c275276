//! `/v1/config`: `PUT` a config entry (with `?cas=`), and below `/v1/config/` `GET` one
//! (`:kind/:name`, blocking) or a kind's list (`:kind`, blocking), and `DELETE :kind/:name`,
//! with the texts and statuses of Consul 1.10's `agent/config_endpoint.go`. The JSON shape of
//! an entry (`structs.ServiceConfigEntry`, `structs.ProxyConfigEntry`) is built here too.

use serde_json::Value;

use super::acl;
use super::views::Obj;
use super::{ApiError, Reply, Request, Result};
use crate::blocking;
use crate::config_entries::{self, ConfigEntry, Expose, Kind, KindError};
use crate::state::{Agent, State};

/// `PUT /v1/config[?cas=N]`: `true` when written, `false` when the check-and-set did not hold.
pub(crate) fn apply(agent: &Agent, req: &Request) -> Result {
    let decoding_failed =
        |e: String| ApiError::new(400, format!("Bad request: Request decoding failed: {e}"));
    let body = req.json().map_err(|e| decoding_failed(e.0))?;
    let mut entry = config_entries::decode(&body).map_err(|e| decoding_failed(e.0))?;
    let cas = match req.param("cas").filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => Some(parse_uint(text).map_err(|e| ApiError::new(500, e))?),
    };
    entry.normalize_and_validate()?;
    // `CanWrite` (service:write, or operator:write for proxy-defaults), after validation.
    acl::require_bare(agent, req)?;
    let written = agent.write(|state, tx| {
        let l7 = state.intentions.l7_destinations();
        state.config.apply(entry, cas, &l7, tx)
    })?;
    Ok(Reply::json(req, &Value::Bool(written)))
}

/// `GET` and `DELETE` below `/v1/config/` (`rest` is what follows it).
pub(crate) async fn specific(agent: &Agent, req: &Request, rest: &str) -> Result {
    let (kind, name) = match rest.split_once('/') {
        Some((kind, name)) => (kind, Some(name)),
        None => (rest, None),
    };
    if req.method == http::Method::DELETE {
        return delete(agent, req, kind, name);
    }
    let (index, wait) = req.blocking()?;
    let Some(name) = name else {
        return list(agent, req, kind, index, wait).await;
    };
    let kind = parse_kind(kind, 500)?;
    match kind {
        Kind::ServiceDefaults => acl::require_bare(agent, req)?,
        // Anyone may read proxy-defaults (`ProxyConfigEntry.CanRead`); a token must exist.
        Kind::ProxyDefaults => {
            acl::may_read(agent, req)?;
        }
    }
    let (index, found) =
        blocking::block_on_index(agent, index, wait, State::config_entries_index, |state| {
            state.config.get(kind, name).map(entry_json)
        })
        .await;
    match found {
        Some(body) => Ok(Reply::json(req, &body).with_index(index)),
        None => Err(with_query_meta(
            ApiError::new(
                404,
                format!("Config entry not found for {:?} / {name:?}", kind.as_str()),
            ),
            index,
        )),
    }
}

/// `GET /v1/config/:kind` (every kind for an empty `kind`): `[]` when there is none.
async fn list(
    agent: &Agent,
    req: &Request,
    kind: &str,
    index: Option<u64>,
    wait: Option<std::time::Duration>,
) -> Result {
    let kind = match kind {
        "" => None,
        kind => Some(parse_kind(kind, 500)?),
    };
    // Lists are filtered, not refused: the anonymous token sees only proxy-defaults.
    let visible = acl::may_read(agent, req)?;
    let (index, body) =
        blocking::block_on_index(agent, index, wait, State::config_entries_index, |state| {
            let entries = state
                .config
                .list(kind)
                .filter(|e| visible || e.kind == Kind::ProxyDefaults)
                .map(entry_json);
            Value::Array(entries.collect())
        })
        .await;
    Ok(Reply::json(req, &body).with_index(index))
}

/// `DELETE /v1/config/:kind/:name`: `{}` whether or not the entry existed.
fn delete(agent: &Agent, req: &Request, kind: &str, name: Option<&str>) -> Result {
    let Some(name) = name else {
        return Err(ApiError::new(
            404,
            "Must provide both a kind and name to delete",
        ));
    };
    let kind = parse_kind(kind, 400)?;
    acl::require_bare(agent, req)?;
    agent.write(|state, tx| {
        let l7 = state.intentions.l7_destinations();
        state.config.delete(kind, name, &l7, tx)
    })?;
    Ok(Reply::json(req, &Value::Object(Default::default())))
}

/// A kind from the path: Consul's `invalid config entry kind` with `status` (its handlers
/// differ), or our refusal of the kinds this agent does not implement (400).
fn parse_kind(kind: &str, status: u16) -> Result<Kind> {
    Kind::parse(kind).map_err(|e| match e {
        KindError::Invalid(_) => ApiError::new(status, e.to_string()),
        KindError::Unsupported(_) => ApiError::new(400, e.to_string()),
    })
}

/// Go's `strconv.ParseUint(text, 10, 64)` and its error text.
fn parse_uint(text: &str) -> std::result::Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseUint: parsing {text:?}: invalid syntax"
        ));
    }
    text.parse()
        .map_err(|_| format!("strconv.ParseUint: parsing {text:?}: value out of range"))
}

/// The query metadata Consul sets before it finds the entry missing.
fn with_query_meta(error: ApiError, index: u64) -> ApiError {
    error
        .header("X-Consul-Index", index.max(1).to_string())
        .header("X-Consul-KnownLeader", "true")
        .header("X-Consul-LastContact", "0")
}

/// `structs.ServiceConfigEntry` / `structs.ProxyConfigEntry` as Consul sends them: Go field
/// order, `omitempty` where the struct has it (the `TransparentProxy`, `MeshGateway` and
/// `Expose` structs always print), `Config` with sorted keys and `null` when unset.
pub(crate) fn entry_json(entry: &ConfigEntry) -> Value {
    let mut obj = Obj::new()
        .put("Kind", entry.kind.as_str())
        .put("Name", entry.name.as_str());
    obj = match entry.kind {
        Kind::ServiceDefaults => obj.put("Protocol", entry.protocol.as_str()),
        Kind::ProxyDefaults => obj.put(
            "Config",
            entry.config.as_ref().map_or(Value::Null, |c| {
                crate::json::sorted(&Value::Object(c.clone()))
            }),
        ),
    };
    let proxy = &entry.transparent_proxy;
    let flag = |on: bool| on.then_some(Value::Bool(true));
    obj = obj
        .put_str("Mode", &entry.mode)
        .put(
            "TransparentProxy",
            Obj::new()
                .put_num("OutboundListenerPort", proxy.outbound_listener_port)
                .put_opt("DialedDirectly", flag(proxy.dialed_directly))
                .build(),
        )
        .put(
            "MeshGateway",
            Obj::new().put_str("Mode", &entry.mesh_gateway_mode).build(),
        )
        .put("Expose", expose_json(&entry.expose));
    if entry.kind == Kind::ServiceDefaults {
        obj = obj.put_str("ExternalSNI", &entry.external_sni);
    }
    let meta = (!entry.meta.is_empty()).then(|| {
        Value::Object(
            entry
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    });
    obj.put_opt("Meta", meta)
        .put("CreateIndex", entry.create_index)
        .put("ModifyIndex", entry.modify_index)
        .build()
}

fn expose_json(expose: &Expose) -> Value {
    let flag = |on: bool| on.then_some(Value::Bool(true));
    let paths = (!expose.paths.is_empty()).then(|| {
        let paths = expose.paths.iter().map(|p| {
            Obj::new()
                .put_num("ListenerPort", p.listener_port)
                .put_str("Path", &p.path)
                .put_num("LocalPathPort", p.local_path_port)
                .put_str("Protocol", &p.protocol)
                .put_opt("ParsedFromCheck", flag(p.parsed_from_check))
                .build()
        });
        Value::Array(paths.collect())
    });
    Obj::new()
        .put_opt("Checks", flag(expose.checks))
        .put_opt("Paths", paths)
        .build()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entries_render_in_consul_shape() {
        let mut entry = config_entries::decode(&json!({"Kind": "service-defaults", "Name": "web",
            "Protocol": "http", "Meta": {"a": "b"}}))
        .unwrap();
        entry.normalize_and_validate().unwrap();
        let text = String::from_utf8(crate::json::encode(&entry_json(&entry), false)).unwrap();
        let compact: String = text.split_whitespace().collect();
        assert_eq!(
            compact,
            r#"{"Kind":"service-defaults","Name":"web","Protocol":"http","TransparentProxy":{},"MeshGateway":{},"Expose":{},"Meta":{"a":"b"},"CreateIndex":0,"ModifyIndex":0}"#
        );
        let proxy = config_entries::decode(&json!({"Kind": "proxy-defaults", "Name": "global",
            "Config": {"z": 1, "protocol": "http"}, "Mode": "transparent",
            "Expose": {"Checks": true, "Paths": [{"Path": "/m", "ListenerPort": 21500}]}}))
        .unwrap();
        let text = String::from_utf8(crate::json::encode(&entry_json(&proxy), false)).unwrap();
        let compact: String = text.split_whitespace().collect();
        assert_eq!(
            compact,
            r#"{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http","z":1},"Mode":"transparent","TransparentProxy":{},"MeshGateway":{},"Expose":{"Checks":true,"Paths":[{"ListenerPort":21500,"Path":"/m"}]},"CreateIndex":0,"ModifyIndex":0}"#
        );
    }

    #[test]
    fn cas_indexes_parse_like_go() {
        assert_eq!(parse_uint("12"), Ok(12));
        assert_eq!(
            parse_uint("abc").unwrap_err(),
            "strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            parse_uint("-1").unwrap_err(),
            "strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
        assert_eq!(
            parse_uint("99999999999999999999").unwrap_err(),
            "strconv.ParseUint: parsing \"99999999999999999999\": value out of range"
        );
    }
}
