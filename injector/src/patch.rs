//! Builds the RFC 6902 JSON patch that adds `tandem-proxy` to a pod.
//!
//! Only `add` operations are used. Whatever the pod lacks (its spec, annotations, labels, env
//! lists, init containers) is added whole; existing arrays are appended to with `/-`; map keys are
//! escaped per RFC 6901 (`~` -> `~0`, `/` -> `~1`). Ops are ordered so that every path refers
//! to the document as the earlier ops left it, which is how the API server applies them.

use serde::Serialize;
use serde_json::{json, Map, Value};
use tandem_contract::{flags, UpstreamList};

use crate::annotations::{
    self, ConnectSettings, CONNECT_INJECT_STATUS, CONNECT_SERVICE, CONNECT_SERVICE_PORT,
    PUBLIC_LISTENER_PORT, STATUS_INJECTED,
};

/// The injected container's name.
pub const SIDECAR_NAME: &str = "tandem-proxy";
/// Where the proxy binary sits in its image; the readiness probe execs it.
pub(crate) const PROXY_BINARY: &str = "/tandem-proxy";
/// UID and GID the sidecar runs as.
pub(crate) const SIDECAR_UID: i64 = 5995;

/// How the sidecar is built (from the command line, identical for every pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarOptions {
    /// Image of the `tandem-proxy` container.
    pub proxy_image: String,
    /// `CONSUL_HTTP_ADDR` for the proxy; `None` means the node's agent, `http://$(HOST_IP):8500`.
    pub consul_http_addr: Option<String>,
    /// Inject as the first init container with `restartPolicy: Always` (Kubernetes 1.29+).
    pub native_sidecar: bool,
    /// Run the proxy with `--tunnel`.
    pub tunnel: bool,
}

/// One JSON-patch operation (always `add`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    /// Always `add`.
    pub op: &'static str,
    /// JSON pointer of the location added to (`/-` appends to an array).
    pub path: String,
    /// What is added there.
    pub value: Value,
}

impl PatchOp {
    fn add(path: impl Into<String>, value: Value) -> Self {
        PatchOp {
            op: "add",
            path: path.into(),
            value,
        }
    }
}

/// The pod cannot take the patch: a field the patch writes to has the wrong type, or the pod
/// already has a container with the sidecar's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot inject this pod: {field} {problem}")]
pub struct PodShapeError {
    /// The field, dotted with indexes, e.g. `spec.containers[1].name`.
    pub field: String,
    /// What is wrong with it, e.g. `is not an object`.
    pub problem: String,
}

/// Escapes a map key for use as one JSON-pointer segment (RFC 6901).
pub(crate) fn escape_key(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The patch for a pod that [`crate::decision::decide`] chose to inject.
pub(crate) fn build(
    pod: &Value,
    settings: &ConnectSettings,
    options: &SidecarOptions,
) -> Result<Vec<PatchOp>, PodShapeError> {
    let mut ops = Vec::new();

    // A pod (template) without a spec gets an empty one first, so that the paths below exist
    // when the patch is applied; a spec that is not an object cannot take them.
    match pod.get("spec") {
        None | Some(Value::Null) => ops.push(PatchOp::add("/spec", json!({}))),
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(PodShapeError {
                field: "spec".into(),
                problem: "is not an object".into(),
            })
        }
    }

    for list in ["initContainers", "containers"] {
        for (i, c) in array_at(pod, &format!("/spec/{list}"))?.iter().enumerate() {
            if c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME) {
                return Err(PodShapeError {
                    field: format!("spec.{list}[{i}].name"),
                    problem: format!("is already {SIDECAR_NAME:?}, the injected sidecar's name"),
                });
            }
        }
    }

    // Upstream env vars, into every container that was there before (init containers first).
    let env = upstream_env(settings);
    for list in ["initContainers", "containers"] {
        for (i, container) in array_at(pod, &format!("/spec/{list}"))?.iter().enumerate() {
            let container = container.as_object().ok_or_else(|| PodShapeError {
                field: format!("spec.{list}[{i}]"),
                problem: "is not an object".into(),
            })?;
            add_env(&mut ops, &format!("/spec/{list}/{i}/env"), container, &env)?;
        }
    }

    // The sidecar itself.
    let sidecar = sidecar_container(settings, options);
    if options.native_sidecar {
        match array_at(pod, "/spec/initContainers")? {
            [] => ops.push(PatchOp::add("/spec/initContainers", json!([sidecar]))),
            _ => ops.push(PatchOp::add("/spec/initContainers/0", sidecar)),
        }
    } else {
        match array_at(pod, "/spec/containers")? {
            [] => ops.push(PatchOp::add("/spec/containers", json!([sidecar]))),
            _ => ops.push(PatchOp::add("/spec/containers/-", sidecar)),
        }
    }

    // What was decided, written back, and the status last.
    let mut written = Map::new();
    written.insert(CONNECT_SERVICE.into(), json!(settings.service.as_str()));
    if let Some(port) = settings.service_port {
        written.insert(CONNECT_SERVICE_PORT.into(), json!(port.to_string()));
    }
    written.insert(CONNECT_INJECT_STATUS.into(), json!(STATUS_INJECTED));
    add_map_entries(&mut ops, pod, "annotations", written)?;
    let mut labels = Map::new();
    labels.insert(CONNECT_INJECT_STATUS.into(), json!(STATUS_INJECTED));
    add_map_entries(&mut ops, pod, "labels", labels)?;

    Ok(ops)
}

/// Applies `ops` to `doc` with the `json-patch` crate (what `inject` does, and what the API
/// server does with the webhook's answer).
pub(crate) fn apply(doc: &mut Value, ops: &[PatchOp]) -> Result<(), json_patch::PatchError> {
    let value = serde_json::to_value(ops).expect("invariant: patch ops serialize to JSON");
    let patch: json_patch::Patch = serde_json::from_value(value)
        .expect("invariant: add ops with JSON-pointer paths are a valid patch");
    json_patch::patch(doc, &patch)
}

/// `<NAME>_CONNECT_SERVICE_HOST` / `_PORT` for every upstream, in annotation order (names from
/// [`annotations::env_prefixes`]).
pub(crate) fn upstream_env(settings: &ConnectSettings) -> Vec<Value> {
    let prefixes = annotations::env_prefixes(&settings.upstreams);
    settings
        .upstreams
        .iter()
        .zip(prefixes)
        .flat_map(|(u, prefix)| {
            [
                json!({"name": format!("{prefix}_CONNECT_SERVICE_HOST"), "value": "127.0.0.1"}),
                json!({"name": format!("{prefix}_CONNECT_SERVICE_PORT"), "value": u.local_port.to_string()}),
            ]
        })
        .collect()
}

/// The `tandem-proxy` container (or native-sidecar init container).
pub fn sidecar_container(settings: &ConnectSettings, options: &SidecarOptions) -> Value {
    let mut args = vec![flags::SERVICE.to_string(), settings.service.to_string()];
    if let Some(port) = settings.service_port {
        args.extend([flags::SERVICE_PORT.to_string(), port.to_string()]);
    }
    if !settings.upstreams.is_empty() {
        let list = UpstreamList(settings.upstreams.clone());
        args.extend([flags::UPSTREAMS.to_string(), list.to_string()]);
    }
    if options.tunnel {
        args.push(flags::TUNNEL.to_string());
    }

    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let consul = options
        .consul_http_addr
        .clone()
        .unwrap_or_else(|| "http://$(HOST_IP):8500".to_string());
    let env = json!([
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_IP", "status.podIP"),
        field("HOST_IP", "status.hostIP"),
        {"name": "CONSUL_HTTP_ADDR", "value": consul},
    ]);

    // The admin listener is on 127.0.0.1 inside the pod, out of the kubelet's reach, so the
    // probe execs the proxy's own check instead of an httpGet.
    let ready_probe = json!({
        "exec": {"command": [PROXY_BINARY, flags::CHECK_READY]},
        "initialDelaySeconds": 1,
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    });

    let mut container = json!({
        "name": SIDECAR_NAME,
        "image": options.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [PROXY_BINARY],
        "args": args,
        "env": env,
        "readinessProbe": ready_probe,
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    let c = container
        .as_object_mut()
        .expect("invariant: the container literal above is an object");
    if settings.service_port.is_some() {
        c.insert(
            "ports".into(),
            json!([{"name": "tandem-public", "containerPort": PUBLIC_LISTENER_PORT, "protocol": "TCP"}]),
        );
    }
    if options.native_sidecar {
        c.insert("restartPolicy".into(), json!("Always"));
        // The kubelet starts the app containers only once this probe has passed.
        c.insert(
            "startupProbe".into(),
            json!({
                "exec": {"command": [PROXY_BINARY, flags::CHECK_READY]},
                "periodSeconds": 1,
                "timeoutSeconds": 3,
                "failureThreshold": 120,
            }),
        );
    }
    container
}

/// Appends the env vars a container does not define itself (a user's own value wins).
fn add_env(
    ops: &mut Vec<PatchOp>,
    path: &str,
    container: &Map<String, Value>,
    env: &[Value],
) -> Result<(), PodShapeError> {
    let existing: Vec<&str> = match container.get("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .collect(),
        Some(_) => {
            return Err(PodShapeError {
                field: pointer_to_field(path),
                problem: "is not a list".into(),
            })
        }
    };
    let missing: Vec<Value> = env
        .iter()
        .filter(|e| !existing.contains(&e["name"].as_str().unwrap_or_default()))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if matches!(container.get("env"), None | Some(Value::Null)) {
        ops.push(PatchOp::add(path, Value::Array(missing)));
    } else {
        ops.extend(
            missing
                .into_iter()
                .map(|e| PatchOp::add(format!("{path}/-"), e)),
        );
    }
    Ok(())
}

/// Adds entries to `metadata.<map>` (annotations or labels), creating the map or `metadata`.
fn add_map_entries(
    ops: &mut Vec<PatchOp>,
    pod: &Value,
    map: &str,
    entries: Map<String, Value>,
) -> Result<(), PodShapeError> {
    match pod.get("metadata") {
        None | Some(Value::Null) => {
            // Only a pod template can lack metadata; an earlier call may have created it.
            if let Some(created) = ops.iter_mut().find(|op| op.path == "/metadata") {
                created.value[map] = Value::Object(entries);
            } else {
                ops.push(PatchOp::add("/metadata", json!({ map: entries })));
            }
            return Ok(());
        }
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(PodShapeError {
                field: "metadata".into(),
                problem: "is not an object".into(),
            })
        }
    }
    match pod.pointer(&format!("/metadata/{map}")) {
        None | Some(Value::Null) => ops.push(PatchOp::add(
            format!("/metadata/{map}"),
            Value::Object(entries),
        )),
        Some(Value::Object(_)) => {
            for (key, value) in entries {
                ops.push(PatchOp::add(
                    format!("/metadata/{map}/{}", escape_key(&key)),
                    value,
                ));
            }
        }
        Some(_) => {
            return Err(PodShapeError {
                field: format!("metadata.{map}"),
                problem: "is not a map".into(),
            })
        }
    }
    Ok(())
}

/// The array at `pointer`, empty when absent or null.
fn array_at<'a>(pod: &'a Value, pointer: &str) -> Result<&'a [Value], PodShapeError> {
    match pod.pointer(pointer) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(PodShapeError {
            field: pointer_to_field(pointer),
            problem: "is not a list".into(),
        }),
    }
}

/// `/spec/containers/0/env` -> `spec.containers[0].env`, for error messages.
fn pointer_to_field(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.trim_start_matches('/').split('/') {
        if seg.bytes().all(|b| b.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::{self, connect_settings};

    fn options() -> SidecarOptions {
        SidecarOptions {
            proxy_image: "tandem-proxy:test".into(),
            consul_http_addr: None,
            native_sidecar: false,
            tunnel: false,
        }
    }

    fn apply(pod: &Value, ops: &[PatchOp]) -> Value {
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
        let mut doc = pod.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        doc
    }

    fn paths(ops: &[PatchOp]) -> Vec<&str> {
        ops.iter().map(|o| o.path.as_str()).collect()
    }

    #[test]
    fn escape_key_follows_rfc6901() {
        assert_eq!(escape_key("a/b~c"), "a~1b~0c");
        assert_eq!(escape_key("~/"), "~0~1");
        assert_eq!(
            escape_key(CONNECT_INJECT_STATUS),
            "consul.hashicorp.com~1connect-inject-status"
        );
    }

    #[test]
    fn pod_without_annotations_gets_whole_maps() {
        let pod = json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "web"}]}});
        let s = connect_settings(&pod).unwrap();
        let ops = build(&pod, &s, &options()).unwrap();
        assert_eq!(
            paths(&ops),
            [
                "/spec/containers/-",
                "/metadata/annotations",
                "/metadata/labels"
            ]
        );
        let out = apply(&pod, &ops);
        assert_eq!(
            out["metadata"]["annotations"][CONNECT_INJECT_STATUS],
            "injected"
        );
        assert_eq!(out["metadata"]["annotations"][CONNECT_SERVICE], "web");
        assert!(out["metadata"]["annotations"]
            .get(CONNECT_SERVICE_PORT)
            .is_none());
        assert_eq!(out["spec"]["containers"][1]["name"], SIDECAR_NAME);
    }

    #[test]
    fn existing_maps_get_escaped_keys() {
        let pod = json!({"metadata": {"annotations": {"x": "y"}, "labels": {"app": "a"}},
                         "spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80}]}]}});
        let ops = build(&pod, &connect_settings(&pod).unwrap(), &options()).unwrap();
        assert!(paths(&ops)
            .contains(&"/metadata/annotations/consul.hashicorp.com~1connect-service-port"));
        assert!(
            paths(&ops).contains(&"/metadata/labels/consul.hashicorp.com~1connect-inject-status")
        );
        let out = apply(&pod, &ops);
        assert_eq!(out["metadata"]["annotations"]["x"], "y");
        assert_eq!(out["metadata"]["annotations"][CONNECT_SERVICE_PORT], "80");
        assert_eq!(out["metadata"]["labels"]["app"], "a");
    }

    #[test]
    fn env_goes_to_every_preexisting_container_but_not_the_sidecar() {
        let pod = json!({"metadata": {"annotations": {annotations::CONNECT_SERVICE_UPSTREAMS: "static-server:1234"}},
            "spec": {
                "initContainers": [{"name": "init"}],
                "containers": [{"name": "a", "env": [{"name": "KEEP", "value": "1"}]},
                               {"name": "b", "env": [{"name": "STATIC_SERVER_CONNECT_SERVICE_PORT", "value": "9"}]}]}});
        let ops = build(&pod, &connect_settings(&pod).unwrap(), &options()).unwrap();
        let out = apply(&pod, &ops);
        let names = |v: &Value| -> Vec<String> {
            v["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(&out["spec"]["initContainers"][0]),
            [
                "STATIC_SERVER_CONNECT_SERVICE_HOST",
                "STATIC_SERVER_CONNECT_SERVICE_PORT"
            ]
        );
        assert_eq!(
            names(&out["spec"]["containers"][0]),
            [
                "KEEP",
                "STATIC_SERVER_CONNECT_SERVICE_HOST",
                "STATIC_SERVER_CONNECT_SERVICE_PORT"
            ]
        );
        // The user's own value is kept, not duplicated.
        assert_eq!(
            names(&out["spec"]["containers"][1]),
            [
                "STATIC_SERVER_CONNECT_SERVICE_PORT",
                "STATIC_SERVER_CONNECT_SERVICE_HOST"
            ]
        );
        assert_eq!(out["spec"]["containers"][1]["env"][0]["value"], "9");
        let sidecar = &out["spec"]["containers"][2];
        assert!(!names(sidecar).iter().any(|n| n.contains("CONNECT_SERVICE")));
        assert_eq!(out["spec"]["containers"][0]["env"][2]["value"], "1234");
    }

    #[test]
    fn sidecar_args_follow_the_proxy_contract() {
        let pod = json!({"metadata": {"annotations": {
                annotations::CONNECT_SERVICE: "web",
                annotations::CONNECT_SERVICE_UPSTREAMS: "db:1234, auth:6789:dc2"}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}});
        let c = sidecar_container(&connect_settings(&pod).unwrap(), &options());
        assert_eq!(
            c["args"],
            json!([
                "--service",
                "web",
                "--service-port",
                "8080",
                "--upstreams",
                "db:1234,auth:6789:dc2"
            ])
        );
        assert_eq!(c["command"], json!([PROXY_BINARY]));
        assert_eq!(
            c["readinessProbe"]["exec"]["command"],
            json!([PROXY_BINARY, flags::CHECK_READY])
        );
        assert_eq!(
            c["env"][4],
            json!({"name": "CONSUL_HTTP_ADDR", "value": "http://$(HOST_IP):8500"})
        );
        assert_eq!(
            c["env"][3]["valueFrom"]["fieldRef"]["fieldPath"],
            "status.hostIP"
        );
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["ports"][0]["containerPort"], 20000);
        assert!(c.get("restartPolicy").is_none());

        let client = json!({"metadata": {}, "spec": {"containers": [{"name": "client"}]}});
        let mut opts = options();
        opts.consul_http_addr = Some("http://consul:8500".into());
        let c = sidecar_container(&connect_settings(&client).unwrap(), &opts);
        assert_eq!(c["args"], json!(["--service", "client"]));
        assert!(c.get("ports").is_none());
        assert_eq!(c["env"][4]["value"], "http://consul:8500");
    }

    #[test]
    fn proxy_tunnel_adds_the_proxy_flag_the_contract_names() {
        let client = json!({"metadata": {}, "spec": {"containers": [{"name": "client"}]}});
        let settings = connect_settings(&client).unwrap();
        let mut opts = options();
        assert_eq!(
            sidecar_container(&settings, &opts)["args"],
            json!(["--service", "client"])
        );
        opts.tunnel = true;
        assert_eq!(
            sidecar_container(&settings, &opts)["args"],
            json!(["--service", "client", flags::TUNNEL])
        );
    }

    #[test]
    fn native_sidecar_is_the_first_init_container() {
        let mut opts = options();
        opts.native_sidecar = true;
        let pod = json!({"metadata": {"annotations": {annotations::CONNECT_SERVICE_UPSTREAMS: "db:1"}},
            "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "a"}]}});
        let ops = build(&pod, &connect_settings(&pod).unwrap(), &opts).unwrap();
        let out = apply(&pod, &ops);
        let inits = out["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(inits[0]["name"], SIDECAR_NAME);
        assert_eq!(inits[0]["restartPolicy"], "Always");
        assert!(inits[0]["startupProbe"].is_object());
        // The env went to the user's init container before the sidecar was inserted.
        assert_eq!(inits[1]["name"], "migrate");
        assert_eq!(inits[1]["env"][0]["name"], "DB_CONNECT_SERVICE_HOST");
        assert!(inits[0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != "DB_CONNECT_SERVICE_HOST"));
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);

        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        let ops = build(&bare, &connect_settings(&bare).unwrap(), &opts).unwrap();
        assert_eq!(paths(&ops), ["/spec/initContainers", "/metadata"]);
        let out = apply(&bare, &ops);
        assert_eq!(out["metadata"]["labels"][CONNECT_INJECT_STATUS], "injected");
        assert_eq!(
            out["metadata"]["annotations"][CONNECT_INJECT_STATUS],
            "injected"
        );
    }

    #[test]
    fn malformed_shapes_are_errors_not_panics() {
        let pod =
            json!({"metadata": {"annotations": "nope"}, "spec": {"containers": [{"name": "a"}]}});
        let settings = connect_settings(&json!({"spec": {"containers": [{"name": "a"}]}})).unwrap();
        let err = build(&pod, &settings, &options()).unwrap_err();
        assert_eq!(err.field, "metadata.annotations");
        let pod = json!({"metadata": {}, "spec": {"containers": [{"name": "a", "env": {}}]}});
        let mut s = settings.clone();
        s.upstreams = annotations::parse_upstreams("db:1", None).unwrap();
        let err = build(&pod, &s, &options()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot inject this pod: spec.containers[0].env is not a list"
        );
        let pod = json!({"spec": {"containers": "x"}});
        assert!(build(&pod, &s, &options()).is_err());
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": SIDECAR_NAME}]}});
        let err = build(&pod, &s, &options()).unwrap_err();
        assert_eq!(err.field, "spec.containers[1].name");
        for spec in [json!("x"), json!([]), json!(1)] {
            let err = build(&json!({"spec": spec}), &s, &options()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "cannot inject this pod: spec is not an object"
            );
        }
    }

    /// Found by `fuzz/` (injector_review): a pod without `spec` (named by annotation) got
    /// `add /spec/containers` (or `/spec/initContainers`), which fails to apply when there is
    /// no `/spec`; the API server would have refused the webhook's answer.
    #[test]
    fn pod_without_spec_gets_one() {
        let settings =
            connect_settings(&json!({"metadata": {"annotations": {CONNECT_SERVICE: "web"}}}))
                .unwrap();
        for native_sidecar in [false, true] {
            let options = SidecarOptions {
                native_sidecar,
                ..options()
            };
            for pod in [
                json!({"metadata": {"name": "p"}}),
                json!({"metadata": {"name": "p"}, "spec": null}),
            ] {
                let ops = build(&pod, &settings, &options).unwrap();
                assert_eq!(ops[0].path, "/spec");
                let out = apply(&pod, &ops);
                let list = if native_sidecar {
                    "initContainers"
                } else {
                    "containers"
                };
                assert_eq!(out["spec"][list][0]["name"], SIDECAR_NAME, "{pod}");
            }
        }
    }
}
