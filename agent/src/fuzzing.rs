//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a stable API).
//!
//! Each runs one parser the HTTP API runs on untrusted input, and what the handler does next
//! with the result, on fresh in-memory stores: no socket, no running agent, no clock that
//! matters. They answer with what a client would see (the JSON views, the error text), so the
//! targets assert on behaviour rather than on internals.

use std::time::Duration;

use http::{HeaderMap, Method};
use hyper::body::Bytes;
use serde_json::{Map, Value};

use crate::catalog::{Catalog, Node};
use crate::checks::CheckKind;
use crate::http::{views, Request};
use crate::intentions::{IntentionInput, Intentions, MatchBy, WILDCARD};
use crate::state::Txn;

/// The datacenter and node every entry point uses.
pub const DATACENTER: &str = "dc1";
pub const NODE_NAME: &str = "fuzz-node";

/// `PUT /v1/agent/service/register` with each body in turn, into one fresh catalog. After each
/// body: `{"Services": <GET /v1/agent/services>, "Checks": <GET /v1/agent/checks>}`, or the
/// text of the 400 the agent answers.
pub fn register_services(bodies: &[&[u8]]) -> Vec<Result<Value, String>> {
    let mut next = 1;
    let mut catalog = Catalog::new(node(), &mut Txn::for_tests(next));
    bodies
        .iter()
        .map(|body| {
            next += 1;
            let value =
                crate::json::parse_body(body).map_err(|e| format!("Request decode failed: {e}"))?;
            let registration =
                crate::service::decode_registration(&value).map_err(|e| e.message)?;
            catalog
                .register(registration, false, &mut Txn::for_tests(next))
                .map_err(|e| e.message)?;
            Ok(agent_view(&catalog))
        })
        .collect()
}

/// How an intention is written.
#[derive(Clone, Copy, Debug)]
pub enum IntentionWrite<'a> {
    /// Legacy `POST /v1/connect/intentions`: the names come from the body.
    Legacy,
    /// `PUT /v1/connect/intentions/exact?source=&destination=`: the names from the query.
    Exact {
        source: &'a str,
        destination: &'a str,
    },
}

/// What a client sees after one accepted intention write.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentionAnswer {
    /// `GET /v1/connect/intentions` (one write into an empty store: one intention).
    pub listed: Vec<Value>,
    /// `/v1/agent/connect/authorize` for the first listed intention's source and destination
    /// (a `*` side replaced by a concrete name), with the agent's default set to allow.
    pub allowed_by_default_allow: bool,
    /// The same with the default set to deny.
    pub allowed_by_default_deny: bool,
    /// `/v1/connect/intentions/match?by=destination&name=<its destination>` lists it.
    pub matched: bool,
}

/// One intention write with `body` into a fresh store, or the error text the agent answers.
pub fn write_intention(body: &[u8], how: IntentionWrite<'_>) -> Result<IntentionAnswer, String> {
    let value =
        crate::json::parse_body(body).map_err(|e| format!("Failed to decode request body: {e}"))?;
    let input = IntentionInput::decode(&value).map_err(|e| e.0)?;
    let mut store = Intentions::new(&mut Txn::for_tests(3));
    let mut tx = Txn::for_tests(4);
    match how {
        IntentionWrite::Legacy => store.create_legacy(input, &mut tx).map(drop),
        IntentionWrite::Exact {
            source,
            destination,
        } => {
            // Every destination speaks HTTP here, so L7 permissions are accepted and checked.
            let http = |_: &str| "http".to_string();
            store.upsert_exact(source, destination, input, http, &mut tx)
        }
    }
    .map_err(|e| e.message)?;
    let listed = store.list();
    let Some(intention) = listed.first() else {
        return Ok(IntentionAnswer {
            listed: Vec::new(),
            allowed_by_default_allow: false,
            allowed_by_default_deny: false,
            matched: false,
        });
    };
    let concrete = |name: &str| {
        if name == WILDCARD {
            "fuzz-any".to_string()
        } else {
            name.to_string()
        }
    };
    let source = concrete(&intention.source_name);
    let destination = concrete(&intention.destination_name);
    Ok(IntentionAnswer {
        listed: listed.iter().map(views::intention).collect(),
        allowed_by_default_allow: store.decide(&source, &destination, true).allowed,
        allowed_by_default_deny: store.decide(&source, &destination, false).allowed,
        matched: !store
            .matching(MatchBy::Destination, &destination)
            .is_empty(),
    })
}

/// Every reading of the query string a handler does, on `query` (without the `?`): the
/// blocking parameters, boolean flags, the token, `?filter=`, intention targets, `?limit=` and
/// `?connect=`. Answers what `?index=` and `?wait=` were read as, or the 400 text.
pub fn read_query(query: &str) -> Result<(Option<u64>, Option<Duration>), String> {
    let req = Request::new(
        Method::GET,
        "/v1/fuzz",
        Some(query),
        HeaderMap::new(),
        Bytes::new(),
    );
    for name in ["passing", "pem", "replace-existing-checks"] {
        let _ = req.flag(name);
    }
    let _ = req.token();
    let _ = req.params("tag");
    if let Some(filter) = req.param("filter") {
        let _ = crate::http::Filter::parse(filter);
    }
    for name in ["source", "destination", "name"] {
        for value in req.params(name) {
            let _ = crate::intentions::parse_target(value);
        }
    }
    if let Some(limit) = req.param("limit") {
        let _ = crate::http::go_atoi(limit);
    }
    if let Some(connect) = req.param("connect") {
        let _ = crate::http::go_parse_bool(connect);
    }
    req.blocking().map_err(|e| e.message)
}

/// Go's `time.Duration.String()`, as the agent prints check intervals and TTLs.
pub fn format_duration(duration: Duration) -> String {
    crate::godur::format(duration)
}

fn node() -> Node {
    Node {
        id: "00000000-0000-0000-0000-000000000001".to_string(),
        name: NODE_NAME.to_string(),
        address: "127.0.0.1".to_string(),
        datacenter: DATACENTER.to_string(),
        create_index: 0,
        modify_index: 0,
    }
}

fn agent_view(catalog: &Catalog) -> Value {
    let services: Map<String, Value> = catalog
        .services()
        .map(|entry| {
            (
                entry.service.id.clone(),
                views::agent_service(entry, DATACENTER, None),
            )
        })
        .collect();
    let checks: Map<String, Value> = catalog
        .checks()
        .filter(|c| c.kind != CheckKind::Serf)
        .map(|c| (c.id.clone(), views::health_check(c, NODE_NAME)))
        .collect();
    let mut view = Map::new();
    view.insert("Services".into(), Value::Object(services));
    view.insert("Checks".into(), Value::Object(checks));
    Value::Object(view)
}
