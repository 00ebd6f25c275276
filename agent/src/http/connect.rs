//! Connect CA and authorization: roots, leaf certificates, CA configuration and
//! `/v1/agent/connect/authorize`.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde_json::Value;
use tandem_certs::SpiffeId;
use tokio::time::Instant;

use super::acl::{self, Access};
use super::views::{self, Obj};
use super::{ApiError, Reply, Request, Result};
use crate::blocking;
use crate::ca::CacheResult;
use crate::json::Fields;
use crate::state::Agent;

/// `GET /v1/agent/connect/ca/roots` and `GET /v1/connect/ca/roots[?pem=true]`.
pub(crate) async fn roots(agent: &Agent, req: &Request) -> Result {
    let (index, wait) = req.blocking()?;
    let pem = req.path == "/v1/connect/ca/roots" && req.flag("pem").unwrap_or(false);
    let (index, (body, chain)) = blocking::block_on_index(
        agent,
        index,
        wait,
        |state| state.ca.roots_index(),
        |state| {
            let ca = &state.ca;
            let chain: String = ca
                .roots()
                .iter()
                .map(|r| r.info().root_cert_pem.clone())
                .collect();
            (views::roots(ca), chain)
        },
    )
    .await;
    if pem {
        return Ok(
            Reply::raw("application/pem-certificate-chain", chain.into_bytes())
                .with_index(index)
                .header("X-Consul-KnownLeader", "false".to_string()),
        );
    }
    // Consul serves the roots from its CA state, not through raft: no known leader there.
    let reply = Reply::json(req, &body)
        .with_index(index)
        .header("X-Consul-KnownLeader", "false".to_string());
    if req.path.starts_with("/v1/agent/") {
        let hit = agent.roots_cached.swap(true, Ordering::Relaxed);
        let cache = if hit { "HIT" } else { "MISS" };
        return Ok(reply.header("X-Cache", cache.to_string()));
    }
    Ok(reply)
}

/// `GET /v1/agent/connect/ca/leaf/:service`: issued on first request, cached, re-issued on
/// root rotation or in the renewal window; blocks on the leaf's `ModifyIndex`.
pub(crate) async fn leaf(agent: &Agent, req: &Request, service: &str) -> Result {
    let (min_index, wait) = req.blocking()?;
    if service.is_empty() {
        // Consul 1.10 builds the SPIFFE ID first and fails on the empty service name.
        return Err(ApiError::new(500, "URI must be either service or agent"));
    }
    acl::require(agent, req, Access::ServiceWrite(service))?;
    let deadline = Instant::now() + blocking::leaf_timeout(wait);
    let min = min_index.unwrap_or(0);
    let mut changes = agent.subscribe();
    let mut parked = None;
    loop {
        changes.borrow_and_update();
        let (leaf, cache) = agent
            .write(|state, tx| state.ca.leaf(service, tx))
            .map_err(|e| ApiError::new(500, e.to_string()))?;
        if min == 0 || leaf.modify_index > min || Instant::now() >= deadline {
            let reply = Reply::json(req, &views::leaf(&leaf))
                .header("X-Consul-Index", leaf.modify_index.max(1).to_string());
            return Ok(match cache {
                CacheResult::Hit => reply
                    .header("X-Cache", "HIT".into())
                    .header("Age", "0".into()),
                CacheResult::Miss => reply.header("X-Cache", "MISS".into()),
            });
        }
        let until_renewal = leaf
            .renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let wake = deadline.min(Instant::now() + until_renewal);
        parked.get_or_insert_with(|| agent.waiters.park());
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(500, "agent is shutting down"));
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// `POST /v1/agent/connect/authorize`.
pub(crate) fn authorize(agent: &Agent, req: &Request) -> Result {
    let decode =
        |e: crate::json::DecodeError| ApiError::new(400, format!("Request decode failed: {e}"));
    let body = req.json().map_err(decode)?;
    let fields = Fields::new(&body, "ConnectAuthorizeRequest").map_err(decode)?;
    let target = fields.string_or_default("Target").map_err(decode)?;
    let uri = fields.string_or_default("ClientCertURI").map_err(decode)?;
    fields
        .string_or_default("ClientCertSerial")
        .map_err(decode)?;
    if target.is_empty() {
        return Err(ApiError::new(400, "Target service must be specified"));
    }
    let spiffe: SpiffeId = uri
        .parse()
        .map_err(|_| ApiError::new(400, "ClientCertURI not a valid Connect identifier"))?;
    let Some(source) = spiffe.as_service() else {
        return Err(ApiError::new(
            400,
            "ClientCertURI not a valid Service identifier",
        ));
    };
    acl::require(agent, req, Access::ServiceWrite(&target))?;
    if let Some(partition) = source.partition.as_deref().filter(|p| *p != "default") {
        return Err(ApiError::new(
            400,
            format!("Mismatched partitions: {partition} != default"),
        ));
    }
    let default_allow = agent.settings.default_allow;
    let decision = agent.read(|state| {
        if source.namespace == "default" {
            state
                .intentions
                .decide(&source.service, &target, default_allow)
        } else {
            // CE intentions all live in the default namespace: nothing can match.
            crate::intentions::default_decision(default_allow)
        }
    });
    // Consul answers from its agent cache, which a locally registered proxy for the target
    // keeps warm (proxycfg watches the target's intentions); otherwise the first fetch misses.
    let warm = agent.read(|state| {
        state
            .catalog
            .services()
            .any(|e| e.service.is_proxy() && e.service.proxy.destination_service_name == target)
    });
    let body = Obj::new()
        .put("Authorized", decision.allowed)
        .put("Reason", decision.reason)
        .build();
    let cache = if warm { "HIT" } else { "MISS" };
    Ok(Reply::json(req, &body).header("X-Cache", cache.to_string()))
}

/// `GET|PUT /v1/connect/ca/configuration`; a PUT rotates to a new root.
pub(crate) fn configuration(agent: &Agent, req: &Request) -> Result {
    if req.method == http::Method::GET {
        acl::require(agent, req, Access::OperatorRead)?;
        // Consul sends the CA configuration without query metadata.
        let body = agent.read(|state| views::ca_configuration(&state.ca));
        return Ok(Reply::json(req, &body));
    }
    let body: Value = req
        .json()
        .map_err(|e| ApiError::new(400, format!("Request decode failed: {e}")))?;
    acl::require(agent, req, Access::OperatorWrite)?;
    agent.write(|state, tx| state.ca.reconfigure(&body, tx))?;
    Ok(Reply::empty())
}
