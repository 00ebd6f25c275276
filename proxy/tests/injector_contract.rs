//! The injector's side of the contract, fed to the proxy's own parser: every sidecar the
//! injector's golden tests write (`injector/tests/golden/*/response.json`, which those tests
//! prove are byte for byte what the webhook answers) must start a proxy whose flags and
//! environment are accepted, as the kubelet would pass them (`fieldRef` values filled in,
//! `$(VAR)` expanded). A pod the injector admits is then never a pod whose proxy exits 64.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_proxy::Config;

/// What the kubelet would put in the `fieldRef` variables of a pod on a node.
fn field_value(path: &str) -> &'static str {
    match path {
        "metadata.name" => "pod-7",
        "metadata.namespace" => "team-a",
        "status.podIP" => "10.1.0.7",
        "status.hostIP" => "10.0.0.1",
        other => panic!("the sidecar reads an unexpected fieldRef {other:?}"),
    }
}

/// The container's environment as the kubelet resolves it, in order (`$(VAR)` expands only
/// variables defined earlier, as Kubernetes does).
fn environment(container: &Value) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"]
            .as_str()
            .expect("env entries have names")
            .to_string();
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => {
                let mut v = v.clone();
                for (k, known) in &env {
                    v = v.replace(&format!("$({k})"), known.as_str());
                }
                v
            }
            (_, Value::String(path)) => field_value(path).to_string(),
            _ => panic!("env {name} has neither a value nor a fieldRef: {e}"),
        };
        env.insert(name, value);
    }
    env
}

/// Every `tandem-proxy` container anywhere in `doc` (a webhook answer's decoded patch, or the
/// manifests `tandem-injector inject` wrote).
fn sidecars(doc: &Value, found: &mut Vec<Value>) {
    match doc {
        Value::Object(map) => {
            if map.get("name").and_then(Value::as_str) == Some("tandem-proxy")
                && map.contains_key("args")
            {
                found.push(doc.clone());
            }
            map.values().for_each(|v| sidecars(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| sidecars(v, found)),
        _ => {}
    }
}

/// Every golden file of the injector: `<case>/response.json` and `inject/*.json`.
fn golden_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../injector/tests/golden");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("the injector's golden cases are in the repository")
    {
        let dir = dir.expect("readable golden dir").path();
        for file in std::fs::read_dir(&dir).expect("a golden case is a folder") {
            let file = file.expect("readable golden case").path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name == "response.json" || dir.ends_with("inject") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_injected_sidecar_starts_with_flags_the_proxy_accepts() {
    // The parser also reads TANDEM_* variables: only what the pod spec says may count.
    for (name, _) in std::env::vars() {
        if name.starts_with("TANDEM_") || name.starts_with("CONSUL_") {
            std::env::remove_var(name);
        }
    }
    let mut checked = Vec::new();
    for file in golden_files() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let doc: Value = serde_json::from_str(&text).expect("golden files are JSON");
        let mut found = Vec::new();
        sidecars(&doc, &mut found);
        let parent = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        let case = if parent == "inject" {
            format!("inject/{}", file.file_name().unwrap().to_string_lossy())
        } else {
            parent.into_owned()
        };
        for sidecar in found {
            let mut argv = vec!["tandem-proxy".to_string()];
            argv.extend(
                sidecar["args"]
                    .as_array()
                    .expect("the sidecar has args")
                    .iter()
                    .map(|a| a.as_str().expect("args are strings").to_string()),
            );
            let env = environment(&sidecar);
            let config = match Config::parse_args(&argv) {
                Ok(c) => c,
                Err(e) => panic!("{case}: the proxy refuses {argv:?}: {e:?}"),
            };
            let settings = config
                .resolve(&|name| env.get(name).cloned())
                .unwrap_or_else(|e| panic!("{case}: the proxy refuses {argv:?} with {env:?}: {e}"));
            assert_eq!(
                settings.service.as_str(),
                argv[2],
                "{case}: --service is read as written"
            );
            assert_eq!(settings.service_id, format!("pod-7-{}", argv[2]), "{case}");
            assert_eq!(
                settings.registration.advertise_address.to_string(),
                "10.1.0.7",
                "{case}"
            );
            assert_eq!(
                settings.consul.http_addr.host_str(),
                Some(if case == "consul-http-addr" {
                    "consul.consul.svc"
                } else {
                    "10.0.0.1"
                }),
                "{case}"
            );

            // The readiness probe runs the same binary with its own flags.
            let probe: Vec<String> = sidecar["readinessProbe"]["exec"]["command"]
                .as_array()
                .expect("an exec readiness probe")
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            let probe_config = Config::parse_args(&probe)
                .unwrap_or_else(|e| panic!("{case}: the proxy refuses its probe {probe:?}: {e:?}"));
            assert!(probe_config.check_ready, "{case}");
            checked.push(case.clone());
        }
    }
    // Not vacuous: the seed's pods, the dotted names and the rest were all read.
    for must in [
        "seed-static-server",
        "seed-static-client",
        "consul-names",
        "init-containers-native-sidecar",
        "inject/static-client.json",
    ] {
        assert!(
            checked.iter().any(|c| c == must),
            "golden case {must} was not checked: {checked:?}"
        );
    }
    assert!(checked.len() >= 10, "{checked:?}");
}
