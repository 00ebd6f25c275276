//! `/v1/connect/intentions[...]`: list, legacy ID CRUD, `exact`, `match` and `check`.

use std::time::Duration;

use serde_json::Value;

use super::acl::{self, Access};
use super::agent_api::filtered;
use super::views::{self, Obj};
use super::{ApiError, Reply, Request, Result};
use crate::blocking;
use crate::intentions::{parse_target, Intention, IntentionInput, MatchBy};
use crate::state::{Agent, State};

fn required<'a>(req: &'a Request, name: &str) -> Result<&'a str> {
    match req.params(name).as_slice() {
        [value] if !value.is_empty() => Ok(value),
        _ => Err(ApiError::new(
            500,
            format!("required query parameter '{name}' not set"),
        )),
    }
}

/// `GET` (list, blocking) and legacy `POST` (create) on `/v1/connect/intentions`.
pub(crate) async fn collection(agent: &Agent, req: &Request) -> Result {
    if req.method == http::Method::POST {
        let input = decode_legacy(req)?;
        acl::require(agent, req, Access::IntentionsWrite(&input.destination_name))?;
        let id = agent.write(|state, tx| state.intentions.create_legacy(input, tx))?;
        return Ok(Reply::json(req, &Obj::new().put("ID", id).build()));
    }
    let (index, wait) = req.blocking()?;
    let filter = req.param("filter").map(Filter::parse).transpose()?;
    let visible = acl::may_read(agent, req)?;
    let (index, body) = block_on_intentions(agent, index, wait, |state| {
        let list = if visible {
            state.intentions.list()
        } else {
            Vec::new()
        };
        let items = list
            .iter()
            .map(views::intention)
            .filter(|v| filter.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        Value::Array(items)
    })
    .await;
    Ok(filtered(Reply::json(req, &body).with_index(index), visible))
}

/// `GET|PUT|DELETE /v1/connect/intentions/exact?source=&destination=`.
pub(crate) async fn exact(agent: &Agent, req: &Request) -> Result {
    let source = parse_target(required(req, "source")?)?;
    let destination = parse_target(required(req, "destination")?)?;
    match req.method.as_str() {
        "GET" => {
            let (index, wait) = req.blocking()?;
            acl::require(agent, req, Access::IntentionsRead(&destination))?;
            one_intention(agent, req, index, wait, |state| {
                state.intentions.exact(&source, &destination)
            })
            .await
        }
        "PUT" => {
            let input = decode_by_name(req)?;
            acl::require(agent, req, Access::IntentionsWrite(&destination))?;
            agent.write(|state, tx| {
                let State {
                    intentions, config, ..
                } = state;
                let protocol_of = |service: &str| config.protocol(service);
                intentions.upsert_exact(&source, &destination, input, protocol_of, tx)
            })?;
            Ok(Reply::json(req, &Value::Bool(true)))
        }
        _ => {
            acl::require(agent, req, Access::IntentionsWrite(&destination))?;
            agent.write(|state, tx| state.intentions.delete_exact(&source, &destination, tx));
            Ok(Reply::json(req, &Value::Bool(true)))
        }
    }
}

/// `GET /v1/connect/intentions/match?by=source|destination&name=...` (blocking).
pub(crate) async fn matches(agent: &Agent, req: &Request) -> Result {
    let by = match required(req, "by")? {
        "source" => MatchBy::Source,
        "destination" => MatchBy::Destination,
        _ => {
            return Err(ApiError::new(
                500,
                "'by' parameter must be one of 'source' or 'destination'",
            ))
        }
    };
    let names: Vec<&str> = req.params("name");
    if names.is_empty() || names.iter().any(|n| n.is_empty()) {
        return Err(ApiError::new(
            500,
            "required query parameter 'name' not set",
        ));
    }
    let targets = names
        .iter()
        .map(|n| parse_target(n).map(|t| (n.to_string(), t)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let (index, wait) = req.blocking()?;
    let visible = acl::may_read(agent, req)?;
    let (index, body) = block_on_intentions(agent, index, wait, |state| {
        // A Go map: keys sorted; a destination without intentions is a nil slice, `null`.
        let mut out = std::collections::BTreeMap::new();
        for (given, target) in &targets {
            let list = if visible {
                state.intentions.matching(by, target)
            } else {
                Vec::new()
            };
            out.insert(
                given.clone(),
                views::list_or_null(list.iter().map(views::intention)),
            );
        }
        Value::Object(out.into_iter().collect())
    })
    .await;
    Ok(filtered(
        Reply::json(req, &body)
            .with_index(index)
            .leader_consistency(),
        visible,
    ))
}

/// `GET /v1/connect/intentions/check?source=&destination=`: L7 intentions count as deny.
pub(crate) fn check(agent: &Agent, req: &Request) -> Result {
    let source = parse_target(required(req, "source")?)?;
    let destination = parse_target(required(req, "destination")?)?;
    if let Some(kind) = req
        .param("source-type")
        .filter(|t| !t.is_empty() && *t != "consul")
    {
        return Err(ApiError::new(
            400,
            format!("unsupported SourceType: {kind:?}"),
        ));
    }
    acl::require(agent, req, Access::ServiceRead(&destination))?;
    let default_allow = agent.settings.default_allow;
    let decision = agent.read(|s| s.intentions.decide(&source, &destination, default_allow));
    Ok(Reply::json(
        req,
        &Obj::new().put("Allowed", decision.allowed).build(),
    ))
}

/// Legacy `GET|PUT|DELETE /v1/connect/intentions/:uuid`.
pub(crate) async fn by_id(agent: &Agent, req: &Request, id: &str) -> Result {
    if id.len() != 36 || uuid::Uuid::parse_str(id).is_err() {
        // Consul 1.10's texts: its state store refuses the ID before anything is looked up.
        let cause = "failed config entry lookup: index error: UUID must be 36 characters";
        return Err(if req.method == http::Method::GET {
            ApiError::new(400, format!("Bad request: {cause}"))
        } else {
            ApiError::new(500, format!("Intention lookup failed: {cause}"))
        });
    }
    let destination = agent.read(|s| s.intentions.by_id(id).map(|i| i.destination_name.clone()));
    match req.method.as_str() {
        "GET" => {
            let (index, wait) = req.blocking()?;
            acl::require(
                agent,
                req,
                Access::IntentionsRead(destination.as_deref().unwrap_or("")),
            )?;
            one_intention(agent, req, index, wait, |state| state.intentions.by_id(id)).await
        }
        "PUT" => {
            let input = decode_legacy(req)?;
            acl::require(agent, req, Access::IntentionsWrite(&input.destination_name))?;
            agent.write(|state, tx| state.intentions.update_legacy(id, input, tx))?;
            Ok(Reply::json(req, &Obj::new().put("ID", id).build()))
        }
        _ => {
            acl::require(
                agent,
                req,
                Access::IntentionsWrite(destination.as_deref().unwrap_or("")),
            )?;
            agent.write(|state, tx| state.intentions.delete_legacy(id, tx))?;
            Ok(Reply::json(req, &Value::Bool(true)))
        }
    }
}

/// A blocking query on the intentions, which Consul 1.10 keeps in its config entries table
/// (a config entry write moves their index too).
async fn block_on_intentions<T>(
    agent: &Agent,
    index: Option<u64>,
    wait: Option<Duration>,
    query: impl FnOnce(&State) -> T,
) -> (u64, T) {
    blocking::block_on_index(agent, index, wait, State::config_entries_index, query).await
}

/// The body of a write by name (`PUT .../exact`): 400 `Bad request: Request decode failed`.
fn decode_by_name(req: &Request) -> Result<IntentionInput> {
    let failed = |e: crate::json::DecodeError| {
        ApiError::new(400, format!("Bad request: Request decode failed: {e}"))
    };
    let body = req.json().map_err(failed)?;
    IntentionInput::decode(&body).map_err(failed)
}

/// The body of a legacy create or update: 500 `Failed to decode request body`.
fn decode_legacy(req: &Request) -> Result<IntentionInput> {
    let failed = |e: crate::json::DecodeError| {
        ApiError::new(500, format!("Failed to decode request body: {e}"))
    };
    let body = req.json().map_err(failed)?;
    IntentionInput::decode(&body).map_err(failed)
}

/// A blocking `GET` of the intention `find` picks (by ID or by source and destination); 404
/// when there is none.
async fn one_intention(
    agent: &Agent,
    req: &Request,
    index: Option<u64>,
    wait: Option<Duration>,
    find: impl FnOnce(&State) -> Option<&Intention>,
) -> Result {
    let (_, found) = block_on_intentions(agent, index, wait, |state| {
        find(state).map(views::intention)
    })
    .await;
    match found {
        // Consul answers a single intention without query metadata (no X-Consul-Index).
        Some(body) => Ok(Reply::json(req, &body)),
        None => Err(ApiError::new(404, "Intention not found")),
    }
}

/// The subset of Consul's `?filter=` (go-bexpr) used on intention lists:
/// `<Field> == "<value>"` / `!=`, joined with `and`.
pub(crate) struct Filter(Vec<(String, bool, String)>);

impl Filter {
    pub(crate) fn parse(text: &str) -> Result<Filter> {
        let invalid = || {
            ApiError::new(400, format!("Failed to create boolean expression evaluator: unsupported filter {text:?} (tandem-agent dev supports Field == \"value\" joined by and)"))
        };
        let mut terms = Vec::new();
        for part in text.split(" and ") {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else {
                return Err(invalid());
            };
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('`').and_then(|v| v.strip_suffix('`')))
                .ok_or_else(invalid)?;
            terms.push((field.trim().to_string(), equal, value.to_string()));
        }
        Ok(Filter(terms))
    }

    fn matches(&self, item: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = match item.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *value) == *equal
        })
    }
}
