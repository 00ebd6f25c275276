//! An `AdmissionReview` body through the webhook's path (`review::respond`), with the two
//! injector set-ups the golden tests use most (opt-in with a classic sidecar, default-on with
//! a native sidecar and a given Consul address).
//!
//! Properties, beyond "never panics":
//! * a well-formed review is answered with its own uid and API version;
//! * a patch comes with `allowed: true` and the `Injected` verdict, and only then;
//! * the patch (base64 JSONPatch) decodes and applies to the pod with the `json-patch` crate;
//! * the patched pod keeps every original container and init container, by name and in order,
//!   and has exactly one `tandem-proxy`;
//! * the patched pod, reviewed again, is not injected a second time.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tandem_injector::decision::Policy;
use tandem_injector::patch::{SidecarOptions, SIDECAR_NAME};
use tandem_injector::review::{self, Verdict};
use tandem_injector::Injector;

fuzz_target!(|body: &[u8]| {
    for injector in injectors() {
        check(&injector, body);
    }
});

fn injectors() -> [Injector; 2] {
    [
        Injector::new(
            Policy::default(),
            SidecarOptions {
                proxy_image: "tandem-proxy:fuzz".into(),
                consul_http_addr: None,
                native_sidecar: false,
                tunnel: false,
            },
        ),
        Injector::new(
            Policy {
                default_inject: true,
                ..Policy::default()
            },
            SidecarOptions {
                proxy_image: "tandem-proxy:fuzz".into(),
                consul_http_addr: Some("http://consul:8500".into()),
                native_sidecar: true,
                tunnel: true,
            },
        ),
    ]
}

fn check(injector: &Injector, body: &[u8]) {
    let Ok((answer, verdict)) = review::respond(injector, body) else {
        return;
    };
    let review: Value = serde_json::from_slice(body).expect("respond accepted it, so it is JSON");
    let request = &review["request"];
    assert_eq!(answer["apiVersion"], review["apiVersion"]);
    assert_eq!(answer["response"]["uid"], request["uid"]);

    let response = &answer["response"];
    let Some(patch) = response.get("patch") else {
        assert_ne!(verdict, Verdict::Injected, "injected without a patch");
        return;
    };
    assert_eq!(
        verdict,
        Verdict::Injected,
        "a patch with verdict {verdict:?}"
    );
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a string"))
        .expect("the patch is base64");
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).expect("the patch is a JSON patch");
    let pod = &request["object"];
    let mut patched = pod.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch) {
        panic!("the patch does not apply: {e}\npod: {pod}\npatch: {patch:?}");
    }

    for list in ["containers", "initContainers"] {
        let before = names(pod, list);
        let after = names(&patched, list);
        let kept: Vec<&Option<String>> = after
            .iter()
            .filter(|n| n.as_deref() != Some(SIDECAR_NAME))
            .collect();
        assert_eq!(
            kept,
            before.iter().collect::<Vec<_>>(),
            "spec.{list} lost or reordered a container"
        );
    }
    let sidecars = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| names(&patched, list))
        .filter(|n| n.as_deref() == Some(SIDECAR_NAME))
        .count();
    assert_eq!(sidecars, 1, "the patched pod has {sidecars} sidecars");

    let again = json!({
        "apiVersion": review["apiVersion"],
        "kind": "AdmissionReview",
        "request": {
            "uid": request["uid"],
            "kind": request["kind"],
            "operation": "CREATE",
            "namespace": request["namespace"],
            "object": patched,
        },
    });
    let body = serde_json::to_vec(&again).expect("a Value serializes");
    let (_, verdict) = review::respond(injector, &body).expect("the same review, patched");
    assert_ne!(
        verdict,
        Verdict::Injected,
        "a patched pod is injected again"
    );
}

/// The `name` of every entry of `spec.<list>` (`None` for an entry without a string name).
fn names(pod: &Value, list: &str) -> Vec<Option<String>> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
