//! Prepared queries against the in-process agent over real sockets: create, list, read,
//! update, execute (with and without Connect, health filtering, tags, `?limit`), delete, and
//! the errors a proxy polling `GET /v1/query/NAME/execute` can meet. The exact shapes are held
//! to real Consul 1.10.4 by `tests/recorded.rs` (`consul-1.10.4-prepared-queries.json`).

mod common;

use common::{agent, agent_with, Api};
use serde_json::{json, Value};

/// Creates a query and returns its ID.
async fn create(api: &Api, definition: Value) -> String {
    let resp = api.post("/v1/query", &definition.to_string()).await;
    assert_eq!(resp.status, 200, "POST /v1/query: {}", resp.text);
    resp.json()["ID"]
        .as_str()
        .expect("a create answer carries the ID")
        .to_string()
}

/// The `Service.ID`s an execution returned, sorted (Consul shuffles them).
async fn executed_ids(api: &Api, path: &str) -> Vec<String> {
    let body = api.json(path).await;
    let mut ids: Vec<String> = body["Nodes"]
        .as_array()
        .expect("Nodes is a list, never null")
        .iter()
        .map(|n| n["Service"]["ID"].as_str().expect("an ID").to_string())
        .collect();
    ids.sort();
    ids
}

async fn register(api: &Api, body: Value) {
    api.ok_put("/v1/agent/service/register", &body.to_string())
        .await;
}

#[tokio::test]
async fn create_list_read_execute_delete() {
    let agent = agent().await;
    let api = Api::new(&agent);
    assert_eq!(api.json("/v1/query").await, json!([]));
    register(&api, json!({"ID": "web-1", "Name": "web", "Port": 8080})).await;

    let id = create(&api, json!({"Name": "web", "Service": {"Service": "web"}})).await;
    let list = api.json("/v1/query").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["ID"], id.as_str());
    assert_eq!(list[0]["Service"]["Service"], "web");
    let read = api.json(&format!("/v1/query/{id}")).await;
    assert_eq!(read, list, "reading by ID answers a list of one");

    // By name (any case) and by ID.
    for target in ["web", "WEB", id.as_str()] {
        let path = format!("/v1/query/{target}/execute");
        assert_eq!(executed_ids(&api, &path).await, ["web-1"], "{path}");
    }

    let update = json!({"Name": "web", "Service": {"Service": "web", "Tags": ["v2"]}});
    let resp = api
        .put(&format!("/v1/query/{id}"), &update.to_string())
        .await;
    assert_eq!((resp.status, resp.text.as_str()), (200, ""));
    assert!(executed_ids(&api, "/v1/query/web/execute").await.is_empty());

    let resp = api.send("DELETE", &format!("/v1/query/{id}"), None).await;
    assert_eq!((resp.status, resp.text.as_str()), (200, ""));
    assert_eq!(api.json("/v1/query").await, json!([]));
    let resp = api.get("/v1/query/web/execute").await;
    assert_eq!((resp.status, resp.text.as_str()), (404, "Query not found"));
    agent.shutdown().await;
}

#[tokio::test]
async fn execute_answers_consuls_fields_in_consuls_order() {
    let agent = agent().await;
    let api = Api::new(&agent);
    register(&api, json!({"ID": "web-1", "Name": "web", "Port": 8080})).await;
    create(
        &api,
        json!({"Name": "web", "Service": {"Service": "web"}, "DNS": {"TTL": "10s"}}),
    )
    .await;

    let resp = api.get("/v1/query/web/execute").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.header("X-Consul-Index").as_deref(), Some("1"));
    let body = resp.json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "Service",
            "Nodes",
            "DNS",
            "Datacenter",
            "Failovers",
            "Index",
            "LastContact",
            "KnownLeader",
            "ConsistencyLevel",
            "NotModified",
            "Backend"
        ]
    );
    assert_eq!(body["Service"], "web");
    assert_eq!(body["DNS"], json!({"TTL": "10s"}));
    assert_eq!(body["Datacenter"], "dc1");
    assert_eq!(body["Failovers"], 0);
    let node = &body["Nodes"][0];
    assert_eq!(node["Node"]["Node"], "test-node");
    assert_eq!(node["Service"]["Port"], 8080);
    // Tags never given stay null here (the health endpoints say []).
    assert_eq!(node["Service"]["Tags"], Value::Null);
    assert_eq!(node["Checks"][0]["CheckID"], "serfHealth");
    assert_eq!(node["Checks"][0]["ServiceTags"], Value::Null);
    agent.shutdown().await;
}

#[tokio::test]
async fn connect_queries_return_sidecars_and_native_instances() {
    let agent = agent().await;
    let api = Api::new(&agent);
    register(&api, json!({"ID": "web-1", "Name": "web", "Port": 8080})).await;
    // A sidecar without checks: `Connect.SidecarService` would add a TCP check on its
    // listener, critical here with nothing listening, and the proxy would be left out.
    register(
        &api,
        json!({"Kind": "connect-proxy", "ID": "web-1-sidecar-proxy", "Name": "web-sidecar-proxy",
               "Port": 21000, "Proxy": {"DestinationServiceName": "web",
                                        "DestinationServiceID": "web-1",
                                        "LocalServicePort": 8080}}),
    )
    .await;
    register(
        &api,
        json!({"ID": "pay-1", "Name": "pay", "Port": 7000, "Connect": {"Native": true}}),
    )
    .await;
    create(&api, json!({"Name": "web", "Service": {"Service": "web"}})).await;
    create(
        &api,
        json!({"Name": "web-mesh", "Service": {"Service": "web", "Connect": true}}),
    )
    .await;
    create(
        &api,
        json!({"Name": "pay-mesh", "Service": {"Service": "pay", "Connect": true}}),
    )
    .await;

    assert_eq!(executed_ids(&api, "/v1/query/web/execute").await, ["web-1"]);
    let body = api.json("/v1/query/web-mesh/execute").await;
    assert_eq!(
        body["Service"], "web",
        "the query's service, not the proxy's"
    );
    let proxy = &body["Nodes"][0]["Service"];
    assert_eq!(proxy["Kind"], "connect-proxy");
    assert_eq!(proxy["ID"], "web-1-sidecar-proxy");
    assert_eq!(proxy["Port"], 21000);
    assert_eq!(proxy["Proxy"]["DestinationServiceName"], "web");
    // `?connect=true` asks for the mesh endpoints of a query without `Connect`.
    assert_eq!(
        executed_ids(&api, "/v1/query/web/execute?connect=true").await,
        ["web-1-sidecar-proxy"]
    );
    assert_eq!(
        executed_ids(&api, "/v1/query/pay-mesh/execute").await,
        ["pay-1"]
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn critical_instances_are_left_out_and_only_passing_leaves_out_warnings() {
    let agent = agent().await;
    let api = Api::new(&agent);
    for (id, status) in [
        ("db-1", "passing"),
        ("db-2", "warning"),
        ("db-3", "critical"),
    ] {
        register(
            &api,
            json!({"ID": id, "Name": "db", "Port": 5432, "Tags": [id],
                   "Check": {"CheckID": format!("{id}-ttl"), "TTL": "10m", "Status": status}}),
        )
        .await;
    }
    create(&api, json!({"Name": "db", "Service": {"Service": "db"}})).await;
    create(
        &api,
        json!({"Name": "db-passing", "Service": {"Service": "db", "OnlyPassing": true}}),
    )
    .await;
    create(
        &api,
        json!({"Name": "db-ignore", "Service": {"Service": "db", "IgnoreCheckIDs": ["db-3-ttl"]}}),
    )
    .await;

    assert_eq!(
        executed_ids(&api, "/v1/query/db/execute").await,
        ["db-1", "db-2"]
    );
    assert_eq!(
        executed_ids(&api, "/v1/query/db-passing/execute").await,
        ["db-1"]
    );
    assert_eq!(
        executed_ids(&api, "/v1/query/db-ignore/execute").await,
        ["db-1", "db-2", "db-3"]
    );

    // Executions do not block: the next poll sees a check that turned critical.
    api.ok_put("/v1/agent/check/fail/db-1-ttl", "").await;
    assert_eq!(executed_ids(&api, "/v1/query/db/execute").await, ["db-2"]);
    assert!(executed_ids(&api, "/v1/query/db-passing/execute")
        .await
        .is_empty());
    agent.shutdown().await;
}

#[tokio::test]
async fn tags_and_limit_narrow_the_answer() {
    let agent = agent().await;
    let api = Api::new(&agent);
    for (id, tags) in [
        ("api-1", json!(["v1"])),
        ("api-2", json!(["v1", "Canary"])),
        ("api-3", json!([])),
    ] {
        register(
            &api,
            json!({"ID": id, "Name": "api", "Port": 9000, "Tags": tags}),
        )
        .await;
    }
    create(
        &api,
        json!({"Name": "stable", "Service": {"Service": "api", "Tags": ["V1", "!canary"]}}),
    )
    .await;
    create(&api, json!({"Name": "all", "Service": {"Service": "api"}})).await;

    assert_eq!(
        executed_ids(&api, "/v1/query/stable/execute").await,
        ["api-1"]
    );
    assert_eq!(
        executed_ids(&api, "/v1/query/all/execute?limit=2")
            .await
            .len(),
        2
    );
    assert_eq!(
        executed_ids(&api, "/v1/query/all/execute?limit=0")
            .await
            .len(),
        3
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn unknown_and_malformed_queries_answer_like_consul() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let unknown = "00000000-0000-0000-0000-000000000000";
    for path in [
        "/v1/query/nope/execute".to_string(),
        format!("/v1/query/{unknown}/execute"),
        format!("/v1/query/{unknown}"),
        "/v1/query/nope/explain".to_string(),
    ] {
        let resp = api.get(&path).await;
        assert_eq!(
            (resp.status, resp.text.as_str()),
            (404, "Query not found"),
            "{path}"
        );
        assert_eq!(
            resp.header("Content-Type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
    let resp = api.get("/v1/query/nope").await;
    assert_eq!(
        (resp.status, resp.text.as_str()),
        (
            500,
            "failed prepared query lookup: index error: UUID must be 36 characters"
        )
    );
    let resp = api
        .send("DELETE", &format!("/v1/query/{unknown}"), None)
        .await;
    assert_eq!(
        (resp.status, resp.text.as_str()),
        (
            500,
            "Cannot modify non-existent prepared query: '00000000-0000-0000-0000-000000000000'"
        )
    );
    let resp = api.post("/v1/query", r#"{"Name": "x"}"#).await;
    assert_eq!(
        (resp.status, resp.text.as_str()),
        (
            500,
            "Invalid prepared query: Must provide a Service name to query"
        )
    );
    let resp = api.post("/v1/query/web/execute", "{}").await;
    assert_eq!(
        (resp.status, resp.header("Allow").as_deref()),
        (405, Some("GET"))
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn queries_outlive_an_agent_restart_but_registrations_do_not() {
    let agent = agent().await;
    let api = Api::new(&agent);
    register(&api, json!({"ID": "web-1", "Name": "web", "Port": 8080})).await;
    create(&api, json!({"Name": "web", "Service": {"Service": "web"}})).await;
    agent.pause().await;
    agent.resume().await;
    assert!(executed_ids(&api, "/v1/query/web/execute").await.is_empty());
    register(&api, json!({"ID": "web-1", "Name": "web", "Port": 8080})).await;
    assert_eq!(executed_ids(&api, "/v1/query/web/execute").await, ["web-1"]);
    agent.shutdown().await;
}

#[tokio::test]
async fn require_token_guards_writes_and_filters_reads() {
    let agent = agent_with(|c| c.require_token = Some("secret".into())).await;
    let admin = Api::with_token(&agent, "secret");
    let anonymous = Api::new(&agent);
    admin
        .ok_put(
            "/v1/agent/service/register",
            &json!({"ID": "web-1", "Name": "web", "Port": 8080}).to_string(),
        )
        .await;
    let definition = json!({"Name": "web", "Service": {"Service": "web"}}).to_string();
    let resp = anonymous.post("/v1/query", &definition).await;
    assert_eq!(resp.status, 403);
    assert!(
        resp.text.contains("'query:write' on \"web\""),
        "{}",
        resp.text
    );
    create(
        &admin,
        json!({"Name": "web", "Service": {"Service": "web"}}),
    )
    .await;

    assert_eq!(
        executed_ids(&admin, "/v1/query/web/execute").await,
        ["web-1"]
    );
    assert!(executed_ids(&anonymous, "/v1/query/web/execute")
        .await
        .is_empty());
    assert_eq!(anonymous.json("/v1/query").await, json!([]));
    let resp = Api::with_token(&agent, "wrong")
        .get("/v1/query/web/execute")
        .await;
    assert_eq!((resp.status, resp.text.as_str()), (403, "ACL not found"));
    agent.shutdown().await;
}
