//! `/v1/query[...]`: prepared queries. `GET` (list, blocking) and `POST` (create) on the
//! collection; `GET|PUT|DELETE /v1/query/:id`; `GET /v1/query/:id_or_name/execute` (the
//! instances, never blocking) and `.../explain`. Methods below `/v1/query/` are decided here,
//! as Consul's `PreparedQuerySpecific` does (its `Allow` lists have no `OPTIONS`, and `OPTIONS`
//! answers `{}`).

use rand::seq::SliceRandom;
use serde_json::Value;

use super::acl::{self, Access};
use super::agent_api::filtered;
use super::views::{self, Obj};
use super::{ApiError, Reply, Request, Result};
use crate::blocking;
use crate::queries::{Definition, QueryError, StoredQuery};
use crate::state::Agent;

/// `GET /v1/query` (blocking list) and `POST /v1/query` (create, answers `{"ID": ...}`).
pub(crate) async fn collection(agent: &Agent, req: &Request) -> Result {
    if req.method == http::Method::POST {
        let definition = Definition::decode(&req.body)?;
        acl::require(agent, req, Access::QueryWrite(&definition.name))?;
        if !definition.id.is_empty() {
            return Err(ApiError::new(
                500,
                "ID must be empty when creating a new prepared query",
            ));
        }
        let id = agent.write(|state, tx| state.queries.create(definition, tx))?;
        return Ok(Reply::json(req, &Obj::new().put("ID", id).build()));
    }
    let (index, wait) = req.blocking()?;
    let visible = acl::may_read(agent, req)?;
    let (index, body) = blocking::block_on_index(
        agent,
        index,
        wait,
        |state| state.queries.table_index(),
        |state| {
            let list = state.queries.list().filter(|_| visible);
            Value::Array(list.map(prepared_query).collect())
        },
    )
    .await;
    Ok(filtered(
        Reply::json(req, &body)
            .with_index(index)
            .leader_consistency(),
        visible,
    ))
}

/// Everything below `/v1/query/`: `rest` is the path after that prefix.
pub(crate) async fn specific(agent: &Agent, req: &Request, rest: &str) -> Result {
    let (target, action) = match rest.rsplit_once('/') {
        Some((target, action @ ("execute" | "explain"))) => (target, Some(action)),
        _ => (rest, None),
    };
    let methods: &[&str] = if action.is_some() {
        &["GET"]
    } else {
        &["GET", "PUT", "DELETE"]
    };
    if req.method == http::Method::OPTIONS {
        let allow = std::iter::once("OPTIONS").chain(methods.iter().copied());
        return Ok(Reply::json(req, &Obj::new().build())
            .header("Allow", allow.collect::<Vec<_>>().join(",")));
    }
    if !methods.contains(&req.method.as_str()) {
        return Err(ApiError::method_not_allowed(&req.method, methods.join(",")));
    }
    super::common_parameters(agent, req, false)?;
    match (action, req.method.as_str()) {
        (Some("execute"), _) => execute(agent, req, target),
        (Some(_), _) => explain(agent, req, target),
        (None, "GET") => read(agent, req, target).await,
        (None, "PUT") => update(agent, req, target),
        (None, _) => delete(agent, req, target),
    }
}

/// `GET /v1/query/:id_or_name/execute`: Consul's `PreparedQueryExecuteResponse`. Never
/// blocks; the index is always 0 (sent as 1), as a single-datacenter Consul answers.
fn execute(agent: &Agent, req: &Request, id_or_name: &str) -> Result {
    let limit = match req.param("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(text) => {
            Some(go_atoi(text).map_err(|e| ApiError::new(500, format!("Bad limit: {e}")))?)
        }
    };
    let connect = match req.param("connect").filter(|c| !c.is_empty()) {
        None => false,
        Some(text) => go_parse_bool(text)
            .map_err(|e| ApiError::new(500, format!("Error parsing 'connect' value: {e}")))?,
    };
    let visible = acl::may_read(agent, req)?;
    let datacenter = agent.settings.datacenter.as_str();
    let body = agent.read(|state| {
        let query = state
            .queries
            .resolve(id_or_name)
            .ok_or_else(QueryError::not_found)?;
        let service = &query.definition.service;
        let mut selected = if visible {
            service.select(&state.catalog, connect)
        } else {
            Vec::new()
        };
        // Consul shuffles (there are no coordinates to sort by on one node), then limits.
        selected.shuffle(&mut rand::rng());
        if let Some(limit) = limit
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l > 0)
        {
            selected.truncate(limit);
        }
        let node = &state.catalog.node;
        let nodes = selected
            .iter()
            .map(|s| views::stored_check_service_node(node, s.entry, &s.checks))
            .collect();
        let obj = Obj::new()
            .put("Service", service.service.as_str())
            .put("Nodes", Value::Array(nodes))
            .put("DNS", dns(&query.definition))
            .put("Datacenter", datacenter)
            .put("Failovers", 0);
        Ok::<_, QueryError>(query_meta(obj))
    })?;
    Ok(filtered(
        Reply::json(req, &body).with_index(0).leader_consistency(),
        visible,
    ))
}

/// `GET /v1/query/:id_or_name/explain`: the query that would run (templates, which would be
/// rendered here, are not supported).
fn explain(agent: &Agent, req: &Request, id_or_name: &str) -> Result {
    let body = agent.read(|state| {
        let query = state
            .queries
            .resolve(id_or_name)
            .ok_or_else(QueryError::not_found)?;
        Ok::<_, QueryError>(query_meta(Obj::new().put("Query", prepared_query(query))))
    })?;
    Ok(Reply::json(req, &body).with_index(0).leader_consistency())
}

/// `GET /v1/query/:id`: a list of one, blocking on the query table. A malformed ID fails with
/// the query metadata Consul had set before the lookup failed.
async fn read(agent: &Agent, req: &Request, id: &str) -> Result {
    let (index, wait) = req.blocking()?;
    let visible = acl::may_read(agent, req)?;
    let (index, body) = blocking::block_on_index(
        agent,
        index,
        wait,
        |state| state.queries.table_index(),
        |state| {
            let query = state.queries.get(id)?;
            let list = visible.then(|| prepared_query(query));
            Ok::<_, QueryError>(Value::Array(list.into_iter().collect()))
        },
    )
    .await;
    let body = body.map_err(|e| {
        let error = ApiError::from(e.clone());
        if e.status == 500 {
            error
                .header("X-Consul-Index", "1")
                .header("X-Consul-KnownLeader", "false")
                .header("X-Consul-LastContact", "0")
        } else {
            error
        }
    })?;
    Ok(filtered(
        Reply::json(req, &body)
            .with_index(index)
            .leader_consistency(),
        visible,
    ))
}

/// `PUT /v1/query/:id`: an empty body is an empty definition (Consul decodes only a body
/// that was sent), refused by validation unless the query lookup fails first.
fn update(agent: &Agent, req: &Request, id: &str) -> Result {
    let definition = if req.body.is_empty() {
        Definition::default()
    } else {
        Definition::decode(&req.body)?
    };
    acl::require(agent, req, Access::QueryWrite(&definition.name))?;
    agent.write(|state, tx| state.queries.update(id, definition, tx))?;
    Ok(Reply::empty())
}

/// `DELETE /v1/query/:id`.
fn delete(agent: &Agent, req: &Request, id: &str) -> Result {
    let name = agent.read(|state| {
        state
            .queries
            .get(id)
            .map(|q| q.definition.name.clone())
            .ok()
    });
    acl::require(agent, req, Access::QueryWrite(&name.unwrap_or_default()))?;
    agent.write(|state, tx| state.queries.delete(id, tx))?;
    Ok(Reply::empty())
}

/// `structs.PreparedQuery`.
fn prepared_query(query: &StoredQuery) -> Value {
    let d = &query.definition;
    let s = &d.service;
    let strings = |list: &Option<Vec<String>>| {
        list.as_ref().map_or(Value::Null, |l| {
            Value::Array(l.iter().cloned().map(Value::String).collect())
        })
    };
    let map = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.as_ref().map_or(Value::Null, |m| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        })
    };
    let template = Obj::new()
        .put("Type", d.template.kind.as_str())
        .put("Regexp", d.template.regexp.as_str())
        .put("RemoveEmptyTags", d.template.remove_empty_tags)
        .build();
    let failover = Obj::new()
        .put("NearestN", s.failover_nearest_n)
        .put("Datacenters", strings(&s.failover_datacenters))
        .build();
    let service = Obj::new()
        .put("Service", s.service.as_str())
        .put("Failover", failover)
        .put("OnlyPassing", s.only_passing)
        .put("IgnoreCheckIDs", strings(&s.ignore_check_ids))
        .put("Near", s.near.as_str())
        .put("Tags", strings(&s.tags))
        .put("NodeMeta", map(&s.node_meta))
        .put("ServiceMeta", map(&s.service_meta))
        .put("Connect", s.connect)
        .build();
    Obj::new()
        .put("ID", query.id.as_str())
        .put("Name", d.name.as_str())
        .put("Session", d.session.as_str())
        .put("Token", d.token.as_str())
        .put("Template", template)
        .put("Service", service)
        .put("DNS", dns(d))
        .put("CreateIndex", query.create_index)
        .put("ModifyIndex", query.modify_index)
        .build()
}

/// `structs.QueryDNSOptions`.
fn dns(definition: &Definition) -> Value {
    Obj::new().put("TTL", definition.dns_ttl.as_str()).build()
}

/// The `structs.QueryMeta` fields execute and explain answers end with, as one server with
/// no RPC metadata fills them.
fn query_meta(obj: Obj) -> Value {
    obj.put("Index", 0)
        .put("LastContact", 0)
        .put("KnownLeader", true)
        .put("ConsistencyLevel", "leader")
        .put("NotModified", false)
        .put("Backend", 0)
        .build()
}

/// Go's `strconv.Atoi` and its error text.
pub(crate) fn go_atoi(text: &str) -> std::result::Result<i64, String> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {text:?}: invalid syntax"));
    }
    text.parse()
        .map_err(|_| format!("strconv.Atoi: parsing {text:?}: value out of range"))
}

/// Go's `strconv.ParseBool` and its error text.
pub(crate) fn go_parse_bool(text: &str) -> std::result::Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {text:?}: invalid syntax"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_parse_like_go() {
        assert_eq!(go_atoi("+3"), Ok(3));
        assert_eq!(
            go_atoi("abc").unwrap_err(),
            "strconv.Atoi: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            go_atoi("99999999999999999999").unwrap_err(),
            "strconv.Atoi: parsing \"99999999999999999999\": value out of range"
        );
        assert_eq!(go_parse_bool("T"), Ok(true));
        assert_eq!(
            go_parse_bool("yes").unwrap_err(),
            "strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
    }
}
