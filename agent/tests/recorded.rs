//! Replays what real Consul agents answered (`tests/data/consul-recorded/`, recorded from
//! `consul agent -dev` 1.10.4 and 1.8.17, and prepared queries from 1.10.4) against the in-process `tandem-agent dev`, request by
//! request and in order, and compares status, content type, the headers a client reads and the
//! body: exact text for plain-text answers, for JSON the same keys in the same order and the
//! same values once volatile ones (IDs, indexes, times, PEMs, serials, trust domain, hashes)
//! are masked. Every place where ours is meant to differ is listed below with its reason; any
//! other divergence fails the test.

mod common;

use std::time::Duration;

use common::{agent_with, Api, Resp};
use serde_json::Value;
use tandem_agent::DevAgent;

/// One recorded exchange (see `tests/data/consul-recorded/README.md`).
struct Entry {
    name: String,
    method: String,
    path: String,
    body: Option<String>,
    status: u16,
    headers: Vec<(String, String)>,
    text: String,
}

/// Where our agent is meant to answer differently from the recorded Consul, and why.
enum Intended {
    /// Not sent at all: sending it would change our state in a way the recorded agent's was
    /// not changed, and every later answer would differ for that reason alone.
    NotSent,
    /// Only the status and content type are compared, against ours.
    Answer {
        status: u16,
        content_type: &'static str,
    },
    /// Compared, with these JSON pointers removed from both bodies.
    Masked(&'static [&'static str]),
    /// Compared, except these headers.
    Headers(&'static [&'static str]),
}

/// Differences from Consul 1.10.4, the reference (by entry name).
const DIFFERENCES_1_10: &[(&str, Intended, &str)] = &[
    (
        "agent-self",
        Intended::Masked(&["/DebugConfig", "/Stats", "/xDS", "/Member/Port", "/Member/Tags/port", "/Member/Tags/wan_join_port"]),
        "only Config, Coord, Member and Meta are emulated; the recording agent ran on non-default ports",
    ),
    (
        "agent-checks",
        Intended::Masked(&["/service:pod-1-static-server-sidecar-proxy:1/Output"]),
        "our TCP check probes at registration, Consul only after a random stagger (empty output)",
    ),
    (
        "health-connect-critical-listener",
        Intended::Masked(&["/0/Checks/1/Output"]),
        "same TCP check: probed at once by us, not yet by Consul",
    ),
    (
        "roots-after-rotation",
        Intended::Masked(&["/Roots/1/IntermediateCerts", "/Roots/1/PrivateKeyType", "/Roots/1/PrivateKeyBits"]),
        "a CA configuration PUT rotates to a root we generate (EC P-256, no cross-signed intermediate) instead of the RSA key and certificate given",
    ),
    (
        "leaf-after-rotation",
        Intended::Headers(&["X-Cache"]),
        "we re-issue cached leaves at once on rotation (MISS, new leaf); Consul within 0-30 s of jitter (HIT, old leaf)",
    ),
];

/// Where Consul 1.8.17 answers differently from the 1.10 we emulate (by entry name).
const DIFFERENCES_1_8: &[(&str, Intended, &str)] = &[
    ("exact-put-deny", Intended::NotSent, "1.8 has no /v1/connect/intentions/exact (500); we emulate 1.10 where it creates the intention"),
    ("exact-put-wildcard-allow", Intended::NotSent, "1.8 has no /exact"),
    ("exact-get", Intended::NotSent, "1.8 has no /exact (400)"),
    ("exact-get-missing", Intended::NotSent, "1.8 has no /exact (400)"),
    ("exact-put-l7", Intended::NotSent, "1.8 has no /exact and no L7 permissions"),
    ("exact-put-l7-on-tcp", Intended::NotSent, "1.8 has no /exact and no L7 permissions"),
    ("agent-self", Intended::Answer { status: 200, content_type: JSON }, "1.8's agent/self has other Config and DebugConfig fields"),
    ("ca-configuration", Intended::Answer { status: 200, content_type: JSON }, "1.8's default Config also has RotationPeriod"),
    ("agent-services", Intended::Answer { status: 200, content_type: JSON }, "1.8's AgentService has no Datacenter"),
    ("agent-service-sidecar", Intended::Answer { status: 200, content_type: JSON }, "1.8's AgentService has no Datacenter"),
    ("agent-service-hash-wait-timeout", Intended::Answer { status: 200, content_type: JSON }, "1.8's AgentService has no Datacenter"),
    ("agent-checks", Intended::Answer { status: 200, content_type: JSON }, "1.8's HealthCheck has no Interval, Timeout, ExposedPort"),
    ("health-connect-critical-listener", Intended::Answer { status: 200, content_type: JSON }, "1.8's proxy has no Mode, its checks no Interval/Timeout"),
    ("catalog-connect", Intended::Answer { status: 200, content_type: JSON }, "1.8's ServiceNode has no ServiceSocketPath, its proxy no Mode"),
    ("config-service-defaults-get", Intended::Answer { status: 200, content_type: JSON }, "1.8's ServiceConfigEntry has no TransparentProxy"),
    ("match-no-intentions", Intended::Headers(NO_META), "1.8 sends match answers without query metadata"),
    ("match-two-names-none", Intended::Headers(NO_META), "1.8 sends match answers without query metadata"),
    ("match-destination", Intended::Headers(NO_META), "1.8 sends match answers without query metadata"),
    ("match-destination-l7", Intended::Headers(NO_META), "1.8 sends match answers without query metadata"),
    ("match-source", Intended::Headers(NO_META), "1.8 sends match answers without query metadata"),
    ("match-index", Intended::Headers(NO_META), "1.8 sends match answers without query metadata"),
    ("match-index-ahead", Intended::Headers(NO_META), "1.8 sends match answers without query metadata"),
    (
        "roots-after-rotation",
        Intended::Masked(&["/Roots/1/IntermediateCerts", "/Roots/1/PrivateKeyType", "/Roots/1/PrivateKeyBits"]),
        "a CA configuration PUT rotates to a root we generate (EC P-256)",
    ),
    ("leaf-after-rotation", Intended::Headers(&["X-Cache"]), "we re-issue cached leaves at once on rotation"),
];

/// Where our prepared queries are meant to answer differently from Consul 1.10.4.
const DIFFERENCES_PREPARED_QUERIES: &[(&str, Intended, &str)] = &[(
    "query-create-template",
    Intended::Answer {
        status: 400,
        content_type: TEXT,
    },
    "prepared query templates are not supported: refused rather than stored",
)];

const TEXT: &str = "text/plain; charset=utf-8";
/// The query metadata headers 1.10 added to intention match answers.
const NO_META: &[&str] = &[
    "X-Consul-Index",
    "X-Consul-Effective-Consistency",
    "X-Consul-Knownleader",
    "X-Consul-Lastcontact",
];
const JSON: &str = "application/json";

/// Headers whose value a client reads: compared exactly (1.8 sends no ACL-policy header).
const COMPARED_HEADERS: &[&str] = &[
    "Content-Type",
    "X-Consul-Default-Acl-Policy",
    "X-Consul-Effective-Consistency",
    "X-Consul-Knownleader",
    "X-Consul-Lastcontact",
    "X-Cache",
    "Allow",
];

/// Headers whose value is volatile: only their presence is compared.
const PRESENT_HEADERS: &[&str] = &["X-Consul-Index", "X-Consul-Contenthash"];

/// Keys whose values are generated by the agent that answered.
const VOLATILE: &[&str] = &[
    "ID",
    "NodeID",
    "id",
    "Node",
    "NodeName",
    "Name@Member",
    "Revision",
    "CreateIndex",
    "ModifyIndex",
    "SerialNumber",
    "CertPEM",
    "PrivateKeyPEM",
    "RootCert",
    "SigningKeyID",
    "ActiveRootID",
    "TrustDomain",
    "ExternalTrustDomain",
    "NotBefore",
    "NotAfter",
    "ValidAfter",
    "ValidBefore",
    "ServiceURI",
    "ContentHash",
    "CreatedAt",
    "UpdatedAt",
    "Hash",
];

#[tokio::test]
async fn replay_consul_1_10_4() {
    let failures = replay(
        include_str!("data/consul-recorded/consul-1.10.4-dev.json"),
        DIFFERENCES_1_10,
        true,
    )
    .await;
    assert!(
        failures.is_empty(),
        "Consul 1.10.4:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn replay_consul_1_8_17_where_it_answers_like_1_10() {
    let failures = replay(
        include_str!("data/consul-recorded/consul-1.8.17-dev.json"),
        DIFFERENCES_1_8,
        false,
    )
    .await;
    assert!(
        failures.is_empty(),
        "Consul 1.8.17:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn replay_consul_1_10_4_prepared_queries() {
    let failures = replay(
        include_str!("data/consul-recorded/consul-1.10.4-prepared-queries.json"),
        DIFFERENCES_PREPARED_QUERIES,
        true,
    )
    .await;
    assert!(
        failures.is_empty(),
        "Consul 1.10.4 prepared queries:\n{}",
        failures.join("\n")
    );
}

/// Every listed difference names an entry that exists, so the lists cannot rot silently.
#[test]
fn intended_differences_name_recorded_entries() {
    for (file, list) in [
        (
            include_str!("data/consul-recorded/consul-1.10.4-dev.json"),
            DIFFERENCES_1_10,
        ),
        (
            include_str!("data/consul-recorded/consul-1.8.17-dev.json"),
            DIFFERENCES_1_8,
        ),
        (
            include_str!("data/consul-recorded/consul-1.10.4-prepared-queries.json"),
            DIFFERENCES_PREPARED_QUERIES,
        ),
    ] {
        let names: Vec<String> = entries(file).into_iter().map(|e| e.name).collect();
        for (name, _, reason) in list {
            assert!(
                names.iter().any(|n| n == name),
                "{name} ({reason}) is not recorded"
            );
        }
    }
}

/// Sends every entry in order; returns one line per divergence.
async fn replay(
    file: &str,
    differences: &[(&str, Intended, &str)],
    acl_header: bool,
) -> Vec<String> {
    let agent = agent_with(|c| c.node_name = "vm".into()).await;
    let api = Api::new(&agent);
    // Recorded index and content-hash values, mapped to what our agent answered at that point.
    let mut ours_for: Vec<(String, String)> = Vec::new();
    // IDs the recording agent handed out (`{"ID": ...}` answers), mapped to ours.
    let mut ids: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    for mut entry in entries(file) {
        let intended = differences
            .iter()
            .find(|(name, ..)| *name == entry.name)
            .map(|(_, how, _)| how);
        if matches!(intended, Some(Intended::NotSent)) {
            continue;
        }
        let path = ids.iter().fold(
            substitute(&entry.path, &ours_for),
            |path, (recorded, ours)| path.replace(recorded, ours),
        );
        let resp = if entry.name == "match-wait-woken-by-delete" && entry.status == 200 {
            woken_by_delete(&agent, &api, &path).await
        } else {
            api.send(&entry.method, &path, entry.body.as_deref()).await
        };
        for name in PRESENT_HEADERS {
            if let (Some(recorded), Some(ours)) = (recorded_header(&entry, name), resp.header(name))
            {
                ours_for.push((recorded, ours));
            }
        }
        if let (Some(recorded), Some(ours)) = (created_id(&entry.text), created_id(&resp.text)) {
            ids.push((recorded, ours));
        }
        // Error texts may name an ID (`Cannot modify non-existent prepared query: '...'`).
        for (recorded, ours) in &ids {
            entry.text = entry.text.replace(recorded, ours);
        }
        let mut problems = compare(&entry, &resp, intended, acl_header);
        if !problems.is_empty() {
            problems.insert(0, format!("{} {} {path}:", entry.name, entry.method));
            failures.push(problems.join("\n    "));
        }
    }
    agent.shutdown().await;
    failures
}

/// `match-wait-woken-by-delete`: Consul answered after 0.5 s with the deny intention gone, so
/// the recorder deleted it while the query was parked. We do the same: start the query, wait
/// until the agent reports it parked, then delete.
async fn woken_by_delete(agent: &DevAgent, api: &Api, path: &str) -> Resp {
    let query = api.get(path);
    let delete = async {
        common::eventually("the match query to park", || async {
            (agent.blocked_requests() > 0).then_some(())
        })
        .await;
        let deleted = api
            .send(
                "DELETE",
                "/v1/connect/intentions/exact?source=static-client&destination=static-server",
                None,
            )
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.text);
    };
    let (resp, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(query, delete)
    })
    .await
    .expect("the parked match query answers once the intention is deleted");
    resp
}

fn compare(
    entry: &Entry,
    resp: &Resp,
    intended: Option<&Intended>,
    acl_header: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(Intended::Answer {
        status,
        content_type,
    }) = intended
    {
        let ours = resp.header("Content-Type").unwrap_or_default();
        if (resp.status, ours.as_str()) != (*status, *content_type) {
            problems.push(format!(
                "intended answer {status} {content_type:?}, got {} {ours:?}",
                resp.status
            ));
        }
        return problems;
    }
    if resp.status != entry.status {
        problems.push(format!(
            "status: Consul {}, ours {}: {}",
            entry.status, resp.status, resp.text
        ));
    }
    for name in COMPARED_HEADERS {
        if matches!(intended, Some(Intended::Headers(skip)) if skip.contains(name)) {
            continue;
        }
        if *name == "X-Consul-Default-Acl-Policy" && !acl_header {
            continue;
        }
        let (recorded, ours) = (recorded_header(entry, name), resp.header(name));
        if recorded != ours {
            problems.push(format!("header {name}: Consul {recorded:?}, ours {ours:?}"));
        }
    }
    for name in PRESENT_HEADERS {
        if matches!(intended, Some(Intended::Headers(skip)) if skip.contains(name)) {
            continue;
        }
        let (recorded, ours) = (recorded_header(entry, name), resp.header(name));
        if recorded.is_some() != ours.is_some() {
            problems.push(format!("header {name}: Consul {recorded:?}, ours {ours:?}"));
        }
    }
    let Ok(recorded) = serde_json::from_str::<Value>(&entry.text) else {
        if resp.text != entry.text {
            problems.push(format!(
                "text: Consul {:?}, ours {:?}",
                entry.text, resp.text
            ));
        }
        return problems;
    };
    let Ok(ours) = serde_json::from_str::<Value>(&resp.text) else {
        problems.push(format!("Consul sent JSON, ours {:?}", resp.text));
        return problems;
    };
    let masks = match intended {
        Some(Intended::Masked(pointers)) => pointers,
        _ => &[][..],
    };
    let (recorded, ours) = (normalise(recorded, masks), normalise(ours, masks));
    diff("", &recorded, &ours, &mut problems);
    problems
}

/// The ID in a create answer (`{"ID": "..."}`).
fn created_id(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    let map = value.as_object().filter(|m| m.len() == 1)?;
    map.get("ID")?.as_str().map(str::to_string)
}

/// Masks volatile values and the listed pointers; roots and prepared queries in a stable
/// order.
fn normalise(mut value: Value, masks: &[&str]) -> Value {
    if let Some(Value::Array(roots)) = value.pointer_mut("/Roots") {
        // Consul orders roots by ID, which is random: put the active one last.
        roots.sort_by_key(|r| r["Active"].as_bool());
    }
    if let Value::Array(items) = &mut value {
        // Consul lists prepared queries by ID, which is random: order them by name.
        if items.iter().all(|q| q.get("Template").is_some()) {
            items.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
        }
    }
    for pointer in masks {
        let (parent, key) = pointer.rsplit_once('/').expect("pointers start with /");
        match value.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.shift_remove(key);
            }
            Some(Value::Array(items)) => {
                if let Some(item) = key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    *item = Value::Null;
                }
            }
            _ => {}
        }
    }
    if let Value::String(text) = &value {
        // /v1/status/leader: the recording agent's server port was not 8300.
        if text.starts_with("127.0.0.1:") {
            return Value::String("127.0.0.1:<port>".into());
        }
    }
    mask_volatile(&mut value, None);
    value
}

fn mask_volatile(value: &mut Value, parent: Option<&str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let scoped = parent.map(|p| format!("{key}@{p}"));
                let volatile = VOLATILE.contains(&key.as_str())
                    || scoped.as_deref().is_some_and(|k| VOLATILE.contains(&k));
                if volatile && !v.is_null() && !v.is_object() {
                    *v = Value::String(format!("<{key}>"));
                } else {
                    mask_volatile(v, Some(key));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_volatile(v, parent)),
        _ => {}
    }
}

/// Same keys in the same order, same values; one line per difference.
fn diff(at: &str, recorded: &Value, ours: &Value, problems: &mut Vec<String>) {
    match (recorded, ours) {
        (Value::Object(a), Value::Object(b)) => {
            let (ka, kb): (Vec<&String>, Vec<&String>) = (a.keys().collect(), b.keys().collect());
            if ka != kb {
                problems.push(format!("{at}: keys: Consul {ka:?}, ours {kb:?}"));
            }
            for (key, value) in a {
                if let Some(other) = b.get(key) {
                    diff(&format!("{at}/{key}"), value, other, problems);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{at}/{i}"), x, y, problems);
            }
        }
        (a, b) if a != b => problems.push(format!("{at}: Consul {a}, ours {b}")),
        _ => {}
    }
}

/// Replaces `index=N` and `hash=H` values the recording agent handed out with ours.
fn substitute(path: &str, ours_for: &[(String, String)]) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key @ ("index" | "hash"), value)) => {
                let ours = ours_for
                    .iter()
                    .rev()
                    .find(|(r, _)| r == value)
                    .map(|(_, o)| o);
                format!("{key}={}", ours.map_or(value, String::as_str))
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

fn recorded_header(entry: &Entry, name: &str) -> Option<String> {
    entry
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn entries(file: &str) -> Vec<Entry> {
    let list: Value = serde_json::from_str(file).expect("the recording is JSON");
    let list = list.as_array().expect("the recording is a list");
    list.iter()
        .map(|e| {
            let request = &e["request"];
            let response = &e["response"];
            let body = match &request["body"] {
                Value::Null => None,
                Value::String(raw) => Some(raw.clone()),
                json => Some(json.to_string()),
            };
            let headers = response["headers"]
                .as_object()
                .expect("recorded headers are an object")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            Entry {
                name: e["name"].as_str().expect("named").to_string(),
                method: request["method"].as_str().expect("a method").to_string(),
                path: request["path"].as_str().expect("a path").to_string(),
                body,
                status: response["status"].as_u64().expect("a status") as u16,
                headers,
                text: response["body"].as_str().expect("a body").to_string(),
            }
        })
        .collect()
}
