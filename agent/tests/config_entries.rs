//! Config entries over HTTP against the in-process agent: `PUT /v1/config` (with `?cas=`),
//! `GET /v1/config/:kind[/:name]`, `DELETE`, with Consul 1.10.4's shapes, statuses and texts
//! (checked against a real `consul agent -dev`), and how they decide where L7 intentions are
//! allowed. Blocking reads are in `blocking.rs`.

mod common;

use common::{agent, agent_with, Api, Resp};
use serde_json::{json, Value};

const L7: &str = r#"{"Permissions": [{"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
    {"Action": "allow", "HTTP": {"PathExact": "/", "Methods": ["get"],
     "Header": [{"Name": "x-debug", "Present": true}]}}]}"#;

fn exact(source: &str, destination: &str) -> String {
    format!("/v1/connect/intentions/exact?source={source}&destination={destination}")
}

async fn delete(api: &Api, path: &str) -> Resp {
    api.send("DELETE", path, None).await
}

fn incompatible(service: &str, protocol: &str) -> String {
    format!("service {service:?} has protocol {protocol:?}, which is incompatible with L7 intentions permissions")
}

#[tokio::test]
async fn write_read_list_delete() {
    let agent = agent().await;
    let api = Api::new(&agent);

    let empty = api.get("/v1/config/service-defaults").await;
    assert_eq!((empty.status, empty.text.as_str()), (200, "[]\n"));
    assert!(empty.header("X-Consul-Index").is_some());

    let written = api
        .put(
            "/v1/config",
            r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "HTTP", "Meta": {"owner": "a"}}"#,
        )
        .await;
    assert_eq!((written.status, written.text.as_str()), (200, "true\n"));

    let got = api.get("/v1/config/service-defaults/WEB").await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.header("X-Consul-KnownLeader").as_deref(), Some("true"));
    let entry = got.json();
    let index = entry["CreateIndex"].clone();
    assert_eq!(got.index(), index.as_u64().unwrap());
    // Go struct order, the protocol lower-cased, the empty structs printed.
    let text = got.text.replace(&index.to_string(), "N");
    assert_eq!(
        text,
        "{\n    \"Kind\": \"service-defaults\",\n    \"Name\": \"web\",\n    \"Protocol\": \"http\",\n    \"TransparentProxy\": {},\n    \"MeshGateway\": {},\n    \"Expose\": {},\n    \"Meta\": {\n        \"owner\": \"a\"\n    },\n    \"CreateIndex\": N,\n    \"ModifyIndex\": N\n}\n"
    );

    // Any name for proxy-defaults is global.
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "proxy-defaults", "Name": "other", "Config": {"protocol": "http", "b": {"z": 1, "a": 2}}}"#,
    )
    .await;
    let proxy = api.json("/v1/config/proxy-defaults/global").await;
    assert_eq!(proxy["Name"], "global");
    let config_keys: Vec<&String> = proxy["Config"]["b"].as_object().unwrap().keys().collect();
    assert_eq!(config_keys, ["a", "z"], "Go prints map keys sorted");

    // All kinds: by kind, then by name.
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "service-defaults", "Name": "api"}"#,
    )
    .await;
    let all = api.json("/v1/config/").await;
    let listed: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["Kind"].as_str().unwrap(), e["Name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("proxy-defaults", "global"),
            ("service-defaults", "api"),
            ("service-defaults", "web")
        ]
    );

    let deleted = delete(&api, "/v1/config/service-defaults/web").await;
    assert_eq!((deleted.status, deleted.text.as_str()), (200, "{}\n"));
    let again = delete(&api, "/v1/config/service-defaults/web").await;
    assert_eq!((again.status, again.text.as_str()), (200, "{}\n"));
    let missing = api.get("/v1/config/service-defaults/web").await;
    assert_eq!(
        (missing.status, missing.text.as_str()),
        (
            404,
            "Config entry not found for \"service-defaults\" / \"web\""
        )
    );
    assert!(missing.header("X-Consul-Index").is_some());
    agent.shutdown().await;
}

#[tokio::test]
async fn check_and_set() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let body = r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#;
    let absent_only = api.put("/v1/config?cas=0", body).await;
    assert_eq!(absent_only.text, "true\n");
    let again = api.put("/v1/config?cas=0", body).await;
    assert_eq!((again.status, again.text.as_str()), (200, "false\n"));
    let index = api.json("/v1/config/service-defaults/web").await["ModifyIndex"]
        .as_u64()
        .unwrap();
    let stale = api
        .put(&format!("/v1/config?cas={}", index + 7), body)
        .await;
    assert_eq!(stale.text, "false\n");
    let current = api.put(&format!("/v1/config?cas={index}"), body).await;
    assert_eq!(current.text, "true\n");
    let bad = api.put("/v1/config?cas=abc", body).await;
    assert_eq!(
        (bad.status, bad.text.as_str()),
        (500, "strconv.ParseUint: parsing \"abc\": invalid syntax")
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_consul_texts() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("PUT", "/v1/config", Some(""), 400, "Bad request: Request decoding failed: EOF"),
        ("PUT", "/v1/config", Some("[]"), 400, "Bad request: Request decoding failed: '' expected a map, got 'slice'"),
        ("PUT", "/v1/config", Some("{}"), 400, "Bad request: Request decoding failed: Payload does not contain a kind/Kind key at the top level"),
        ("PUT", "/v1/config", Some(r#"{"Kind": 5}"#), 400, "Bad request: Request decoding failed: Kind value in payload is not a string"),
        ("PUT", "/v1/config", Some(r#"{"Kind": "bogus"}"#), 400, "Bad request: Request decoding failed: invalid config entry kind: bogus"),
        ("PUT", "/v1/config", Some(r#"{"Kind": "service-defaults"}"#), 500, "Name is required"),
        ("PUT", "/v1/config", Some(r#"{"Kind": "service-defaults", "Name": "*"}"#), 500, "service-defaults name must be the name of a service, and not a wildcard"),
        ("PUT", "/v1/config", Some(r#"{"Kind": "service-defaults", "Name": "x", "Bogus": 1}"#), 400, "Bad request: Request decoding failed: 1 error occurred:\n\t* invalid config key \"Bogus\"\n\n"),
        ("PUT", "/v1/config", Some(r#"{"Kind": "service-defaults", "Name": "x", "Protocol": {"a": 1}}"#), 400, "Bad request: Request decoding failed: 1 error(s) decoding:\n\n* 'Protocol' expected type 'string', got unconvertible type 'map[string]interface {}', value: 'map[a:1]'"),
        ("PUT", "/v1/config", Some(r#"{"Kind": "service-router", "Name": "x"}"#), 400, "Bad request: Request decoding failed: tandem-agent dev supports only the service-defaults and proxy-defaults config entry kinds, not \"service-router\""),
        ("GET", "/v1/config/bogus", None, 500, "invalid config entry kind: bogus"),
        ("GET", "/v1/config/bogus/x", None, 500, "invalid config entry kind: bogus"),
        ("GET", "/v1/config/service-defaults/x?wait=soon", None, 400, "Invalid wait time"),
        ("DELETE", "/v1/config/bogus/x", None, 400, "invalid config entry kind: bogus"),
        ("DELETE", "/v1/config/service-defaults", None, 404, "Must provide both a kind and name to delete"),
        ("GET", "/v1/config", None, 405, "method GET not allowed"),
        ("PUT", "/v1/config/service-defaults/x", Some("{}"), 405, "method PUT not allowed"),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, text) in cases {
        let resp = api.send(method, path, *body).await;
        if (resp.status, resp.text.as_str()) != (*status, *text) {
            failures.push(format!(
                "{method} {path}: want {status} {text:?}, got {} {:?}",
                resp.status, resp.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        api.json("/v1/config/").await,
        json!([]),
        "nothing was written"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn l7_intentions_follow_the_destination_protocol() {
    let agent = agent().await;
    let api = Api::new(&agent);

    // No config entry: tcp, refused with Consul's 500.
    let refused = api.put(&exact("web", "api"), L7).await;
    assert_eq!(
        (refused.status, refused.text.clone()),
        (500, incompatible("api", "tcp"))
    );

    // service-defaults http: accepted, stored and shown in Consul's shape.
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "service-defaults", "Name": "api", "Protocol": "http"}"#,
    )
    .await;
    assert_eq!(api.ok_put(&exact("web", "api"), L7).await.text, "true\n");
    let stored = api.json(&exact("web", "api")).await;
    assert_eq!(stored.get("Action"), None);
    let permissions = json!([
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
        {"Action": "allow", "HTTP": {"PathExact": "/", "Header": [{"Name": "x-debug", "Present": true}], "Methods": ["GET"]}},
    ]);
    assert_eq!(stored["Permissions"], permissions);
    let matched = api
        .json("/v1/connect/intentions/match?by=destination&name=api")
        .await;
    assert_eq!(matched["api"][0]["Permissions"], permissions);
    let listed = api.json("/v1/connect/intentions").await;
    assert_eq!(listed[0]["Permissions"], permissions);

    // While it exists, api cannot become tcp: not by its service-defaults, not by deleting it.
    let to_tcp = api
        .put(
            "/v1/config",
            r#"{"Kind": "service-defaults", "Name": "api", "Protocol": "tcp"}"#,
        )
        .await;
    assert_eq!(
        (to_tcp.status, to_tcp.text.clone()),
        (500, incompatible("api", "tcp"))
    );
    let removed = delete(&api, "/v1/config/service-defaults/api").await;
    assert_eq!(
        (removed.status, removed.text.clone()),
        (500, incompatible("api", "tcp"))
    );
    assert_eq!(
        api.json("/v1/config/service-defaults/api").await["Protocol"],
        "http"
    );

    // proxy-defaults can carry it instead; then it can no longer say tcp.
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "proxy-defaults", "Name": "global", "Config": {"Protocol": "GRPC"}}"#,
    )
    .await;
    assert_eq!(
        delete(&api, "/v1/config/service-defaults/api").await.status,
        200
    );
    let global_tcp = api
        .put(
            "/v1/config",
            r#"{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}}"#,
        )
        .await;
    assert_eq!(
        (global_tcp.status, global_tcp.text.clone()),
        (500, incompatible("api", "tcp"))
    );

    // A service-defaults entry without a protocol means tcp, even under an http global.
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "service-defaults", "Name": "db"}"#,
    )
    .await;
    let on_db = api.put(&exact("web", "db"), L7).await;
    assert_eq!(
        (on_db.status, on_db.text.clone()),
        (500, incompatible("db", "tcp"))
    );
    assert_eq!(api.ok_put(&exact("web", "cache"), L7).await.text, "true\n");

    // An L4 intention needs no protocol; and once the L7 ones are gone, tcp is fine again.
    api.ok_put(&exact("web", "db"), r#"{"Action": "allow"}"#)
        .await;
    for destination in ["api", "cache"] {
        assert_eq!(delete(&api, &exact("web", destination)).await.status, 200);
    }
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}}"#,
    )
    .await;
    agent.shutdown().await;
}

#[tokio::test]
async fn l7_permissions_are_checked_like_consul() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put(
        "/v1/config",
        r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#,
    )
    .await;
    api.ok_put(&exact("a", "web"), L7).await;
    // c would be web's second source (a and c have the same precedence; a came first).
    let cases: &[(&str, Value, u16, &str)] = &[
        ("web", json!({"Action": "allow", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/x"}}]}), 500, "Sources[1].Action must be omitted if Permissions are specified"),
        ("web", json!({"Permissions": [{"Action": "maybe", "HTTP": {"PathPrefix": "/x"}}]}), 500, "Sources[1].Permissions[0].Action must be set to 'allow' or 'deny'"),
        ("web", json!({"Permissions": [{"Action": "allow", "HTTP": {"PathExact": "x"}}]}), 500, "Sources[1].Permissions[0].HTTP.PathExact doesn't start with '/': \"x\""),
        ("web", json!({"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/x", "PathRegex": ".*"}}]}), 500, "Sources[1].Permissions[0].HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex"),
        ("web", json!({"Permissions": [{"Action": "allow", "HTTP": {"Header": [{"Name": "x"}]}}]}), 500, "Sources[1].Permissions[0].HTTP.Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex"),
        ("web", json!({"Permissions": [{"Action": "allow", "HTTP": {"Methods": ["GET", "get"]}}]}), 500, "Sources[1].Permissions[0].HTTP.Methods contains \"GET\" more than once"),
        ("web", json!({"Permissions": []}), 500, "Sources[1].Action must be set to 'allow' or 'deny'"),
        ("*", json!({"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/x"}}]}), 500, "Sources[0].Permissions cannot be specified on intentions with wildcarded destinations"),
        ("web", json!({"Permissions": {}}), 400, "Bad request: Request decode failed: json: cannot unmarshal object into Go struct field .Permissions of type []*structs.IntentionPermission"),
        ("web", json!({"Permissions": [{"Action": "allow", "HTTP": {"path_prefix": "/x"}}]}), 400, "Bad request: Request decode failed: json: unknown field \"path_prefix\""),
        ("web", json!({"Bogus": 1, "Action": "allow"}), 400, "Bad request: Request decode failed: json: unknown field \"Bogus\""),
    ];
    let mut failures = Vec::new();
    for (destination, body, status, text) in cases {
        let resp = api.put(&exact("c", destination), &body.to_string()).await;
        if (resp.status, resp.text.as_str()) != (*status, *text) {
            failures.push(format!(
                "{body}: want {status} {text:?}, got {} {:?}",
                resp.status, resp.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let legacy = api
        .post(
            "/v1/connect/intentions",
            r#"{"SourceName": "l", "DestinationName": "web", "Action": "allow",
                "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/x"}}]}"#,
        )
        .await;
    assert_eq!(
        (legacy.status, legacy.text.as_str()),
        (
            500,
            "1 error occurred:\n\t* Permissions must not be set when using the legacy APIs\n\n"
        )
    );
    assert_eq!(
        api.json("/v1/connect/intentions")
            .await
            .as_array()
            .map(Vec::len),
        Some(1),
        "nothing refused was stored"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn tokens_guard_config_entries() {
    let agent = agent_with(|c| c.require_token = Some("secret".into())).await;
    let anonymous = Api::new(&agent);
    let admin = Api::with_token(&agent, "secret");
    let body = r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#;
    let denied = anonymous.put("/v1/config", body).await;
    assert_eq!(
        (denied.status, denied.text.as_str()),
        (403, "Permission denied")
    );
    admin.ok_put("/v1/config", body).await;
    admin
        .ok_put(
            "/v1/config",
            r#"{"Kind": "proxy-defaults", "Name": "global"}"#,
        )
        .await;
    let read = anonymous.get("/v1/config/service-defaults/web").await;
    assert_eq!(
        (read.status, read.text.as_str()),
        (403, "Permission denied")
    );
    // Anyone may read proxy-defaults; lists are filtered rather than refused.
    assert_eq!(
        anonymous
            .get("/v1/config/proxy-defaults/global")
            .await
            .status,
        200
    );
    let listed = anonymous.json("/v1/config/").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["Kind"], "proxy-defaults");
    let unknown = Api::with_token(&agent, "nope")
        .get("/v1/config/proxy-defaults/global")
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (403, "ACL not found")
    );
    assert_eq!(
        admin.json("/v1/config/").await.as_array().map(Vec::len),
        Some(2)
    );
    agent.shutdown().await;
}
