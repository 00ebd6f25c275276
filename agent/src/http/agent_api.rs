//! `/v1/agent/*` (self, services, checks) and `/v1/status/*`.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::acl::{self, Access};
use super::views::{self, Obj, CONSUL_VERSION};
use super::{ApiError, Reply, Request, Result};
use crate::blocking;
use crate::catalog::NewChecks;
use crate::checks::{self, CheckDefinition, CHECK_DEFINITION_FIELDS, CRITICAL, PASSING, WARNING};
use crate::json::Fields;
use crate::service::decode_registration;
use crate::state::Agent;

/// The server RPC address the single dev node reports as leader.
const SERVER_ADDR: &str = "127.0.0.1:8300";

pub(crate) fn agent_self(agent: &Agent, req: &Request) -> Result {
    let settings = &agent.settings;
    acl::require(agent, req, Access::AgentRead(&settings.node_name))?;
    let config = Obj::new()
        .put("Datacenter", settings.datacenter.as_str())
        .put("PrimaryDatacenter", settings.datacenter.as_str())
        .put("NodeName", settings.node_name.as_str())
        .put("NodeID", settings.node_id.as_str())
        .put("Revision", "tandem")
        .put("Server", true)
        .put("Version", CONSUL_VERSION)
        .build();
    let coord = Obj::new()
        .put("Vec", Value::Array(vec![Value::from(0); 8]))
        .put("Error", 1.5)
        .put("Adjustment", 0)
        .put("Height", 1e-05)
        .build();
    // A Go map: sorted keys, as a 1.10 dev server tags its serf member.
    let tags = Obj::new()
        .put("acls", "0")
        .put("build", format!("{CONSUL_VERSION}:"))
        .put("dc", settings.datacenter.as_str())
        .put("ft_fs", "1")
        .put("ft_si", "1")
        .put("id", settings.node_id.as_str())
        .put("port", "8300")
        .put("raft_vsn", "3")
        .put("role", "consul")
        .put("segment", "")
        .put("vsn", "2")
        .put("vsn_max", "3")
        .put("vsn_min", "2")
        .put("wan_join_port", "8302")
        .build();
    let member = Obj::new()
        .put("Name", settings.node_name.as_str())
        .put("Addr", "127.0.0.1")
        .put("Port", 8301)
        .put("Tags", tags)
        .put("Status", 1)
        .put("ProtocolMin", 1)
        .put("ProtocolMax", 5)
        .put("ProtocolCur", 2)
        .put("DelegateMin", 2)
        .put("DelegateMax", 5)
        .put("DelegateCur", 4)
        .build();
    let meta = Obj::new().put("consul-network-segment", "").build();
    let body = Obj::new()
        .put("Config", config)
        .put("DebugConfig", Obj::new().build())
        .put("Coord", coord)
        .put("Member", member)
        .put("Stats", Obj::new().build())
        .put("Meta", meta)
        .build();
    Ok(Reply::json(req, &body))
}

pub(crate) fn status_leader(_agent: &Agent, req: &Request) -> Result {
    Ok(Reply::json(req, &Value::String(SERVER_ADDR.into())))
}

pub(crate) fn status_peers(_agent: &Agent, req: &Request) -> Result {
    Ok(Reply::json(
        req,
        &Value::Array(vec![Value::String(SERVER_ADDR.into())]),
    ))
}

pub(crate) fn register(agent: &Arc<Agent>, req: &Request) -> Result {
    let body = req
        .json()
        .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
    let registration = decode_registration(&body)?;
    acl::require(agent, req, Access::ServiceWrite(&registration.service.name))?;
    if registration.service.is_proxy() {
        let destination = &registration.service.proxy.destination_service_name;
        acl::require(agent, req, Access::ServiceWrite(destination))?;
    }
    let replace = req.flag("replace-existing-checks").unwrap_or(false);
    let new_checks = agent.write(|state, tx| state.catalog.register(registration, replace, tx))?;
    start_runners(agent, new_checks);
    Ok(Reply::empty())
}

fn start_runners(agent: &Arc<Agent>, new_checks: NewChecks) {
    for (check_id, kind) in new_checks.0 {
        if let Some(task) = checks::spawn_runner(agent, &check_id, &kind) {
            agent.write(|state, _| state.catalog.adopt_runner(&check_id, task));
        }
    }
}

pub(crate) fn deregister(agent: &Agent, req: &Request, id: &str) -> Result {
    acl::require(agent, req, Access::ServiceWrite(&acl_name(agent, id)))?;
    agent.write(|state, tx| state.catalog.deregister(id, tx))?;
    Ok(Reply::empty())
}

pub(crate) fn services(agent: &Agent, req: &Request) -> Result {
    let visible = acl::may_read(agent, req)?;
    let dc = &agent.settings.datacenter;
    let body = agent.read(|state| {
        let mut map = serde_json::Map::new();
        if visible {
            for entry in state.catalog.services() {
                map.insert(
                    entry.service.id.clone(),
                    views::agent_service(entry, dc, None),
                );
            }
        }
        Value::Object(map)
    });
    Ok(filtered(Reply::json(req, &body), visible))
}

/// `GET /v1/agent/service/:id`, hash-blocking on `?hash=`.
pub(crate) async fn service(agent: &Agent, req: &Request, id: &str) -> Result {
    let (_, wait) = req.blocking()?;
    acl::require(agent, req, Access::ServiceRead(&acl_name(agent, id)))?;
    let dc = agent.settings.datacenter.clone();
    let query = |state: &crate::state::State| {
        state.catalog.service(id).map(|entry| {
            let plain = views::agent_service(entry, &dc, None);
            let hash = content_hash(&plain);
            (views::agent_service(entry, &dc, Some(&hash)), hash)
        })
    };
    let result = match req.param("hash").filter(|h| !h.is_empty()) {
        None => agent.read(query),
        Some(known) => {
            let timeout = blocking::query_timeout(wait);
            blocking::block_until(agent, timeout, query, |result| {
                result.as_ref().is_none_or(|(_, hash)| hash != known)
            })
            .await
        }
    };
    match result {
        Some((body, hash)) => Ok(Reply::json(req, &body).header("X-Consul-ContentHash", hash)),
        None => Err(ApiError::new(404, format!("unknown service ID: {id}"))),
    }
}

/// The ACL resource of service ID `id`: its service name when registered, else the ID.
fn acl_name(agent: &Agent, id: &str) -> String {
    agent
        .read(|s| s.catalog.service(id).map(|e| e.service.name.clone()))
        .unwrap_or_else(|| id.to_string())
}

fn content_hash(value: &Value) -> String {
    let digest = Sha256::digest(crate::json::encode(value, false));
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn checks(agent: &Agent, req: &Request) -> Result {
    let visible = acl::may_read(agent, req)?;
    let body = agent.read(|state| {
        let mut map = serde_json::Map::new();
        if visible {
            for check in state
                .catalog
                .checks()
                .filter(|c| c.kind != checks::CheckKind::Serf)
            {
                map.insert(
                    check.id.clone(),
                    views::health_check(check, &state.catalog.node.name),
                );
            }
        }
        Value::Object(map)
    });
    Ok(filtered(Reply::json(req, &body), visible))
}

pub(crate) fn check_register(agent: &Arc<Agent>, req: &Request) -> Result {
    let body = req
        .json()
        .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
    let fields = Fields::new(&body, "CheckDefinition")
        .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
    fields
        .refuse_unknown(CHECK_DEFINITION_FIELDS)
        .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
    let definition = CheckDefinition::decode(&fields)
        .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
    if definition.name.is_empty() {
        return Err(ApiError::new(400, "Missing check name"));
    }
    if let Some(status) = &definition.status {
        if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
            return Err(ApiError::new(400, "Bad check status"));
        }
    }
    definition
        .validate()
        .map_err(|e| ApiError::new(400, format!("Invalid check: {e}")))?;
    if definition.service_id.is_empty() {
        acl::require(agent, req, Access::NodeWrite(&agent.settings.node_name))?;
    } else {
        let name = agent.read(|s| {
            s.catalog
                .service(&definition.service_id)
                .map(|e| e.service.name.clone())
        });
        acl::require(
            agent,
            req,
            Access::ServiceWrite(name.as_deref().unwrap_or(&definition.service_id)),
        )?;
    }
    let new_checks = agent.write(|state, tx| state.catalog.register_check(definition, tx))?;
    start_runners(agent, new_checks);
    Ok(Reply::empty())
}

pub(crate) fn check_deregister(agent: &Agent, req: &Request, id: &str) -> Result {
    check_acl(agent, req, id)?;
    agent.write(|state, tx| state.catalog.deregister_check(id, tx))?;
    Ok(Reply::empty())
}

/// `pass`/`warn`/`fail` (with `?note=`) or `update` (JSON `{Status, Output}`) on a TTL check.
pub(crate) fn check_ttl(agent: &Agent, req: &Request, id: &str, fixed: Option<&str>) -> Result {
    let (status, output) = match fixed {
        Some(status) => (
            status.to_string(),
            req.param("note").unwrap_or_default().to_string(),
        ),
        None => {
            let body = req
                .json()
                .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
            let fields = Fields::new(&body, "checkUpdate")
                .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
            let status = fields
                .string_or_default("Status")
                .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
            let output = fields
                .string_or_default("Output")
                .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
            if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
                return Err(ApiError::new(
                    400,
                    format!("Invalid check status: '{status}'"),
                ));
            }
            (status, output)
        }
    };
    check_acl(agent, req, id)?;
    agent.write(|state, tx| state.catalog.update_ttl(id, &status, &output, tx))?;
    Ok(Reply::empty())
}

fn check_acl(agent: &Agent, req: &Request, id: &str) -> Result<()> {
    let service = agent.read(|s| {
        s.catalog
            .check(id)
            .filter(|c| !c.service_name.is_empty())
            .map(|c| c.service_name.clone())
    });
    match service {
        Some(name) => acl::require(agent, req, Access::ServiceWrite(&name)),
        None => acl::require(agent, req, Access::NodeWrite(&agent.settings.node_name)),
    }
}

/// Marks a list the caller's token was not allowed to see.
pub(crate) fn filtered(reply: Reply, visible: bool) -> Reply {
    if visible {
        reply
    } else {
        reply.header("X-Consul-Results-Filtered-By-ACLs", "true".to_string())
    }
}
