//! `/v1/health/{service,connect}/:name` and `/v1/catalog/{services,service,connect}`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::acl;
use super::agent_api::filtered;
use super::views;
use super::{ApiError, Reply, Request, Result};
use crate::blocking;
use crate::catalog::ServiceEntry;
use crate::checks::PASSING;
use crate::state::{Agent, State};

/// `GET /v1/health/service/:name` and (`connect`) `GET /v1/health/connect/:name`.
pub async fn health_service(agent: &Agent, req: &Request, name: &str, connect: bool) -> Result {
    let (index, wait) = req.blocking()?;
    if name.is_empty() {
        return Err(ApiError::new(400, "Missing service name"));
    }
    let passing_only = req
        .flag("passing")
        .map_err(|_| ApiError::new(400, "Invalid value for ?passing"))?;
    let visible = acl::may_read(agent, req)?;
    let tags: Vec<String> = req.params("tag").into_iter().map(str::to_string).collect();
    let timeout = blocking::query_timeout(wait);
    let (index, body) = blocking::block_on_index(
        agent,
        index,
        timeout,
        |state| state.catalog.service_index(name, connect),
        |state| {
            let index = state.catalog.service_index(name, connect);
            if !visible {
                return (index, Value::Array(Vec::new()));
            }
            (
                index,
                health_entries(state, name, connect, passing_only, &tags),
            )
        },
    )
    .await;
    Ok(filtered(Reply::json(req, &body).with_index(index), visible))
}

fn health_entries(
    state: &State,
    name: &str,
    connect: bool,
    passing_only: bool,
    tags: &[String],
) -> Value {
    let catalog = &state.catalog;
    let node = views::node(&catalog.node);
    let instances = if connect {
        catalog.connect_instances(name)
    } else {
        catalog.instances(name)
    };
    let mut out = Vec::new();
    for entry in instances.into_iter().filter(|e| has_tags(e, tags)) {
        let checks: Vec<_> = catalog
            .node_checks()
            .chain(catalog.service_checks(&entry.service.id))
            .collect();
        if passing_only && checks.iter().any(|c| c.status != PASSING) {
            continue;
        }
        let checks = checks
            .into_iter()
            .map(|c| views::health_check(c, &catalog.node.name))
            .collect();
        out.push(views::check_service_node(&node, entry, checks));
    }
    Value::Array(out)
}

fn has_tags(entry: &ServiceEntry, wanted: &[String]) -> bool {
    let tags = entry.service.tags.as_deref().unwrap_or_default();
    wanted
        .iter()
        .all(|w| tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
}

/// `GET /v1/catalog/services`: service name to the union of its instances' tags.
pub async fn catalog_services(agent: &Agent, req: &Request) -> Result {
    let (index, wait) = req.blocking()?;
    let visible = acl::may_read(agent, req)?;
    let timeout = blocking::query_timeout(wait);
    let (index, body) = blocking::block_on_index(
        agent,
        index,
        timeout,
        |state| state.catalog.table_index(),
        |state| {
            let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            if visible {
                for entry in state.catalog.services() {
                    let tags = names.entry(entry.service.name.clone()).or_default();
                    tags.extend(entry.service.tags.clone().unwrap_or_default());
                }
            }
            let map = names
                .into_iter()
                .map(|(name, tags)| {
                    (
                        name,
                        Value::Array(tags.into_iter().map(Value::String).collect()),
                    )
                })
                .collect();
            (state.catalog.table_index(), Value::Object(map))
        },
    )
    .await;
    Ok(filtered(Reply::json(req, &body).with_index(index), visible))
}

/// `GET /v1/catalog/service/:name` and (`connect`) `/v1/catalog/connect/:name`.
pub async fn catalog_service(agent: &Agent, req: &Request, name: &str, connect: bool) -> Result {
    let (index, wait) = req.blocking()?;
    if name.is_empty() {
        return Err(ApiError::new(400, "Missing service name"));
    }
    let visible = acl::may_read(agent, req)?;
    let tags: Vec<String> = req.params("tag").into_iter().map(str::to_string).collect();
    let timeout = blocking::query_timeout(wait);
    let (index, body) = blocking::block_on_index(
        agent,
        index,
        timeout,
        |state| state.catalog.service_index(name, connect),
        |state| {
            let catalog = &state.catalog;
            let index = catalog.service_index(name, connect);
            if !visible {
                return (index, Value::Array(Vec::new()));
            }
            let instances = if connect {
                catalog.connect_instances(name)
            } else {
                catalog.instances(name)
            };
            let nodes = instances
                .into_iter()
                .filter(|e| has_tags(e, &tags))
                .map(|e| views::service_node(&catalog.node, e))
                .collect();
            (index, Value::Array(nodes))
        },
    )
    .await;
    Ok(filtered(Reply::json(req, &body).with_index(index), visible))
}
