//! `/v1/health/{service,connect}/:name` and `/v1/catalog/{services,service,connect}`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::acl;
use super::agent_api::filtered;
use super::views;
use super::{ApiError, Reply, Request, Result};
use crate::blocking;
use crate::catalog::{Catalog, ServiceEntry};
use crate::checks::PASSING;
use crate::state::Agent;

/// `GET /v1/health/service/:name` and (`connect`) `GET /v1/health/connect/:name`.
pub(crate) async fn health_service(
    agent: &Agent,
    req: &Request,
    name: &str,
    connect: bool,
) -> Result {
    let query = ServiceQuery::parse(req, name, connect)?;
    let passing_only = req
        .flag("passing")
        .map_err(|_| ApiError::new(400, "Invalid value for ?passing"))?;
    let visible = acl::may_read(agent, req)?;
    query
        .reply(agent, req, visible, |catalog, entry| {
            let checks: Vec<_> = catalog
                .node_checks()
                .chain(catalog.service_checks(&entry.service.id))
                .collect();
            if passing_only && checks.iter().any(|c| c.status != PASSING) {
                return None;
            }
            let checks = checks
                .into_iter()
                .map(|c| views::health_check(c, &catalog.node.name))
                .collect();
            Some(views::check_service_node(
                &views::node(&catalog.node),
                entry,
                checks,
            ))
        })
        .await
}

/// `GET /v1/catalog/service/:name` and (`connect`) `/v1/catalog/connect/:name`.
pub(crate) async fn catalog_service(
    agent: &Agent,
    req: &Request,
    name: &str,
    connect: bool,
) -> Result {
    let query = ServiceQuery::parse(req, name, connect)?;
    let visible = acl::may_read(agent, req)?;
    query
        .reply(agent, req, visible, |catalog, entry| {
            Some(views::service_node(&catalog.node, entry))
        })
        .await
}

/// `GET /v1/catalog/services`: service name to the union of its instances' tags.
pub(crate) async fn catalog_services(agent: &Agent, req: &Request) -> Result {
    let (index, wait) = req.blocking()?;
    let visible = acl::may_read(agent, req)?;
    let (index, body) = blocking::block_on_index(
        agent,
        index,
        wait,
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
            Value::Object(map)
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

/// A blocking query on the instances of one service (or its mesh endpoints, `connect`).
struct ServiceQuery<'a> {
    name: &'a str,
    connect: bool,
    index: Option<u64>,
    wait: Option<Duration>,
}

impl<'a> ServiceQuery<'a> {
    /// The blocking parameters, then the name (Consul checks in that order).
    fn parse(req: &Request, name: &'a str, connect: bool) -> Result<Self> {
        let (index, wait) = req.blocking()?;
        if name.is_empty() {
            return Err(ApiError::new(400, "Missing service name"));
        }
        Ok(ServiceQuery {
            name,
            connect,
            index,
            wait,
        })
    }

    /// Blocks on the service's index, then answers with `render` applied to each instance that
    /// carries every `?tag=`; `render` returns `None` to leave an instance out. An invisible
    /// list is empty.
    async fn reply(
        self,
        agent: &Agent,
        req: &Request,
        visible: bool,
        render: impl Fn(&Catalog, &ServiceEntry) -> Option<Value>,
    ) -> Result {
        let ServiceQuery {
            name,
            connect,
            index,
            wait,
        } = self;
        let tags: Vec<&str> = req.params("tag");
        let (index, body) = blocking::block_on_index(
            agent,
            index,
            wait,
            |state| state.catalog.service_index(name, connect),
            |state| {
                let catalog = &state.catalog;
                let entries = if visible {
                    catalog.instances(name, connect)
                } else {
                    Vec::new()
                };
                let items = entries
                    .into_iter()
                    .filter(|e| has_tags(e, &tags))
                    .filter_map(|e| render(catalog, e))
                    .collect();
                Value::Array(items)
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
}

fn has_tags(entry: &ServiceEntry, wanted: &[&str]) -> bool {
    let tags = entry.service.tags.as_deref().unwrap_or_default();
    wanted
        .iter()
        .all(|w| tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
}
