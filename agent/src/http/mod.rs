//! Consul's HTTP API: routing with Consul's method lists (405 + `Allow`), request parsing
//! (query parameters, tokens, blocking options), plain-text errors and the headers every
//! response carries.

mod acl;
mod agent_api;
mod config_api;
mod connect;
mod health;
mod intentions_api;
mod queries_api;
pub(crate) mod views;

// The query-string parsers of the handlers, for `crate::fuzzing`.
#[cfg(feature = "fuzzing")]
pub(crate) use intentions_api::Filter;
#[cfg(feature = "fuzzing")]
pub(crate) use queries_api::{go_atoi, go_parse_bool};

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::Value;

use crate::json::DecodeError;
use crate::state::Agent;

/// A request with its body read and its query string decoded.
pub(crate) struct Request {
    pub method: Method,
    pub path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// A request with its query string (without the `?`) decoded as
    /// `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte).
    pub(crate) fn new(
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Request {
        let query = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Request {
            method,
            path: path.to_string(),
            query,
            headers,
            body,
        }
    }

    /// The first value of query parameter `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    /// Consul's token precedence: `?token=`, `X-Consul-Token`, `Authorization: Bearer`.
    pub(crate) fn token(&self) -> Option<String> {
        if let Some(t) = self.param("token").filter(|t| !t.is_empty()) {
            return Some(t.to_string());
        }
        if let Some(t) = self.header("x-consul-token").filter(|t| !t.is_empty()) {
            return Some(t.to_string());
        }
        let auth = self.header("authorization")?;
        let (scheme, rest) = auth.trim().split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        rest.split_whitespace().next().map(str::to_string)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `?index=` and `?wait=` as Consul's `parseWait` reads them.
    pub(crate) fn blocking(
        &self,
    ) -> std::result::Result<(Option<u64>, Option<Duration>), ApiError> {
        let wait = match self.param("wait").filter(|w| !w.is_empty()) {
            None => None,
            Some(w) => {
                Some(crate::godur::parse(w).map_err(|_| ApiError::new(400, "Invalid wait time"))?)
            }
        };
        let index = match self.param("index").filter(|i| !i.is_empty()) {
            None => None,
            Some(i) => Some(
                i.parse::<u64>()
                    .map_err(|_| ApiError::new(400, "Invalid index"))?,
            ),
        };
        if self.has("stale") && self.has("consistent") {
            return Err(ApiError::new(
                400,
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        Ok((index, wait))
    }

    /// A boolean flag such as `?passing`: present and empty means true (Go `ParseBool` otherwise).
    pub(crate) fn flag(&self, name: &str) -> std::result::Result<bool, ()> {
        match self.param(name) {
            None => Ok(false),
            Some("") => Ok(true),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
            Some(_) => Err(()),
        }
    }

    pub(crate) fn json(&self) -> std::result::Result<Value, DecodeError> {
        crate::json::parse_body(&self.body)
    }
}

/// A successful answer.
pub(crate) struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

impl Reply {
    /// JSON as a dev agent sends it: always pretty (4-space indentation and the trailing
    /// newline), whether or not `?pretty` was asked for.
    pub(crate) fn json(_req: &Request, value: &Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            content_type: Some("application/json"),
            body: crate::json::encode(value, true),
        }
    }

    /// 200 with an empty body (register, deregister, check updates).
    pub(crate) fn empty() -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            content_type: None,
            body: Vec::new(),
        }
    }

    pub(crate) fn raw(content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            content_type: Some(content_type),
            body,
        }
    }

    /// Query metadata (`setMeta`): the index (never 0), known leader, last contact.
    pub(crate) fn with_index(self, index: u64) -> Reply {
        self.header("X-Consul-Index", index.max(1).to_string())
            .header("X-Consul-KnownLeader", "true".to_string())
            .header("X-Consul-LastContact", "0".to_string())
    }

    /// The consistency mode a catalog, health or intention-match query was served with
    /// (`X-Consul-Effective-Consistency`); one node is always its own leader.
    pub(crate) fn leader_consistency(self) -> Reply {
        self.header("X-Consul-Effective-Consistency", "leader".to_string())
    }

    pub(crate) fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// A refused request: status and Consul's plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
    allow: Option<String>,
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            allow: None,
            headers: Vec::new(),
        }
    }

    /// 405 for `method`, with `allow` as the `Allow` header.
    pub(crate) fn method_not_allowed(method: &Method, allow: impl Into<String>) -> Self {
        ApiError {
            allow: Some(allow.into()),
            ..ApiError::new(405, format!("method {method} not allowed"))
        }
    }

    /// A header sent with the refusal (Consul sets query metadata before some lookups fail).
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<crate::service::RegisterError> for ApiError {
    fn from(e: crate::service::RegisterError) -> Self {
        ApiError::new(e.status, e.message)
    }
}

impl From<crate::intentions::IntentionError> for ApiError {
    fn from(e: crate::intentions::IntentionError) -> Self {
        ApiError::new(e.status, e.message)
    }
}

impl From<crate::config_entries::ConfigError> for ApiError {
    fn from(e: crate::config_entries::ConfigError) -> Self {
        ApiError::new(e.status, e.message)
    }
}

impl From<crate::queries::QueryError> for ApiError {
    fn from(e: crate::queries::QueryError) -> Self {
        ApiError::new(e.status, e.message)
    }
}

impl From<crate::ca::CaRequestError> for ApiError {
    fn from(e: crate::ca::CaRequestError) -> Self {
        ApiError::new(e.status, e.message)
    }
}

pub(crate) type Result<T = Reply> = std::result::Result<T, ApiError>;

/// Serves one HTTP request against `agent`.
pub(crate) async fn handle(
    agent: Arc<Agent>,
    request: hyper::Request<Incoming>,
) -> std::result::Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let default_policy = if agent.settings.default_allow {
        "allow"
    } else {
        "deny"
    };
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "client.request_body_error");
            let error = ApiError::new(400, format!("Request decode failed: {e}"));
            return Ok(render(Err(error), default_policy));
        }
    };
    let request = Request::new(
        parts.method,
        parts.uri.path(),
        parts.uri.query(),
        parts.headers,
        body,
    );
    let result = dispatch(&agent, &request).await;
    if let Err(e) = &result {
        tracing::debug!(
            http.method = %request.method,
            http.path = %request.path,
            http.status = e.status,
            error = %e.message,
            "request refused"
        );
    }
    Ok(render(result, default_policy))
}

fn render(result: Result, default_policy: &str) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder();
    let headers = builder
        .headers_mut()
        .expect("a fresh response builder has headers");
    headers.insert(
        "X-Consul-Default-ACL-Policy",
        HeaderValue::from_static(if default_policy == "allow" {
            "allow"
        } else {
            "deny"
        }),
    );
    let (status, body) = match result {
        Ok(reply) => {
            if let Some(ct) = reply.content_type {
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            for (name, value) in reply.headers {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
            (reply.status, reply.body)
        }
        Err(error) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if let Some(allow) = error.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
                headers.insert(http::header::ALLOW, allow);
            }
            for (name, value) in error.headers {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
            let status =
                StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, error.message.into_bytes())
        }
    };
    builder
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

/// The endpoints and the methods Consul registers for each (`agent/http_register.go`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    AgentSelf,
    StatusLeader,
    StatusPeers,
    ServiceRegister,
    ServiceDeregister(String),
    AgentServices,
    AgentService(String),
    AgentChecks,
    CheckRegister,
    CheckDeregister(String),
    CheckPass(String),
    CheckWarn(String),
    CheckFail(String),
    CheckUpdate(String),
    CatalogServices,
    CatalogService(String),
    CatalogConnect(String),
    HealthService(String),
    HealthConnect(String),
    AgentRoots,
    AgentLeaf(String),
    AgentAuthorize,
    ConnectRoots,
    CaConfiguration,
    Intentions,
    IntentionMatch,
    IntentionCheck,
    IntentionExact,
    IntentionById(String),
    Queries,
    /// `PUT /v1/config`.
    ConfigApply,
    /// `/v1/config/:kind[/:name]`.
    Config(String),
    /// `/v1/query/:id`, `/v1/query/:id_or_name/execute`, `.../explain`: methods decided by
    /// the handler, as Consul's `PreparedQuerySpecific` does.
    Query(String),
}

/// The methods Consul registers for an endpoint.
type Methods = &'static [&'static str];
/// A route made from what follows a path prefix (a service, check or intention ID).
type WithRest = fn(String) -> Route;

/// Exact paths: the route and its methods.
#[rustfmt::skip] // one endpoint per line, columns aligned
const EXACT: &[(&str, Route, Methods)] = &[
    ("/v1/agent/self",               Route::AgentSelf,       &["GET"]),
    ("/v1/status/leader",            Route::StatusLeader,    &["GET"]),
    ("/v1/status/peers",             Route::StatusPeers,     &["GET"]),
    ("/v1/agent/service/register",   Route::ServiceRegister, &["PUT"]),
    ("/v1/agent/services",           Route::AgentServices,   &["GET"]),
    ("/v1/agent/checks",             Route::AgentChecks,     &["GET"]),
    ("/v1/agent/check/register",     Route::CheckRegister,   &["PUT"]),
    ("/v1/catalog/services",         Route::CatalogServices, &["GET"]),
    ("/v1/agent/connect/ca/roots",   Route::AgentRoots,      &["GET"]),
    ("/v1/agent/connect/authorize",  Route::AgentAuthorize,  &["POST"]),
    ("/v1/connect/ca/roots",         Route::ConnectRoots,    &["GET"]),
    ("/v1/connect/ca/configuration", Route::CaConfiguration, &["GET", "PUT"]),
    ("/v1/connect/intentions",       Route::Intentions,      &["GET", "POST"]),
    ("/v1/connect/intentions/match", Route::IntentionMatch,  &["GET"]),
    ("/v1/connect/intentions/check", Route::IntentionCheck,  &["GET"]),
    ("/v1/connect/intentions/exact", Route::IntentionExact,  &["GET", "PUT", "DELETE"]),
    ("/v1/query",                    Route::Queries,         &["GET", "POST"]),
    ("/v1/config",                   Route::ConfigApply,     &["PUT"]),
];

/// Path prefixes (first match wins): the route for the rest of the path and its methods.
#[rustfmt::skip] // one endpoint per line, columns aligned
const PREFIX: &[(&str, WithRest, Methods)] = &[
    ("/v1/agent/service/deregister/", Route::ServiceDeregister, &["PUT"]),
    ("/v1/agent/service/",            Route::AgentService,      &["GET"]),
    ("/v1/agent/check/deregister/",   Route::CheckDeregister,   &["PUT"]),
    ("/v1/agent/check/pass/",         Route::CheckPass,         &["PUT"]),
    ("/v1/agent/check/warn/",         Route::CheckWarn,         &["PUT"]),
    ("/v1/agent/check/fail/",         Route::CheckFail,         &["PUT"]),
    ("/v1/agent/check/update/",       Route::CheckUpdate,       &["PUT"]),
    ("/v1/catalog/service/",          Route::CatalogService,    &["GET"]),
    ("/v1/catalog/connect/",          Route::CatalogConnect,    &["GET"]),
    ("/v1/health/service/",           Route::HealthService,     &["GET"]),
    ("/v1/health/connect/",           Route::HealthConnect,     &["GET"]),
    ("/v1/agent/connect/ca/leaf/",    Route::AgentLeaf,         &["GET"]),
    ("/v1/connect/intentions/",       Route::IntentionById,     &["GET", "PUT", "DELETE"]),
    ("/v1/query/",                    Route::Query,             &["GET", "PUT", "DELETE"]),
    ("/v1/config/",                   Route::Config,            &["GET", "DELETE"]),
];

fn route(path: &str) -> Option<(Route, Methods)> {
    if let Some((_, route, methods)) = EXACT.iter().find(|(p, ..)| *p == path) {
        return Some((route.clone(), methods));
    }
    let (prefix, route, methods) = PREFIX.iter().find(|(p, ..)| path.starts_with(p))?;
    Some((route(path[prefix.len()..].to_string()), methods))
}

async fn dispatch(agent: &Arc<Agent>, req: &Request) -> Result {
    let Some((route, methods)) = route(&req.path) else {
        return Err(ApiError::new(404, "404 page not found\n"));
    };
    if let Route::Query(rest) = &route {
        return queries_api::specific(agent, req, rest).await;
    }
    let allow = std::iter::once("OPTIONS")
        .chain(methods.iter().copied())
        .collect::<Vec<_>>();
    if req.method == Method::OPTIONS {
        return Ok(Reply::empty().header("Allow", allow.join(",")));
    }
    if !methods.contains(&req.method.as_str()) {
        return Err(ApiError::method_not_allowed(&req.method, allow.join(",")));
    }
    common_parameters(agent, req, route == Route::Intentions)?;
    match route {
        Route::AgentSelf => agent_api::agent_self(agent, req),
        Route::StatusLeader => agent_api::status_leader(agent, req),
        Route::StatusPeers => agent_api::status_peers(agent, req),
        Route::ServiceRegister => agent_api::register(agent, req),
        Route::ServiceDeregister(id) => agent_api::deregister(agent, req, &id),
        Route::AgentServices => agent_api::services(agent, req),
        Route::AgentService(id) => agent_api::service(agent, req, &id).await,
        Route::AgentChecks => agent_api::checks(agent, req),
        Route::CheckRegister => agent_api::check_register(agent, req),
        Route::CheckDeregister(id) => agent_api::check_deregister(agent, req, &id),
        Route::CheckPass(id) => agent_api::check_ttl(agent, req, &id, Some("passing")),
        Route::CheckWarn(id) => agent_api::check_ttl(agent, req, &id, Some("warning")),
        Route::CheckFail(id) => agent_api::check_ttl(agent, req, &id, Some("critical")),
        Route::CheckUpdate(id) => agent_api::check_ttl(agent, req, &id, None),
        Route::CatalogServices => health::catalog_services(agent, req).await,
        Route::CatalogService(name) => health::catalog_service(agent, req, &name, false).await,
        Route::CatalogConnect(name) => health::catalog_service(agent, req, &name, true).await,
        Route::HealthService(name) => health::health_service(agent, req, &name, false).await,
        Route::HealthConnect(name) => health::health_service(agent, req, &name, true).await,
        Route::AgentRoots | Route::ConnectRoots => connect::roots(agent, req).await,
        Route::AgentLeaf(service) => connect::leaf(agent, req, &service).await,
        Route::AgentAuthorize => connect::authorize(agent, req),
        Route::CaConfiguration => connect::configuration(agent, req),
        Route::Intentions => intentions_api::collection(agent, req).await,
        Route::IntentionMatch => intentions_api::matches(agent, req).await,
        Route::IntentionCheck => intentions_api::check(agent, req),
        Route::IntentionExact => intentions_api::exact(agent, req).await,
        Route::IntentionById(id) => intentions_api::by_id(agent, req, &id).await,
        Route::Queries => queries_api::collection(agent, req).await,
        Route::ConfigApply => config_api::apply(agent, req),
        Route::Config(rest) => config_api::specific(agent, req, &rest).await,
        Route::Query(_) => unreachable!("answered by queries_api::specific above"),
    }
}

/// The parameters every endpoint reads the same way once its method is accepted: `?dc=` (one
/// datacenter) and `?filter=` (only where `filterable`).
fn common_parameters(agent: &Agent, req: &Request, filterable: bool) -> Result<()> {
    if let Some(dc) = req.param("dc").filter(|dc| !dc.is_empty()) {
        if dc != agent.settings.datacenter {
            return Err(ApiError::new(500, "No path to datacenter"));
        }
    }
    if req.param("filter").is_some_and(|f| !f.is_empty()) && !filterable {
        return Err(ApiError::new(
            400,
            "tandem-agent dev supports ?filter only on /v1/connect/intentions",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_consul_registration() {
        assert_eq!(route("/v1/agent/self").unwrap().0, Route::AgentSelf);
        assert_eq!(
            route("/v1/agent/service/deregister/web").unwrap().0,
            Route::ServiceDeregister("web".into())
        );
        assert_eq!(
            route("/v1/agent/service/web").unwrap().0,
            Route::AgentService("web".into())
        );
        assert_eq!(
            route("/v1/connect/intentions/exact").unwrap().0,
            Route::IntentionExact
        );
        assert_eq!(
            route("/v1/connect/intentions/abc").unwrap().0,
            Route::IntentionById("abc".into())
        );
        assert_eq!(route("/v1/config").unwrap().0, Route::ConfigApply);
        assert_eq!(
            route("/v1/config/service-defaults/web").unwrap().0,
            Route::Config("service-defaults/web".into())
        );
        assert!(route("/v1/configs").is_none());
        assert!(route("/v1/nope").is_none());
    }
}
