//! `AdmissionReview` in and out: `admission.k8s.io/v1` and `v1beta1`, answered in kind.
//!
//! Works on `serde_json::Value` so nothing the API server sends is lost or rejected for an
//! unknown field. Malformed reviews are [`ReviewError`]s (HTTP 400); everything about the pod
//! itself is answered inside a well-formed review, never as an HTTP error.

use base64::Engine;
use serde_json::{json, Value};

use crate::{Injector, Outcome};

/// The `apiVersion` of an `AdmissionReview` from Kubernetes 1.16 on.
pub const API_V1: &str = "admission.k8s.io/v1";
/// The older `apiVersion` still answered (the reply uses the request's version).
pub const API_V1BETA1: &str = "admission.k8s.io/v1beta1";

/// A request body that is not an `AdmissionReview` the webhook can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body does not parse as JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// `apiVersion` is neither [`API_V1`] nor [`API_V1BETA1`] (empty if absent); carries it.
    #[error("apiVersion {0:?} is not supported (want {API_V1} or {API_V1BETA1})")]
    UnsupportedApiVersion(String),
    /// `kind` is not `AdmissionReview` (empty if absent); carries it.
    #[error("kind {0:?} is not AdmissionReview")]
    WrongKind(String),
    /// `request` is absent or not an object.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// `request.uid` is absent or empty: the answer could not name the request.
    #[error("the AdmissionReview request has no uid")]
    MissingUid,
}

/// What was decided for one review, for logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed unchanged: the object is not a core-group `Pod` (or is a subresource).
    NotAPod,
    /// Allowed unchanged: the operation is not `CREATE`.
    NotACreate,
    /// Allowed unchanged: the policy or the pod's annotations say not to inject; carries why.
    Skipped(String),
    /// Allowed with the sidecar patch.
    Injected,
    /// Denied (`allowed: false`); carries the message the API server shows the user.
    Rejected(String),
}

/// Answers one `AdmissionReview` body with the review to send back.
pub fn respond(injector: &Injector, body: &[u8]) -> Result<(Value, Verdict), ReviewError> {
    let review: Value = serde_json::from_slice(body)?;
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != API_V1 && api_version != API_V1BETA1 {
        return Err(ReviewError::UnsupportedApiVersion(api_version.to_string()));
    }
    let kind = review
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind(kind.to_string()));
    }
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or(ReviewError::MissingRequest)?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or(ReviewError::MissingUid)?;

    let (mut response, verdict) = answer(injector, request);
    response["uid"] = json!(uid);
    Ok((
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}),
        verdict,
    ))
}

/// The `response` of a well-formed review (everything but the uid).
fn answer(injector: &Injector, request: &Value) -> (Value, Verdict) {
    let str_at = |p: &str| {
        request
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let is_pod = str_at("/kind/group").is_empty()
        && str_at("/kind/kind") == "Pod"
        && str_at("/subResource").is_empty();
    if !is_pod {
        return (allowed(), Verdict::NotAPod);
    }
    if str_at("/operation") != "CREATE" {
        return (allowed(), Verdict::NotACreate);
    }
    let Some(pod) = request.get("object").filter(|o| o.is_object()) else {
        let message = "request.object is missing or not a Pod".to_string();
        return (denied(&message), Verdict::Rejected(message));
    };
    // The request's namespace: the pod's own is empty at admission.
    let namespace = match str_at("/namespace") {
        "" => pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("default"),
        ns => ns,
    };
    let pod_name = pod
        .pointer("/metadata/name")
        .or_else(|| pod.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let uid = str_at("/uid");
    match injector.mutate(namespace, pod) {
        Ok(Outcome::Skipped(reason)) => {
            tracing::debug!(review.uid = uid, k8s.namespace = namespace, pod.name = pod_name, %reason, "pod skipped");
            (allowed(), Verdict::Skipped(reason.to_string()))
        }
        Ok(Outcome::Patched { ops, settings }) => {
            tracing::info!(
                review.uid = uid,
                k8s.namespace = namespace,
                pod.name = pod_name,
                service = %settings.service,
                "pod injected"
            );
            let bytes = serde_json::to_vec(&ops).expect("invariant: patch ops serialize to JSON");
            let patch = base64::engine::general_purpose::STANDARD.encode(bytes);
            (
                json!({"allowed": true, "patchType": "JSONPatch", "patch": patch}),
                Verdict::Injected,
            )
        }
        Err(err) => {
            let message = format!("tandem-injector: {err}");
            tracing::info!(review.uid = uid, k8s.namespace = namespace, pod.name = pod_name, %message, "pod rejected");
            (denied(&message), Verdict::Rejected(message))
        }
    }
}

fn allowed() -> Value {
    json!({"allowed": true})
}

fn denied(message: &str) -> Value {
    json!({"allowed": false, "status": {"code": 400, "reason": "BadRequest", "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(api: &str, request: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"apiVersion": api, "kind": "AdmissionReview", "request": request}),
        )
        .unwrap()
    }

    fn pod_request(annotations: Value) -> Value {
        json!({"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
               "operation": "CREATE", "namespace": "apps",
               "object": {"metadata": {"annotations": annotations}, "spec": {"containers": [{"name": "web"}]}}})
    }

    #[test]
    fn answers_in_the_same_api_version_and_echoes_uid() {
        for api in [API_V1, API_V1BETA1] {
            let body = review(
                api,
                pod_request(json!({"consul.hashicorp.com/connect-inject": "true"})),
            );
            let (out, verdict) = respond(&Injector::for_tests(), &body).unwrap();
            assert_eq!(out["apiVersion"], api);
            assert_eq!(out["kind"], "AdmissionReview");
            assert_eq!(out["response"]["uid"], "u-1");
            assert_eq!(out["response"]["allowed"], true);
            assert_eq!(out["response"]["patchType"], "JSONPatch");
            assert_eq!(verdict, Verdict::Injected);
        }
    }

    #[test]
    fn malformed_reviews_are_errors() {
        let inj = Injector::for_tests();
        assert!(matches!(
            respond(&inj, b"{not json"),
            Err(ReviewError::NotJson(_))
        ));
        assert!(matches!(
            respond(
                &inj,
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#
            ),
            Err(ReviewError::MissingRequest)
        ));
        assert!(matches!(
            respond(
                &inj,
                br#"{"apiVersion":"v1","kind":"AdmissionReview","request":{}}"#
            ),
            Err(ReviewError::UnsupportedApiVersion(_))
        ));
        assert!(matches!(
            respond(&inj, &review(API_V1, json!({"kind": {"kind": "Pod"}}))),
            Err(ReviewError::MissingUid)
        ));
        assert!(matches!(
            respond(
                &inj,
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{}}"#
            ),
            Err(ReviewError::WrongKind(_))
        ));
    }

    #[test]
    fn non_pods_and_updates_are_allowed_unchanged() {
        let mut req = pod_request(json!({"consul.hashicorp.com/connect-inject": "true"}));
        req["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let (out, verdict) = respond(&Injector::for_tests(), &review(API_V1, req)).unwrap();
        assert_eq!(out["response"], json!({"uid": "u-1", "allowed": true}));
        assert_eq!(verdict, Verdict::NotAPod);

        let mut req = pod_request(json!({"consul.hashicorp.com/connect-inject": "true"}));
        req["operation"] = json!("UPDATE");
        let (out, _) = respond(&Injector::for_tests(), &review(API_V1, req)).unwrap();
        assert_eq!(out["response"], json!({"uid": "u-1", "allowed": true}));
    }

    #[test]
    fn bad_annotation_is_denied_with_its_name_and_value() {
        let body = review(
            API_V1,
            pod_request(json!({"consul.hashicorp.com/connect-inject": "true",
                               "consul.hashicorp.com/connect-service-upstreams": "db"})),
        );
        let (out, _) = respond(&Injector::for_tests(), &body).unwrap();
        assert_eq!(out["response"]["allowed"], false);
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("consul.hashicorp.com/connect-service-upstreams"),
            "{message}"
        );
        assert!(message.contains("\"db\""), "{message}");
    }

    /// Found by `fuzz/` (injector_review), the crashing input as it was: a pod without `spec`
    /// (`spuc`), injected by default with a native sidecar, was answered with a patch that does
    /// not apply (`add /spec/initContainers` with no `/spec`).
    #[test]
    fn the_patch_for_a_pod_without_spec_applies() {
        let body = r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "uid-pods-consul-names-0",
              "kind": {"group": "", "version": "v1", "kind": "Pod"},
              "resource": {"group": "", "version": "v1", "resource": "pods"},
              "operation": "CREATE", "namespace": "default",
              "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "consul-names", "annotations": {
                  "monsul.hashicorp.com/connect-inject": "true",
                  "consul.hashicorp.com/connect-service": "web.v2",
                  "consrvice-upstreams": "Web_UPPER:1234, a.b:1235:dc2"}},
                "spuc": {"containers": []}}}}"#;
        let injector = Injector::new(
            crate::decision::Policy {
                default_inject: true,
                ..Default::default()
            },
            crate::patch::SidecarOptions {
                proxy_image: "p:1".into(),
                consul_http_addr: Some("http://consul:8500".into()),
                native_sidecar: true,
                tunnel: false,
            },
        );
        let (out, verdict) = respond(&injector, body.as_bytes()).unwrap();
        assert_eq!(verdict, Verdict::Injected);
        let patch = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let review: Value = serde_json::from_str(body).unwrap();
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(
            pod["spec"]["initContainers"][0]["name"],
            crate::patch::SIDECAR_NAME
        );
        assert_eq!(
            pod["spuc"],
            json!({"containers": []}),
            "unknown fields kept"
        );
    }

    #[test]
    fn missing_object_is_denied_not_an_http_error() {
        let mut req = pod_request(json!({}));
        req.as_object_mut().unwrap().remove("object");
        let (out, _) = respond(&Injector::for_tests(), &review(API_V1, req)).unwrap();
        assert_eq!(out["response"]["allowed"], false);
        assert_eq!(out["response"]["uid"], "u-1");
    }
}
