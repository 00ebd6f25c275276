//! Blocking queries (`?index=&wait=`) on every endpoint that supports them, without races:
//! each wake-up test starts the request with the current index and a long `wait`, waits until
//! the agent reports it parked (`DevAgent::blocked_requests`), and only then makes the change.
//! A request that answers before the change fails the test at once, so a non-blocking
//! implementation cannot pass by luck of scheduling. The short-wait tests check the other half
//! of the protocol: with nothing changed, the wait runs out and the same index and body come
//! back; an index ahead of the agent's (a client that saw a reset agent, or a made-up index)
//! is held only until the wait runs out and answered with the agent's current, lower index,
//! which is the signal for a Consul client to reset to 0.

mod common;

use std::time::Duration;

use common::{agent, eventually, Api, Resp};
use serde_json::{json, Value};
use tandem_agent::DevAgent;
use tokio::task::JoinHandle;

/// Long enough that only a change (or a broken implementation) ends the request.
const LONG_WAIT: &str = "10m";
/// Bound on how long a test waits for a woken request before failing (instead of `LONG_WAIT`).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

const ROTATE_CA: &str = r#"{"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}"#;
const WEB: &str = r#"{"Name": "web", "Port": 8080}"#;
const WEB_PROXY: &str = r#"{"Name": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
    "Proxy": {"DestinationServiceName": "web", "DestinationServiceID": "web"}}"#;
const API_WITH_TTL: &str = r#"{"Name": "api", "Port": 9000, "Check": {"TTL": "10m"}}"#;
const WEB_HTTP: &str = r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#;
const WEB_GRPC: &str = r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}"#;

/// Starts `GET path` with `?index=index&wait=10m` on its own task.
fn spawn_blocking_get(agent: &DevAgent, path: &str, index: u64) -> JoinHandle<Resp> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{path}{sep}index={index}&wait={LONG_WAIT}");
    let api = timed_api(agent);
    tokio::spawn(async move { api.get(&url).await })
}

/// A client that gives up after [`CLIENT_TIMEOUT`], so a request that never answers fails the
/// test instead of hanging it.
fn timed_api(agent: &DevAgent) -> Api {
    tandem_certs::tls::install_default();
    Api {
        client: reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .expect("a reqwest client"),
        ..Api::new(agent)
    }
}

/// Waits until `waiters.len()` requests are parked in the agent; fails as soon as one of them
/// answers first (it did not block).
async fn wait_parked(agent: &DevAgent, waiters: &[&JoinHandle<Resp>]) {
    eventually("the blocking requests to park", || {
        let parked = agent.blocked_requests();
        let answered = waiters.iter().any(|w| w.is_finished());
        async move {
            assert!(
                !answered,
                "a blocking request answered before any change: it did not block"
            );
            (parked == waiters.len()).then_some(())
        }
    })
    .await;
}

/// Blocks on `path` at `index`, makes `change` once the request is parked, returns the answer.
async fn block_then_change(
    agent: &DevAgent,
    path: &str,
    index: u64,
    change: impl std::future::Future<Output = ()>,
) -> Resp {
    let waiter = spawn_blocking_get(agent, path, index);
    wait_parked(agent, &[&waiter]).await;
    change.await;
    let resp = waiter.await.expect("the blocking request task completes");
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text);
    assert!(
        resp.index() > index,
        "GET {path}: woken with index {} not above {index}",
        resp.index()
    );
    assert_eq!(agent.blocked_requests(), 0, "nothing is left parked");
    resp
}

/// With the current index and a short wait nothing changes: same index, same body. An index
/// ahead of the agent's returns when the wait runs out, with the agent's current index.
async fn assert_unchanged_waits(agent: &DevAgent, path: &str) {
    let api = timed_api(agent);
    let sep = if path.contains('?') { '&' } else { '?' };
    let current = api.get(path).await;
    assert_eq!(current.status, 200, "GET {path}: {}", current.text);
    let index = current.index();

    let same = api
        .get(&format!("{path}{sep}index={index}&wait=200ms"))
        .await;
    assert_eq!(same.status, 200, "GET {path} (short wait): {}", same.text);
    assert_eq!(
        same.index(),
        index,
        "GET {path}: index moved without a change"
    );
    assert_eq!(same.json(), current.json(), "GET {path}: body changed");

    let ahead = index + 1000;
    let reset = api
        .get(&format!("{path}{sep}index={ahead}&wait=200ms"))
        .await;
    assert_eq!(
        reset.status, 200,
        "GET {path} (index ahead): {}",
        reset.text
    );
    assert_eq!(
        reset.index(),
        index,
        "GET {path}: an index ahead answers with the current index"
    );
    assert_eq!(reset.json(), current.json(), "GET {path}: body changed");
}

/// The status of check `id` in the first entry of a health answer.
fn ttl_status(health: &Value, id: &str) -> String {
    let checks = health[0]["Checks"].as_array().expect("a check list");
    let check = checks
        .iter()
        .find(|c| c["CheckID"] == id)
        .unwrap_or_else(|| panic!("check {id} is listed: {health}"));
    check["Status"].as_str().expect("a status").to_string()
}

// ---- woken by a change ----

#[tokio::test]
async fn blocking_roots_wake_on_ca_rotation() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let before = api.get("/v1/agent/connect/ca/roots").await;
    let old_id = before.json()["ActiveRootID"].clone();
    let resp = block_then_change(
        &agent,
        "/v1/agent/connect/ca/roots",
        before.index(),
        async {
            api.ok_put("/v1/connect/ca/configuration", ROTATE_CA).await;
        },
    )
    .await;
    let roots = resp.json();
    assert_eq!(roots["Roots"].as_array().expect("a root list").len(), 2);
    assert_ne!(roots["ActiveRootID"], old_id);
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_leaf_wakes_on_ca_rotation() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let before = api.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(before.status, 200, "{}", before.text);
    let old = before.json();
    assert_eq!(before.index(), old["ModifyIndex"].as_u64().unwrap());
    let resp = block_then_change(
        &agent,
        "/v1/agent/connect/ca/leaf/web",
        before.index(),
        async {
            api.ok_put("/v1/connect/ca/configuration", ROTATE_CA).await;
        },
    )
    .await;
    let leaf = resp.json();
    assert_ne!(leaf["SerialNumber"], old["SerialNumber"]);
    assert_eq!(leaf["ModifyIndex"].as_u64().unwrap(), resp.index());
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_health_connect_wakes_on_registration() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", WEB).await;
    let before = api.get("/v1/health/connect/web").await;
    assert_eq!(before.json(), json!([]));
    let resp = block_then_change(&agent, "/v1/health/connect/web", before.index(), async {
        api.ok_put("/v1/agent/service/register", WEB_PROXY).await;
    })
    .await;
    let body = resp.json();
    assert_eq!(body[0]["Service"]["ID"], "web-sidecar-proxy");
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_health_service_wakes_on_registration() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let before = api.get("/v1/health/service/web").await;
    assert_eq!(before.json(), json!([]));
    let resp = block_then_change(&agent, "/v1/health/service/web", before.index(), async {
        api.ok_put("/v1/agent/service/register", WEB).await;
    })
    .await;
    assert_eq!(resp.json()[0]["Service"]["ID"], "web");
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_health_service_wakes_on_check_change() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", API_WITH_TTL).await;
    // A new TTL check is critical: `?passing` leaves the instance out until it passes.
    let path = "/v1/health/service/api?passing";
    let before = api.get(path).await;
    assert_eq!(before.json(), json!([]));
    let resp = block_then_change(&agent, path, before.index(), async {
        api.ok_put("/v1/agent/check/pass/service:api", "").await;
    })
    .await;
    let body = resp.json();
    assert_eq!(body[0]["Service"]["ID"], "api");
    assert_eq!(ttl_status(&body, "service:api"), "passing");
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_health_connect_wakes_on_check_change() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let proxy = json!({"Name": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
        "Proxy": {"DestinationServiceName": "web"}, "Check": {"TTL": "10m"}});
    api.ok_put("/v1/agent/service/register", &proxy.to_string())
        .await;
    let path = "/v1/health/connect/web";
    let before = api.get(path).await;
    assert_eq!(
        ttl_status(&before.json(), "service:web-sidecar-proxy"),
        "critical"
    );
    let resp = block_then_change(&agent, path, before.index(), async {
        api.ok_put("/v1/agent/check/pass/service:web-sidecar-proxy", "")
            .await;
    })
    .await;
    assert_eq!(
        ttl_status(&resp.json(), "service:web-sidecar-proxy"),
        "passing"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_catalog_service_wakes_on_registration() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let before = api.get("/v1/catalog/service/web").await;
    assert_eq!(before.json(), json!([]));
    let resp = block_then_change(&agent, "/v1/catalog/service/web", before.index(), async {
        api.ok_put("/v1/agent/service/register", WEB).await;
    })
    .await;
    let body = resp.json();
    assert_eq!(body[0]["ServiceID"], "web");
    assert_eq!(body[0]["ServicePort"], 8080);
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_intention_list_wakes_on_change() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let before = api.get("/v1/connect/intentions").await;
    assert_eq!(before.json(), json!([]));
    let resp = block_then_change(&agent, "/v1/connect/intentions", before.index(), async {
        api.ok_put(
            "/v1/connect/intentions/exact?source=web&destination=db",
            r#"{"Action": "allow"}"#,
        )
        .await;
    })
    .await;
    let body = resp.json();
    assert_eq!(body[0]["SourceName"], "web");
    assert_eq!(body[0]["DestinationName"], "db");
    assert_eq!(body[0]["Action"], "allow");
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_intention_match_wakes_on_change() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let path = "/v1/connect/intentions/match?by=destination&name=db";
    let before = api.get(path).await;
    // A destination without intentions is Go's nil slice: null (recorded from Consul 1.10.4).
    assert_eq!(before.json(), json!({"db": null}));
    let resp = block_then_change(&agent, path, before.index(), async {
        api.ok_put(
            "/v1/connect/intentions/exact?source=web&destination=db",
            r#"{"Action": "deny"}"#,
        )
        .await;
    })
    .await;
    let body = resp.json();
    assert_eq!(body["db"][0]["SourceName"], "web");
    assert_eq!(body["db"][0]["Action"], "deny");
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_config_entry_wakes_on_write() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/config", WEB_HTTP).await;
    let path = "/v1/config/service-defaults/web";
    let before = api.get(path).await;
    assert_eq!(before.json()["Protocol"], "http");
    let resp = block_then_change(&agent, path, before.index(), async {
        api.ok_put("/v1/config", WEB_GRPC).await;
    })
    .await;
    let entry = resp.json();
    assert_eq!(entry["Protocol"], "grpc");
    assert_eq!(entry["ModifyIndex"].as_u64().unwrap(), resp.index());
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_missing_config_entry_answers_once_written() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let path = "/v1/config/proxy-defaults/global";
    let before = api.get(path).await;
    // Consul sets the query metadata before it finds the entry missing.
    assert_eq!(
        (before.status, before.text.as_str()),
        (
            404,
            "Config entry not found for \"proxy-defaults\" / \"global\""
        )
    );
    let resp = block_then_change(&agent, path, before.index(), async {
        api.ok_put(
            "/v1/config",
            r#"{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}"#,
        )
        .await;
    })
    .await;
    assert_eq!(resp.json()["Config"], json!({"protocol": "http"}));
    agent.shutdown().await;
}

#[tokio::test]
async fn blocking_config_entry_list_wakes_on_delete() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/config", WEB_HTTP).await;
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "service-defaults", "Name": "api"}"#,
    )
    .await;
    let path = "/v1/config/service-defaults";
    let before = api.get(path).await;
    assert_eq!(before.json().as_array().map(Vec::len), Some(2));
    let resp = block_then_change(&agent, path, before.index(), async {
        let deleted = api
            .send("DELETE", "/v1/config/service-defaults/api", None)
            .await;
        assert_eq!((deleted.status, deleted.text.as_str()), (200, "{}\n"));
    })
    .await;
    let names: Vec<Value> = resp
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].clone())
        .collect();
    assert_eq!(names, [json!("web")]);
    agent.shutdown().await;
}

/// Consul 1.10 keeps intentions as config entries, in one table: a service-defaults write
/// moves the index intention queries block on, and wakes them (with the same body).
#[tokio::test]
async fn blocking_intention_match_wakes_on_config_entry_write() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let path = "/v1/connect/intentions/match?by=destination&name=web";
    let before = api.get(path).await;
    let resp = block_then_change(&agent, path, before.index(), async {
        api.ok_put("/v1/config", WEB_HTTP).await;
    })
    .await;
    assert_eq!(resp.json(), before.json());
    let entry = api.get("/v1/config/service-defaults/web").await;
    assert_eq!(entry.index(), resp.index());
    agent.shutdown().await;
}

// ---- nothing changes: the wait runs out ----

#[tokio::test]
async fn roots_short_wait_and_index_ahead_return_current_index() {
    let agent = agent().await;
    assert_unchanged_waits(&agent, "/v1/agent/connect/ca/roots").await;
    assert_unchanged_waits(&agent, "/v1/connect/ca/roots").await;
    agent.shutdown().await;
}

#[tokio::test]
async fn leaf_short_wait_and_index_ahead_return_current_index() {
    let agent = agent().await;
    assert_unchanged_waits(&agent, "/v1/agent/connect/ca/leaf/web").await;
    agent.shutdown().await;
}

#[tokio::test]
async fn health_short_wait_and_index_ahead_return_current_index() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", API_WITH_TTL).await;
    api.ok_put("/v1/agent/service/register", WEB).await;
    api.ok_put("/v1/agent/service/register", WEB_PROXY).await;
    assert_unchanged_waits(&agent, "/v1/health/service/api").await;
    assert_unchanged_waits(&agent, "/v1/health/connect/web").await;
    agent.shutdown().await;
}

#[tokio::test]
async fn catalog_service_short_wait_and_index_ahead_return_current_index() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", WEB).await;
    assert_unchanged_waits(&agent, "/v1/catalog/service/web").await;
    agent.shutdown().await;
}

#[tokio::test]
async fn intentions_short_wait_and_index_ahead_return_current_index() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put(
        "/v1/connect/intentions/exact?source=web&destination=db",
        r#"{"Action": "allow"}"#,
    )
    .await;
    assert_unchanged_waits(&agent, "/v1/connect/intentions").await;
    assert_unchanged_waits(
        &agent,
        "/v1/connect/intentions/match?by=destination&name=db",
    )
    .await;
    agent.shutdown().await;
}

#[tokio::test]
async fn config_entries_short_wait_and_index_ahead_return_current_index() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/config", WEB_HTTP).await;
    assert_unchanged_waits(&agent, "/v1/config/service-defaults/web").await;
    assert_unchanged_waits(&agent, "/v1/config/service-defaults").await;
    agent.shutdown().await;
}
