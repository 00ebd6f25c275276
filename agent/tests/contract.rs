//! Contract tests: every response shape (key names, key order where Consul's Go struct order is
//! known, JSON types) is held against the Consul documentation samples in
//! `tests/data/consul-api-samples/` (copied from the shared folder), honouring the doc bugs
//! listed in that folder's README. Request samples are sent as bodies.

mod common;

use std::path::PathBuf;

use common::{agent, service_uri, Api};
use serde_json::{json, Map, Value};

fn sample(name: &str) -> Value {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "data",
        "consul-api-samples",
        name,
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read sample {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sample {name} is not JSON: {e}"))
}

/// How to read a sample: which keys are doc bugs, which objects are Go maps (keys are data),
/// where the sample's key order is hand-written rather than Go's.
#[derive(Default)]
struct Rules {
    /// Paths (`Roots[].Namespace`) absent from real CE output (Enterprise-only, obsolete...).
    skip: &'static [&'static str],
    /// Paths of Go maps: only the shape of their values is compared.
    maps: &'static [&'static str],
    /// Paths of objects whose key order in the sample is not Go's struct order.
    no_order: &'static [&'static str],
    /// Also refuse keys we send that the sample lacks (samples derived from the Go structs).
    strict: bool,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Doc bug: service `TaggedAddresses` values are shown with lowercase `address`/`port`.
fn lookup<'a>(
    ours: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Option<(&'a String, &'a Value)> {
    if path.contains("TaggedAddresses") {
        ours.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))
    } else {
        ours.get_key_value(key)
    }
}

fn shape(ours: &Value, sample: &Value, path: &str, rules: &Rules, errors: &mut Vec<String>) {
    match (sample, ours) {
        // Go's nil slice/map/pointer: the sample does not tell the type.
        (Value::Null, _) => {}
        (Value::Object(s), Value::Object(o)) => {
            if rules.maps.contains(&path) {
                if rules.skip.contains(&join(path, "*").as_str()) {
                    return; // opaque map: values are free-form
                }
                if let (Some(sv), Some(ov)) = (s.values().next(), o.values().next()) {
                    shape(ov, sv, &join(path, "*"), rules, errors);
                } else if !s.is_empty() && o.is_empty() {
                    errors.push(format!("{path}: sample map has entries, ours is empty"));
                }
                return;
            }
            let mut positions = Vec::new();
            for (key, sv) in s {
                let p = join(path, key);
                if rules.skip.contains(&p.as_str()) {
                    continue;
                }
                match lookup(o, key, path) {
                    None => errors.push(format!("{p}: missing (sample has {})", kind(sv))),
                    Some((our_key, ov)) => {
                        positions.push((key.clone(), o.keys().position(|k| k == our_key)));
                        shape(ov, sv, &p, rules, errors);
                    }
                }
            }
            if rules.strict {
                for key in o.keys() {
                    if !s.contains_key(key) {
                        errors.push(format!("{}: not in the sample", join(path, key)));
                    }
                }
            }
            if !rules.no_order.contains(&path) {
                let order: Vec<_> = positions
                    .iter()
                    .filter_map(|(k, p)| p.map(|p| (p, k)))
                    .collect();
                if order.windows(2).any(|w| w[0].0 > w[1].0) {
                    let ours: Vec<&String> = o.keys().collect();
                    errors.push(format!(
                        "{}: key order differs from the sample: sample {:?}, ours {:?}",
                        if path.is_empty() { "<root>" } else { path },
                        positions.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                        ours
                    ));
                }
            }
        }
        (Value::Array(s), Value::Array(o)) => {
            if !s.is_empty() && o.is_empty() {
                errors.push(format!("{path}: sample array has items, ours is empty"));
                return;
            }
            // Each sample item must have the shape of at least one of our items (element
            // order is data, e.g. node checks before service checks).
            let item_path = format!("{path}[]");
            for sv in s {
                let attempts: Vec<Vec<String>> = o
                    .iter()
                    .map(|ov| {
                        let mut errs = Vec::new();
                        shape(ov, sv, &item_path, rules, &mut errs);
                        errs
                    })
                    .collect();
                if !attempts.iter().any(Vec::is_empty) {
                    errors.extend(attempts.into_iter().next().unwrap_or_default());
                }
            }
        }
        (s, o) if kind(s) != kind(o) => errors.push(format!(
            "{path}: sample is {}, ours is {} ({o})",
            kind(s),
            kind(o)
        )),
        _ => {}
    }
}

#[track_caller]
fn assert_shape(name: &str, ours: &Value, rules: Rules) {
    let mut errors = Vec::new();
    shape(ours, &sample(name), "", &rules, &mut errors);
    assert!(
        errors.is_empty(),
        "{name}: response does not match the sample's shape:\n  {}\nours: {}",
        errors.join("\n  "),
        serde_json::to_string_pretty(ours).unwrap_or_default()
    );
}

#[test]
fn the_comparison_itself_catches_differences() {
    let sample = json!({"A": 1, "B": "x", "C": {"D": true}});
    let mut errors = Vec::new();
    shape(
        &json!({"B": "x", "A": 1, "C": {"D": "no"}}),
        &sample,
        "",
        &Rules::default(),
        &mut errors,
    );
    assert_eq!(errors.len(), 2, "{errors:?}"); // order and type
    let mut errors = Vec::new();
    shape(
        &json!({"A": 1, "C": {}}),
        &sample,
        "",
        &Rules::default(),
        &mut errors,
    );
    assert_eq!(errors.len(), 2, "{errors:?}"); // B missing, C.D missing
    let mut errors = Vec::new();
    shape(
        &json!({"A": 1, "B": "x", "C": {"D": true}, "E": 1}),
        &sample,
        "",
        &Rules {
            strict: true,
            ..Rules::default()
        },
        &mut errors,
    );
    assert_eq!(errors.len(), 1, "{errors:?}"); // E extra
}

#[tokio::test]
async fn agent_self_matches_sample() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let ours = api.json("/v1/agent/self").await;
    assert_eq!(ours["Config"]["Datacenter"], "dc1");
    assert_eq!(ours["Config"]["NodeName"], "test-node");
    // The sample's Config/Coord/Member orders are hand-written (Go order: Datacenter,
    // PrimaryDatacenter, NodeName, NodeID, Revision, Server, Version; Coord Vec, Error,
    // Adjustment, Height); Meta and Member.Tags are maps.
    assert_shape(
        "agent-self.json",
        &ours,
        Rules {
            maps: &["Meta", "Member.Tags"],
            no_order: &["Config", "Coord"],
            ..Rules::default()
        },
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn ca_roots_and_leaf_match_samples() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let roots = api.json("/v1/agent/connect/ca/roots").await;
    assert_shape("agent-connect-ca-roots.json", &roots, Rules::default());
    let roots = api.json("/v1/connect/ca/roots").await;
    assert_shape("connect-ca-roots.json", &roots, Rules::default());
    let leaf = api.json("/v1/agent/connect/ca/leaf/web").await;
    // `Namespace` is Enterprise-only (README).
    assert_shape(
        "agent-connect-ca-leaf.json",
        &leaf,
        Rules {
            skip: &["Namespace"],
            ..Rules::default()
        },
    );
    let config = api.json("/v1/connect/ca/configuration").await;
    assert_shape(
        "connect-ca-configuration.json",
        &config,
        Rules {
            maps: &["Config"],
            ..Rules::default()
        },
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn authorize_request_and_response_match_samples() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let request = sample("agent-connect-authorize-request.json");
    let resp = api
        .post("/v1/agent/connect/authorize", &request.to_string())
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let ours = resp.json();
    assert_shape("agent-connect-authorize.json", &ours, Rules::default());
    // Consul 1.10.4's text with ACLs disabled (verified against the real binary).
    assert_eq!(
        ours["Reason"],
        "ACLs disabled, access is allowed by default"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn service_registration_samples_round_trip() {
    let agent = agent().await;
    let api = Api::new(&agent);

    // The documented payload registers a script check; like `consul agent -dev` (script checks
    // disabled) the agent refuses it, and nothing is registered.
    let mut redis = sample("agent-service-register.json");
    let refused = api
        .put("/v1/agent/service/register", &redis.to_string())
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.text.contains("Scripts are disabled on this agent"),
        "{}",
        refused.text
    );
    assert_eq!(api.json("/v1/agent/services").await, json!({}));

    redis["Check"] = json!({"TTL": "10m", "Status": "passing"});
    redis["TaggedAddresses"] = json!({
        "lan": {"Address": "127.0.0.1", "Port": 8000},
        "wan": {"Address": "198.51.100.53", "Port": 80}
    });
    api.ok_put("/v1/agent/service/register", &redis.to_string())
        .await;
    let services = api.json("/v1/agent/services").await;
    assert_eq!(services["redis1"]["Meta"]["redis_version"], "4.0");
    assert_eq!(
        services["redis1"]["Weights"],
        json!({"Passing": 10, "Warning": 1})
    );
    // Sample keys are hand-ordered; Namespace is Enterprise-only; the sample's map key is the
    // service ID, ours is `redis1` (the sample registered ID `redis`).
    assert_shape(
        "agent-services.json",
        &services,
        Rules {
            maps: &["", "*.TaggedAddresses", "*.Meta"],
            skip: &["*.Namespace"],
            no_order: &["*"],
            ..Rules::default()
        },
    );

    let catalog = api.json("/v1/catalog/service/redis").await;
    // Doc bugs: obsolete ServiceConnect.Proxy, pre-omitempty ServiceProxy fields, hand-ordered
    // keys, Enterprise Namespace; node TaggedAddresses/NodeMeta are maps.
    assert_shape(
        "catalog-service.json",
        &catalog,
        Rules {
            maps: &[
                "[].TaggedAddresses",
                "[].NodeMeta",
                "[].ServiceMeta",
                "[].ServiceTaggedAddresses",
            ],
            skip: &[
                "[].Namespace",
                "[].ServiceConnect.Proxy",
                "[].ServiceConnect.Native",
                "[].ServiceProxy.DestinationServiceName",
                "[].ServiceProxy.DestinationServiceID",
                "[].ServiceProxy.LocalServiceAddress",
                "[].ServiceProxy.LocalServicePort",
                "[].ServiceProxy.Config",
                "[].ServiceProxy.Upstreams",
            ],
            no_order: &["[]"],
            ..Rules::default()
        },
    );

    let health = api.json("/v1/health/service/redis").await;
    assert_shape(
        "health-service.json",
        &health,
        Rules {
            maps: &[
                "[].Node.TaggedAddresses",
                "[].Node.Meta",
                "[].Service.Meta",
                "[].Service.TaggedAddresses",
            ],
            skip: &["[].Service.Namespace", "[].Checks[].Namespace"],
            ..Rules::default()
        },
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn sidecar_samples_expand_and_read_back_like_consul() {
    let agent = agent().await;
    let api = Api::new(&agent);
    // The config-file definition's inner object is a valid HTTP registration.
    let definition = sample("sidecar-service-definition.config.json")["service"].clone();
    api.ok_put("/v1/agent/service/register", &definition.to_string())
        .await;
    let sidecar = api.json("/v1/agent/service/web-sidecar-proxy").await;
    let expanded = sample("sidecar-service-expanded.config.json");
    let expected = &expanded["services"][1];
    assert_eq!(sidecar["Service"], expected["name"]);
    assert_eq!(sidecar["Kind"], expected["kind"]);
    let proxy = &expected["proxy"];
    assert_eq!(
        sidecar["Proxy"]["DestinationServiceName"],
        proxy["destination_service_name"]
    );
    assert_eq!(
        sidecar["Proxy"]["DestinationServiceID"],
        proxy["destination_service_id"]
    );
    assert_eq!(
        sidecar["Proxy"]["LocalServiceAddress"],
        proxy["local_service_address"]
    );
    assert_eq!(
        sidecar["Proxy"]["LocalServicePort"],
        proxy["local_service_port"]
    );
    // Real registration assigns the port from 21000-21255 (README), not the doc's 20000.
    assert_eq!(sidecar["Port"], 21000);
    let checks = api.json("/v1/agent/checks").await;
    let listening = &checks["service:web-sidecar-proxy:1"];
    assert_eq!(listening["Name"], expected["checks"][0]["Name"]);
    // The sample's Interval is the definition's; Consul 1.10.4 shows "" for a check that came
    // with a service registration (verified against the real binary).
    assert_eq!(listening["Interval"], "");
    assert_eq!(listening["Type"], "tcp");
    let alias = &checks["service:web-sidecar-proxy:2"];
    assert_eq!(alias["Name"], expected["checks"][1]["name"]);
    assert_eq!(alias["Type"], "alias");

    // The snake_case sidecar payload with upstreams and opaque proxy config.
    api.ok_put("/v1/agent/service/deregister/web", "").await;
    let body = sample("agent-service-register-sidecar.json");
    api.ok_put("/v1/agent/service/register", &body.to_string())
        .await;
    let resp = api.get("/v1/agent/service/web-sidecar-proxy").await;
    assert!(resp.header("X-Consul-ContentHash").is_some());
    let sidecar = resp.json();
    assert_eq!(sidecar["Proxy"]["Upstreams"][0]["DestinationName"], "db");
    assert_eq!(sidecar["Proxy"]["Upstreams"][0]["LocalBindPort"], 9191);
    assert_eq!(sidecar["Proxy"]["Config"]["handshake_timeout_ms"], 1000);
    // Doc sample: Tags/Meta null (we send [] / {} as api.AgentService does), TaggedAddresses
    // lowercase, Namespace Enterprise-only, Mode/TransparentProxy only when set.
    assert_shape(
        "agent-service-sidecar-proxy.json",
        &sidecar,
        Rules {
            maps: &["TaggedAddresses", "Proxy.Config"],
            skip: &[
                "Namespace",
                "TaggedAddresses",
                "Proxy.Mode",
                "Proxy.TransparentProxy",
                "Proxy.Config.*",
            ],
            // The doc sample puts Datacenter before ContentHash; api.AgentService declares it
            // after Namespace/Partition (consul-api.md 2.6).
            no_order: &[""],
            ..Rules::default()
        },
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn health_connect_matches_doc_and_derived_samples() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let body = json!({"Name": "web", "Port": 8080, "Tags": ["primary"], "Meta": {"version": "1"},
        "Connect": {"SidecarService": {
        "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]}}}});
    api.ok_put("/v1/agent/service/register", &body.to_string())
        .await;
    let ours = api.json("/v1/health/connect/web").await;
    // Built from the Go structs: every key, in order, and nothing else.
    assert_shape(
        "health-connect-proxy.derived.json",
        &ours,
        Rules {
            maps: &["[].Node.TaggedAddresses", "[].Node.Meta", "[].Service.Meta"],
            // Derived from newer Go structs: Consul 1.10.4, the reference, has no PeerName
            // (tests/recorded.rs compares with what it sent).
            skip: &["[].Service.PeerName"],
            strict: true,
            ..Rules::default()
        },
    );
    // The doc sample (a plain service copied from /health/service); our proxy has no
    // TaggedAddresses (no Address).
    assert_shape(
        "health-connect.json",
        &ours,
        Rules {
            maps: &["[].Node.TaggedAddresses", "[].Node.Meta", "[].Service.Meta"],
            skip: &[
                "[].Service.Namespace",
                "[].Checks[].Namespace",
                "[].Service.TaggedAddresses",
            ],
            ..Rules::default()
        },
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn checks_samples() {
    let agent = agent().await;
    let api = Api::new(&agent);
    // The documented check payload names five check kinds at once; Consul refuses script checks
    // in dev mode, and so do we, leaving no check behind.
    let refused = api
        .put(
            "/v1/agent/check/register",
            &sample("agent-check-register.json").to_string(),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(api.json("/v1/agent/checks").await, json!({}));

    let body = json!({"Name": "redis", "Port": 8000, "Tags": ["primary"],
        "Check": {"TCP": "127.0.0.1:1", "Interval": "10s", "Timeout": "1s"}});
    api.ok_put("/v1/agent/service/register", &body.to_string())
        .await;
    let mut checks = api.json("/v1/agent/checks").await;
    // Our registration's check is `service:redis` like the sample's key.
    let check = checks["service:redis"].take();
    // Consul 1.10.4 leaves Interval/Timeout empty for checks that came with a service
    // registration (verified against the real binary; the doc sample shows them filled in).
    assert_eq!(check["Timeout"], "");
    let ours = json!({"service:redis": check});
    // Sample order (Interval, Timeout before Type) is hand-written; Go's HealthCheck has
    // Type, Interval, Timeout. Namespace is Enterprise-only.
    assert_shape(
        "agent-checks.json",
        &ours,
        Rules {
            skip: &["service:redis.Namespace"],
            no_order: &["service:redis"],
            ..Rules::default()
        },
    );

    let ttl = json!({"Name": "job", "Port": 1, "Check": {"TTL": "1m"}});
    api.ok_put("/v1/agent/service/register", &ttl.to_string())
        .await;
    let update = sample("agent-check-update.json");
    api.ok_put("/v1/agent/check/update/service:job", &update.to_string())
        .await;
    let checks = api.json("/v1/agent/checks").await;
    assert_eq!(checks["service:job"]["Status"], update["Status"]);
    assert_eq!(checks["service:job"]["Output"], update["Output"]);
    agent.shutdown().await;
}

#[tokio::test]
async fn intention_samples() {
    let agent = agent().await;
    let api = Api::new(&agent);

    // Upsert by name: the sample request and response.
    let resp = api
        .put(
            "/v1/connect/intentions/exact?source=web&destination=db",
            &sample("connect-intentions-upsert-exact-request.json").to_string(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        resp.json(),
        sample("connect-intentions-upsert-exact-response.json")
    );
    api.send(
        "DELETE",
        "/v1/connect/intentions/exact?source=web&destination=db",
        None,
    )
    .await;

    // Legacy create with the sample body (plus Meta/Description so omitempty keys show).
    let mut create = sample("connect-intentions-create-request.json");
    create["Description"] = json!("web may use db");
    create["Meta"] = json!({"owner": "team"});
    let resp = api
        .post("/v1/connect/intentions", &create.to_string())
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let created = resp.json();
    assert_shape(
        "connect-intentions-create-response.json",
        &created,
        Rules::default(),
    );
    let id = created["ID"].as_str().unwrap().to_string();

    let exact = api
        .json("/v1/connect/intentions/exact?source=web&destination=db")
        .await;
    assert_shape(
        "connect-intentions-exact.json",
        &exact,
        Rules {
            maps: &["Meta"],
            ..Rules::default()
        },
    );
    let list = api.json("/v1/connect/intentions").await;
    assert_shape(
        "connect-intentions-list.json",
        &list,
        Rules {
            maps: &["[].Meta"],
            ..Rules::default()
        },
    );
    let by_id = api.json(&format!("/v1/connect/intentions/{id}")).await;
    // README: real JSON puts CreatedAt/UpdatedAt first; the sample has them near the end.
    assert_eq!(
        by_id
            .as_object()
            .unwrap()
            .keys()
            .take(2)
            .collect::<Vec<_>>(),
        ["CreatedAt", "UpdatedAt"]
    );
    let mut reordered = by_id.clone();
    let obj = reordered.as_object_mut().unwrap();
    let created_at = obj.shift_remove("CreatedAt").unwrap();
    let updated_at = obj.shift_remove("UpdatedAt").unwrap();
    obj.insert("CreatedAt".into(), created_at);
    obj.insert("UpdatedAt".into(), updated_at);
    let (create_index, modify_index) = (
        obj.shift_remove("CreateIndex").unwrap(),
        obj.shift_remove("ModifyIndex").unwrap(),
    );
    obj.insert("CreateIndex".into(), create_index);
    obj.insert("ModifyIndex".into(), modify_index);
    assert_shape(
        "connect-intentions-by-id.json",
        &reordered,
        Rules {
            maps: &["Meta"],
            ..Rules::default()
        },
    );

    // Legacy update by ID: same `{"ID": ...}` answer.
    let update = sample("connect-intentions-update-by-id-request.json");
    let resp = api
        .put(&format!("/v1/connect/intentions/{id}"), &update.to_string())
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json(), json!({"ID": id}));
    let updated = api.json(&format!("/v1/connect/intentions/{id}")).await;
    assert_eq!(updated["DestinationName"], "other-db");

    // Match by source, as the sample: web => db (deny) before web => * (allow).
    let mut deny = json!({"SourceName": "web", "DestinationName": "db", "SourceType": "consul",
        "Action": "deny", "Meta": {"k": "v"}, "Description": "no"});
    api.post("/v1/connect/intentions", &deny.to_string()).await;
    deny["DestinationName"] = json!("*");
    deny["Action"] = json!("allow");
    api.post("/v1/connect/intentions", &deny.to_string()).await;
    let matched = api
        .json("/v1/connect/intentions/match?by=source&name=web")
        .await;
    let web = matched["web"].as_array().unwrap();
    assert_eq!(web[0]["DestinationName"], "db");
    assert_eq!(web[0]["Action"], "deny");
    assert_eq!(web.last().unwrap()["DestinationName"], "*");
    assert_shape(
        "connect-intentions-match.json",
        &matched,
        Rules {
            maps: &["web[].Meta"],
            ..Rules::default()
        },
    );

    let check = api
        .json("/v1/connect/intentions/check?source=web&destination=other-db")
        .await;
    assert_shape("connect-intentions-check.json", &check, Rules::default());
    assert_eq!(check, json!({"Allowed": true}));

    // The authorize sample's SPIFFE form works against our trust domain too.
    let td = api.json("/v1/agent/connect/ca/roots").await["TrustDomain"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = api
        .post(
            "/v1/agent/connect/authorize",
            &common::authorize_body("db", &service_uri(&td, "web")),
        )
        .await;
    assert_eq!(resp.json()["Authorized"], false);
    agent.shutdown().await;
}
