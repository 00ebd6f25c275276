//! Bad input gets Consul's status code and plain-text message, never a panic, and leaves the
//! state exactly as it was.

mod common;

use common::{agent, Api};
use serde_json::{json, Value};

/// Everything a bad request could have changed.
async fn snapshot(api: &Api) -> Value {
    let roots = api.json("/v1/agent/connect/ca/roots").await;
    json!({
        "services": api.json("/v1/agent/services").await,
        "checks": api.json("/v1/agent/checks").await,
        "intentions": api.json("/v1/connect/intentions").await,
        "active_root": roots["ActiveRootID"],
        "roots": roots["Roots"].as_array().map(Vec::len),
        "ca": api.json("/v1/connect/ca/configuration").await,
    })
}

const CASES: &[(&str, &str, &str, u16, &str)] = &[
    // Service registration.
    ("PUT", "/v1/agent/service/register", "", 400, "Request decode failed: EOF"),
    ("PUT", "/v1/agent/service/register", "{", 400, "Request decode failed: unexpected EOF"),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": 5}"#,
        400,
        "Request decode failed: json: cannot unmarshal number into Go struct field ServiceDefinition.Name of type string",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "a", "Port": "80"}"#,
        400,
        "Request decode failed: json: cannot unmarshal string into Go struct field ServiceDefinition.Port of type int",
    ),
    ("PUT", "/v1/agent/service/register", r#"{"Port": 1}"#, 400, "Missing service name"),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "p", "Kind": "connect-proxy", "Port": 1}"#,
        400,
        "Validation failed: 1 error occurred:\n\t* Proxy.DestinationServiceName must be non-empty for Connect proxy services\n\n",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "p", "Kind": "connect-proxy", "Proxy": {"DestinationServiceName": "web"}}"#,
        400,
        "Validation failed: 1 error occurred:\n\t* Port or SocketPath must be set for a connect-proxy\n\n",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "a", "Check": {"TCP": "127.0.0.1:1"}}"#,
        400,
        "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "a", "Check": {"TTL": "10s", "Status": "great"}}"#,
        400,
        "Status for checks must 'passing', 'warning', 'critical'",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "a", "Port": 1, "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"LocalBindPort": 1}]}}}}"#,
        400,
        "Validation failed: 1 error occurred:\n\t* upstream destination name cannot be empty\n\n",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "a", "Port": 1, "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"DestinationName": "db"}]}}}}"#,
        400,
        "Validation failed: 1 error occurred:\n\t* upstream local bind port or local socket path must be defined and nonzero\n\n",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "p", "Kind": "connect-proxy", "Port": 2, "Proxy": {"DestinationServiceName": "a", "Upstreams": [{"DestinationName": "db", "LocalBindPort": 1}, {"DestinationName": "db", "LocalBindPort": 1}]}}"#,
        400,
        "Validation failed: 1 error occurred:\n\t* upstreams cannot contain duplicates of db\n\n",
    ),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "a", "Port": 1, "Connect": {"SidecarService": {"Connect": {"SidecarService": {}}}}}"#,
        400,
        "Invalid SidecarService: sidecar_service can't have a nested sidecar_service",
    ),
    // Consul 1.10 answers 200 and only logs "Service does not exist".
    ("PUT", "/v1/agent/service/deregister/nope", "", 200, ""),
    // Unknown fields, at any depth Consul's decoder checks them (verified against 1.10.4).
    ("PUT", "/v1/agent/service/register", r#"{"Name": "typo", "Prot": 80}"#, 400, "Request decode failed: json: unknown field \"Prot\""),
    ("PUT", "/v1/agent/service/register", r#"{"Name": "a", "Namespace": "default"}"#, 400, "Request decode failed: json: unknown field \"Namespace\""),
    ("PUT", "/v1/agent/service/register", r#"{"Name": "a", "Weights": {"Passing": 1, "Bogus": 1}}"#, 400, "Request decode failed: json: unknown field \"Bogus\""),
    ("PUT", "/v1/agent/service/register", r#"{"Name": "a", "Check": {"TTL": "1s", "ID": "x"}}"#, 400, "Request decode failed: json: unknown field \"ID\""),
    ("PUT", "/v1/agent/service/register", r#"{"Name": "a", "Connect": {"SidecarService": {"Bogus": 1}}}"#, 400, "Request decode failed: json: unknown field \"Bogus\""),
    (
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name": "p", "Kind": "connect-proxy", "Port": 1, "Proxy": {"DestinationServiceName": "a", "Upstreams": [{"DestinationName": "d", "LocalBindPort": 2, "DestinationPeer": "p"}]}}"#,
        400,
        "Request decode failed: json: unknown field \"DestinationPeer\"",
    ),
    ("PUT", "/v1/agent/service/register", r#"{"Name": "a", "socket_path": ""}"#, 400, "Request decode failed: json: unknown field \"socket_path\""),
    ("PUT", "/v1/agent/check/register", r#"{"Name": "x", "TTL": "1s", "CheckID": "y"}"#, 400, "Request decode failed: json: unknown field \"CheckID\""),
    ("PUT", "/v1/agent/service/register", r#"{"Name": "a", "Check": {"Name": "c"}}"#, 400, "Invalid check: TTL must be > 0 for TTL checks"),
    ("GET", "/v1/agent/service/nope", "", 404, "unknown service ID: nope"),
    // Checks.
    (
        "PUT",
        "/v1/agent/check/pass/nope",
        "",
        404,
        "Unknown check ID \"nope\". Ensure that the check ID is passed, not the check name.",
    ),
    ("PUT", "/v1/agent/check/update/service:job", r#"{"Status": "great"}"#, 400, "Invalid check status: 'great'"),
    ("PUT", "/v1/agent/check/update/service:job", "[", 400, "Request decode failed: unexpected EOF"),
    ("PUT", "/v1/agent/check/pass/serfHealth", "", 500, "CheckID \"serfHealth\" does not have associated TTL"),
    ("PUT", "/v1/agent/check/register", r#"{"TTL": "10s"}"#, 400, "Missing check name"),
    // Blocking/query parameters.
    ("GET", "/v1/health/connect/web?index=abc", "", 400, "Invalid index"),
    ("GET", "/v1/health/connect/web?index=1&wait=forever", "", 400, "Invalid wait time"),
    ("GET", "/v1/health/connect/web?passing=maybe", "", 400, "Invalid value for ?passing"),
    (
        "GET",
        "/v1/health/service/web?stale&consistent",
        "",
        400,
        "Cannot specify ?stale with ?consistent, conflicting semantics.",
    ),
    ("GET", "/v1/agent/connect/ca/roots?index=-1", "", 400, "Invalid index"),
    ("GET", "/v1/health/connect/", "", 400, "Missing service name"),
    ("GET", "/v1/catalog/service/", "", 400, "Missing service name"),
    ("GET", "/v1/agent/connect/ca/leaf/", "", 500, "URI must be either service or agent"),
    // Intentions.
    ("GET", "/v1/connect/intentions/match?by=nope&name=x", "", 500, "'by' parameter must be one of 'source' or 'destination'"),
    ("GET", "/v1/connect/intentions/abc", "", 400, "Bad request: failed config entry lookup: index error: UUID must be 36 characters"),
    ("DELETE", "/v1/connect/intentions/abc", "", 500, "Intention lookup failed: failed config entry lookup: index error: UUID must be 36 characters"),
    ("GET", "/v1/connect/intentions/exact?destination=db", "", 500, "required query parameter 'source' not set"),
    ("GET", "/v1/connect/intentions/exact?source=web&destination=db", "", 404, "Intention not found"),
    (
        "PUT",
        "/v1/connect/intentions/exact?source=web&destination=db",
        r#"{"Action": "maybe"}"#,
        500,
        "Sources[0].Action must be set to 'allow' or 'deny'",
    ),
    (
        "PUT",
        "/v1/connect/intentions/exact?source=web&destination=db",
        r#"{"Action": 1}"#,
        400,
        "Bad request: Request decode failed: json: cannot unmarshal number into Go struct field .Action of type structs.IntentionAction",
    ),
    (
        "PUT",
        "/v1/connect/intentions/exact?source=we*&destination=db",
        r#"{"Action": "allow"}"#,
        500,
        "Sources[0].Name: wildcard character '*' cannot be used with partial values",
    ),
    ("GET", "/v1/connect/intentions/match?by=destination", "", 500, "required query parameter 'name' not set"),
    ("GET", "/v1/connect/intentions/check?source=web", "", 500, "required query parameter 'destination' not set"),
    (
        "POST",
        "/v1/connect/intentions",
        r#"{"SourceName": "web", "Action": "allow"}"#,
        500,
        "1 error occurred:\n\t* DestinationName must be set\n\n",
    ),
    // Authorize.
    ("POST", "/v1/agent/connect/authorize", "{}", 400, "Target service must be specified"),
    (
        "POST",
        "/v1/agent/connect/authorize",
        r#"{"Target": "db", "ClientCertURI": "https://example.com"}"#,
        400,
        "ClientCertURI not a valid Connect identifier",
    ),
    (
        "POST",
        "/v1/agent/connect/authorize",
        r#"{"Target": "db", "ClientCertURI": "spiffe://1111.consul/agent/client/dc/dc1/id/node"}"#,
        400,
        "ClientCertURI not a valid Service identifier",
    ),
    (
        "POST",
        "/v1/agent/connect/authorize",
        "nope",
        400,
        "Request decode failed: invalid character 'o' looking for beginning of value",
    ),
    ("GET", "/v1/health/connect/web?dc=dc9", "", 500, "No path to datacenter"),
    // CA.
    (
        "PUT",
        "/v1/connect/ca/configuration",
        r#"{"Provider": "consul", "Config": {"LeafCertTTL": "5m"}}"#,
        400,
        "leaf cert TTL must be greater or equal than 1h0m0s",
    ),
    // Methods and paths.
    ("DELETE", "/v1/agent/self", "", 405, "method DELETE not allowed"),
    ("GET", "/v1/agent/connect/authorize", "", 405, "method GET not allowed"),
    ("GET", "/v1/no/such/endpoint", "", 404, "404 page not found\n"),
];

#[tokio::test]
async fn bad_requests_get_consul_errors_and_change_nothing() {
    let agent = agent().await;
    let api = Api::new(&agent);
    // Some state for the bad requests to (not) disturb.
    api.ok_put(
        "/v1/agent/service/register",
        r#"{"Name": "job", "Port": 1, "Check": {"TTL": "10m", "Status": "passing"}}"#,
    )
    .await;
    api.ok_put(
        "/v1/connect/intentions/exact?source=a&destination=b",
        r#"{"Action": "deny"}"#,
    )
    .await;
    let before = snapshot(&api).await;

    let mut failures = Vec::new();
    for (method, path, body, status, text) in CASES {
        let resp = api
            .send(method, path, (!body.is_empty()).then_some(*body))
            .await;
        if resp.status != *status || resp.text != *text {
            failures.push(format!(
                "{method} {path} {body}\n    want {status} {text:?}\n    got  {} {:?}",
                resp.status, resp.text
            ));
        }
        if resp.status != 200 {
            let content_type = resp.header("content-type").unwrap_or_default();
            if content_type != "text/plain; charset=utf-8" {
                failures.push(format!(
                    "{method} {path}: error content-type {content_type:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    assert_eq!(
        snapshot(&api).await,
        before,
        "bad requests changed the state"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn wrong_methods_advertise_allow_and_options_answers() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let resp = api
        .send("PUT", "/v1/connect/intentions/exact?source=a", None)
        .await;
    assert_eq!(resp.status, 500); // right method, missing parameter
    let resp = api.send("POST", "/v1/connect/intentions/exact", None).await;
    assert_eq!(resp.status, 405);
    assert_eq!(
        resp.header("allow").as_deref(),
        Some("OPTIONS,GET,PUT,DELETE")
    );
    let resp = api
        .send("OPTIONS", "/v1/agent/connect/ca/roots", None)
        .await;
    assert_eq!(
        (resp.status, resp.header("allow").as_deref()),
        (200, Some("OPTIONS,GET"))
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn keys_are_case_insensitive_and_snake_case_works() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put(
        "/v1/agent/service/register",
        r#"{"NAME": "web", "port": 8080, "connect": {"sidecar_service": {"proxy": {"upstreams": [{"destination_name": "db", "LOCAL_BIND_PORT": 9191}]}}}}"#,
    )
    .await;
    let sidecar = api.json("/v1/agent/service/web-sidecar-proxy").await;
    assert_eq!(sidecar["Proxy"]["Upstreams"][0]["LocalBindPort"], 9191);
    let resp = api
        .post(
            "/v1/agent/connect/authorize",
            r#"{"target": "db", "clientcerturi": "spiffe://1111.consul/ns/default/dc/dc1/svc/web"}"#,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    agent.shutdown().await;
}
