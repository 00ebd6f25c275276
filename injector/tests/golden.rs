//! Golden tests: each pod goes through the webhook's code path (`review::respond`) inside an
//! `admission.k8s.io/v1` AdmissionReview. The response (with its patch decoded) and the patched
//! pod are compared with `tests/golden/<case>/`; regenerate with `UPDATE_GOLDEN=1`.
//!
//! Every patch is also applied with `kubectl patch --local --type=json` (as the API server
//! would) and with the `json-patch` crate; both results must be identical, and every patched
//! pod must pass `kubernetes-validate --strict`.

mod common;

use base64::Engine;
use serde_json::{json, Value};
use tandem_injector::decision::{NamespaceList, Policy};
use tandem_injector::review::{self, API_V1, API_V1BETA1};
use tandem_injector::Injector;

use common::*;

struct Case {
    name: &'static str,
    pod: Value,
    namespace: &'static str,
    injector: Injector,
    /// Whether a patch is expected (the case fails if the injector disagrees).
    injects: bool,
}

fn pod_file(rel: &str) -> Value {
    read_doc(&data(rel))
}

fn opt_in() -> Policy {
    Policy::default()
}

fn default_on() -> Policy {
    Policy {
        default_inject: true,
        ..Policy::default()
    }
}

fn with_annotations(pairs: &[(&str, &str)]) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad", "annotations": {"consul.hashicorp.com/connect-inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}
    });
    for (k, v) in pairs {
        pod["metadata"]["annotations"][*k] = json!(v);
    }
    pod
}

/// Pods with one bad annotation each (on top of connect-inject: "true").
const BAD: [(&str, &[(&str, &str)]); 13] = [
    (
        "bad-connect-inject",
        &[("consul.hashicorp.com/connect-inject", "yes")],
    ),
    (
        "bad-port-names-no-port",
        &[("consul.hashicorp.com/connect-service-port", "grpc")],
    ),
    (
        "bad-port-out-of-range",
        &[("consul.hashicorp.com/connect-service-port", "70000")],
    ),
    (
        "bad-port-zero",
        &[("consul.hashicorp.com/connect-service-port", "0")],
    ),
    (
        "bad-port-is-public-listener",
        &[("consul.hashicorp.com/connect-service-port", "20000")],
    ),
    (
        "bad-upstream-without-port",
        &[("consul.hashicorp.com/connect-service-upstreams", "db")],
    ),
    (
        "bad-upstream-port-not-a-number",
        &[("consul.hashicorp.com/connect-service-upstreams", "db:abc")],
    ),
    (
        "bad-upstream-port-out-of-range",
        &[(
            "consul.hashicorp.com/connect-service-upstreams",
            "db:1234,auth:70000",
        )],
    ),
    (
        "bad-upstream-duplicate-local-port",
        &[(
            "consul.hashicorp.com/connect-service-upstreams",
            "db:1234,auth:1234",
        )],
    ),
    (
        "bad-upstream-is-service-port",
        &[("consul.hashicorp.com/connect-service-upstreams", "db:8080")],
    ),
    (
        "bad-service-empty",
        &[("consul.hashicorp.com/connect-service", "")],
    ),
    (
        "bad-service-slash",
        &[("consul.hashicorp.com/connect-service", "web/v2")],
    ),
    (
        "bad-upstream-env-starts-with-digit",
        &[(
            "consul.hashicorp.com/connect-service-upstreams",
            "9lives:1234",
        )],
    ),
];

fn cases() -> Vec<Case> {
    let plain = || injector(opt_in(), false, None);
    let case = |name, pod, namespace, injector, injects| Case {
        name,
        pod,
        namespace,
        injector,
        injects,
    };
    let mut cases = vec![
        case(
            "seed-static-server",
            pod_file("seed/static-server.yaml"),
            "default",
            plain(),
            true,
        ),
        case(
            "seed-static-client",
            pod_file("seed/static-client.yaml"),
            "default",
            plain(),
            true,
        ),
        case(
            "seed-deployment-pod",
            pod_file("pods/generate-name.yaml"),
            "apps",
            plain(),
            true,
        ),
        case(
            "no-annotations-default-inject",
            pod_file("pods/no-annotations.yaml"),
            "default",
            injector(default_on(), false, None),
            true,
        ),
        case(
            "no-annotations-opt-in",
            pod_file("pods/no-annotations.yaml"),
            "default",
            plain(),
            false,
        ),
        case(
            "named-ports",
            pod_file("pods/named-ports.yaml"),
            "default",
            plain(),
            true,
        ),
        case(
            "consul-names",
            pod_file("pods/consul-names.yaml"),
            "default",
            plain(),
            true,
        ),
        case(
            "multi-container-env",
            pod_file("pods/multi-container-env.yaml"),
            "default",
            plain(),
            true,
        ),
        case(
            "init-containers",
            pod_file("pods/init-containers.yaml"),
            "default",
            plain(),
            true,
        ),
        case(
            "init-containers-native-sidecar",
            pod_file("pods/init-containers.yaml"),
            "default",
            injector(opt_in(), true, None),
            true,
        ),
        case(
            "native-sidecar-no-init",
            pod_file("seed/static-server.yaml"),
            "default",
            injector(opt_in(), true, None),
            true,
        ),
        case(
            "special-keys",
            pod_file("pods/special-keys.yaml"),
            "default",
            plain(),
            true,
        ),
        case(
            "consul-http-addr",
            pod_file("seed/static-client.yaml"),
            "default",
            injector(opt_in(), false, Some("https://consul.consul.svc:8501")),
            true,
        ),
        case(
            "already-injected",
            pod_file("pods/already-injected.yaml"),
            "default",
            injector(default_on(), false, None),
            false,
        ),
        case(
            "opted-out",
            pod_file("pods/opted-out.yaml"),
            "default",
            injector(default_on(), false, None),
            false,
        ),
        case(
            "kube-system",
            pod_file("seed/static-server.yaml"),
            "kube-system",
            plain(),
            false,
        ),
        case(
            "kube-public",
            pod_file("seed/static-server.yaml"),
            "kube-public",
            plain(),
            false,
        ),
        case(
            "denied-namespace",
            pod_file("seed/static-server.yaml"),
            "legacy",
            injector(
                Policy {
                    deny: vec!["legacy".into()],
                    allow: Some(NamespaceList::All),
                    ..opt_in()
                },
                false,
                None,
            ),
            false,
        ),
        case(
            "not-allowed-namespace",
            pod_file("seed/static-server.yaml"),
            "default",
            injector(
                Policy {
                    allow: Some("apps,web".parse().unwrap()),
                    ..opt_in()
                },
                false,
                None,
            ),
            false,
        ),
    ];
    // consul-k8s forms: the failover pair in two datacenters, one service on two local ports,
    // entries separated by spaces and a newline, a prepared query.
    cases.push(case(
        "consul-k8s-upstream-forms",
        with_annotations(&[(
            "consul.hashicorp.com/connect-service-upstreams",
            "db:1234,db:1235:dc2 db:1236\n  prepared_query:geo-db:1237",
        )]),
        "default",
        plain(),
        true,
    ));
    for (name, pairs) in BAD {
        cases.push(case(
            name,
            with_annotations(pairs),
            "default",
            plain(),
            false,
        ));
    }
    cases
}

fn admission_review(api: &str, case: &Case) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": api,
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{}", case.name),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": case.namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": case.pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    }))
    .expect("serialize review")
}

fn decoded_patch(response: &Value) -> Option<Value> {
    let b64 = response.pointer("/response/patch")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("patch is base64");
    Some(serde_json::from_slice(&bytes).expect("patch is JSON"))
}

#[test]
fn golden_cases() {
    let mut to_validate = Vec::new();
    let cases = cases();
    for case in &cases {
        let (response, _) = review::respond(&case.injector, &admission_review(API_V1, case))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(response["apiVersion"], API_V1, "{}", case.name);
        assert_eq!(
            response["response"]["uid"],
            format!("uid-{}", case.name),
            "{}",
            case.name
        );

        // v1beta1 is answered in kind, with the same decision.
        let (beta, _) =
            review::respond(&case.injector, &admission_review(API_V1BETA1, case)).unwrap();
        assert_eq!(beta["apiVersion"], API_V1BETA1);
        assert_eq!(
            beta["response"], response["response"],
            "{}: v1beta1 differs",
            case.name
        );

        let patch = decoded_patch(&response);
        let mut shown = response.clone();
        if let Some(p) = &patch {
            shown["response"]["patch"] = json!({"decoded": p});
        }
        golden(&format!("{}/response.json", case.name), &shown);
        // The input, for scripts/k8s-conformance: it sends each case whose injector is the one
        // `tandem-injector install` deploys to a real API server (server-side dry run).
        golden(
            &format!("{}/input.json", case.name),
            &json!({
                "namespace": case.namespace,
                "installed_webhook": case.injector == injector(opt_in(), false, None),
                "injects": case.injects,
                "pod": case.pod,
            }),
        );

        match (&patch, case.injects) {
            (Some(patch), true) => {
                assert_eq!(response["response"]["allowed"], true);
                assert_eq!(response["response"]["patchType"], "JSONPatch");
                let by_kubectl = kubectl_patch(&case.pod, patch);
                let mut by_crate = case.pod.clone();
                let ops: json_patch::Patch =
                    serde_json::from_value(patch.clone()).expect("patch parses");
                json_patch::patch(&mut by_crate, &ops)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
                assert_eq!(
                    by_kubectl, by_crate,
                    "{}: kubectl and json-patch disagree",
                    case.name
                );
                check_injected(case.name, &case.pod, &by_crate);
                golden(&format!("{}/pod.json", case.name), &by_crate);
                to_validate.push((case.name.to_string(), by_crate));
            }
            (None, false) => {
                assert!(
                    response["response"].get("patchType").is_none(),
                    "{}",
                    case.name
                );
                if case.name.starts_with("bad-") {
                    assert_eq!(response["response"]["allowed"], false, "{}", case.name);
                } else {
                    assert_eq!(response["response"]["allowed"], true, "{}", case.name);
                }
            }
            (Some(_), false) => panic!("{}: injected but should not have been", case.name),
            (None, true) => panic!("{}: not injected: {}", case.name, response["response"]),
        }
    }
    // No stale golden directories left from renamed cases.
    let names: Vec<String> = cases.iter().map(|c| c.name.to_string()).collect();
    for dir in golden_files("").into_iter().filter(|d| d != "inject") {
        assert!(
            names.contains(&dir),
            "stale golden directory tests/golden/{dir}: remove it"
        );
    }
    let report = kubernetes_validate(&to_validate);
    assert!(report.contains("passed for resource pod/"), "{report}");
}

/// What every injected pod must look like, whatever the case.
fn check_injected(name: &str, before: &Value, after: &Value) {
    let annotations = &after["metadata"]["annotations"];
    assert_eq!(
        annotations["consul.hashicorp.com/connect-inject-status"], "injected",
        "{name}"
    );
    assert!(
        annotations["consul.hashicorp.com/connect-service"].is_string(),
        "{name}"
    );
    let all: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| after["spec"][*l].as_array().into_iter().flatten())
        .collect();
    let sidecars: Vec<&&Value> = all.iter().filter(|c| c["name"] == "tandem-proxy").collect();
    assert_eq!(sidecars.len(), 1, "{name}: exactly one sidecar");
    let sidecar = sidecars[0];
    assert_eq!(sidecar["image"], PROXY_IMAGE);
    assert_eq!(
        sidecar["readinessProbe"]["exec"]["command"],
        json!(["/tandem-proxy", "--check-ready"])
    );
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    let env_names: Vec<&str> = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for want in [
        "POD_NAME",
        "POD_NAMESPACE",
        "POD_IP",
        "HOST_IP",
        "CONSUL_HTTP_ADDR",
    ] {
        assert!(env_names.contains(&want), "{name}: sidecar lacks {want}");
    }
    // The original containers are all still there, unchanged apart from env.
    for list in ["initContainers", "containers"] {
        for (i, original) in before["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let offset =
                usize::from(list == "initContainers" && sidecar.get("restartPolicy").is_some());
            let mut now = after["spec"][list][i + offset].clone();
            let mut was = original.clone();
            now.as_object_mut().unwrap().remove("env");
            was.as_object_mut().unwrap().remove("env");
            assert_eq!(now, was, "{name}: {list}[{i}] changed beyond env");
        }
    }
}

#[test]
fn every_bad_annotation_names_itself_and_its_value() {
    let cases = cases();
    for (name, pairs) in BAD {
        let case = cases.iter().find(|c| c.name == name).expect("case exists");
        let (response, _) =
            review::respond(&case.injector, &admission_review(API_V1, case)).unwrap();
        assert_eq!(response["response"]["allowed"], false, "{name}");
        let message = response["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        let (key, value) = pairs[0];
        let want = format!("invalid annotation {key}={value:?}");
        assert!(
            message.contains(&want),
            "{name}: message {message:?} lacks {want:?}"
        );
    }
}

#[test]
fn the_validator_really_rejects_a_broken_pod() {
    // Without this, a validator that accepts everything would make the checks above worthless.
    let case = &cases()[0];
    let (response, _) = review::respond(&case.injector, &admission_review(API_V1, case)).unwrap();
    let patch = decoded_patch(&response).unwrap();
    let mut pod = kubectl_patch(&case.pod, &patch);
    pod["spec"]["containers"][1]["readinessProbe"]["exec"]["cmd"] = json!(["x"]);
    let out = kubernetes_validate_rejects(&pod);
    assert!(out.contains("cmd"), "{out}");
}
