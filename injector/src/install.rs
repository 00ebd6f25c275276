//! `tandem-injector install`: the manifests that run the webhook in a cluster.
//!
//! A fresh CA and serving certificate are made on every run; the certificate goes into a TLS
//! Secret mounted by the Deployment (which reloads it when it changes), the CA into the
//! `MutatingWebhookConfiguration`'s `caBundle`. Re-running `install | kubectl apply -f -`
//! rotates both together.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::cli::FailurePolicy;
use crate::tls::{GeneratedCa, TlsError};

/// Name of every object `install` creates (namespace aside).
pub(crate) const NAME: &str = "tandem-injector";
/// Port the injector listens on inside its pod.
pub(crate) const CONTAINER_PORT: u16 = 8443;
const CERT_DIR: &str = "/etc/tandem-injector/tls";
const INJECTOR_UID: i64 = 65532;

/// What `install` needs to render.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Namespace of every object (created first; never injected).
    pub namespace: String,
    /// Image of the sidecar the webhook injects (its `--proxy-image`).
    pub proxy_image: String,
    /// Image the webhook's Deployment runs.
    pub injector_image: String,
    /// Replicas of that Deployment.
    pub replicas: u32,
    /// The webhook configuration's `failurePolicy`.
    pub failure_policy: FailurePolicy,
    /// The webhook configuration's `timeoutSeconds` (1-30).
    pub timeout_seconds: u32,
    /// Lifetime of the generated CA and serving certificate (made at render time).
    pub cert_validity: Duration,
    /// Extra `serve` flags (default-inject, namespaces, Consul address, native sidecar).
    pub serve_args: Vec<String>,
}

/// The objects, in apply order.
pub fn manifests(options: &InstallOptions) -> Result<Vec<Value>, TlsError> {
    let ns = options.namespace.as_str();
    let hosts = vec![
        NAME.to_string(),
        format!("{NAME}.{ns}"),
        format!("{NAME}.{ns}.svc"),
        format!("{NAME}.{ns}.svc.cluster.local"),
    ];
    let ca = GeneratedCa::generate("tandem-injector CA", options.cert_validity)?;
    let leaf = ca.issue_serving(&hosts, options.cert_validity)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let labels = json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "webhook"});

    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"app.kubernetes.io/name": NAME}},
    });
    let service_account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels},
        // The injector never talks to the API server.
        "automountServiceAccountToken": false,
    });
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": format!("{NAME}-tls"), "namespace": ns, "labels": labels},
        "data": {
            "tls.crt": b64(&leaf.cert_pem),
            "tls.key": b64(&leaf.key_pem),
            "ca.crt": b64(&ca.cert_pem()),
        },
    });

    let mut args = vec![
        "serve".to_string(),
        format!("--listen=0.0.0.0:{CONTAINER_PORT}"),
        format!("--proxy-image={}", options.proxy_image),
        format!("--tls-cert-file={CERT_DIR}/tls.crt"),
        format!("--tls-key-file={CERT_DIR}/tls.key"),
    ];
    args.extend(options.serve_args.iter().cloned());
    let probe = |period: u32, failures: u32| {
        json!({
            "httpGet": {"path": "/health/ready", "port": "https", "scheme": "HTTPS"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 2,
        })
    };
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"consul.hashicorp.com/connect-inject": "false"},
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": INJECTOR_UID,
                        "runAsGroup": INJECTOR_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": NAME,
                        "image": options.injector_image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": args,
                        "env": [{"name": "RUST_LOG", "value": "info"}],
                        "ports": [{"name": "https", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                        "readinessProbe": probe(2, 2),
                        "livenessProbe": probe(10, 3),
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "32Mi"},
                            "limits": {"memory": "128Mi"},
                        },
                        "securityContext": {
                            "runAsNonRoot": true,
                            "readOnlyRootFilesystem": true,
                            "allowPrivilegeEscalation": false,
                            "privileged": false,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "tls", "mountPath": CERT_DIR, "readOnly": true}],
                    }],
                    "volumes": [{"name": "tls", "secret": {"secretName": format!("{NAME}-tls")}}],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}],
        },
    });
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": labels},
        "webhooks": [{
            "name": "tandem-injector.tandem.dev",
            "clientConfig": {
                "service": {"name": NAME, "namespace": ns, "path": "/mutate", "port": 443},
                "caBundle": b64(&ca.cert_pem()),
            },
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-public", ns],
            }]},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "timeoutSeconds": options.timeout_seconds,
            "failurePolicy": options.failure_policy.as_str(),
            "matchPolicy": "Equivalent",
            "reinvocationPolicy": "Never",
        }],
    });
    Ok(vec![
        namespace,
        service_account,
        secret,
        deployment,
        service,
        webhook,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InstallOptions {
        InstallOptions {
            namespace: "mesh".into(),
            proxy_image: "p:1".into(),
            injector_image: "i:1".into(),
            replicas: 2,
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 10,
            cert_validity: Duration::from_secs(86400),
            serve_args: vec!["--native-sidecar".into()],
        }
    }

    #[test]
    fn webhook_configuration_has_the_safety_settings() {
        let docs = manifests(&options()).unwrap();
        let mwc = docs
            .iter()
            .find(|d| d["kind"] == "MutatingWebhookConfiguration")
            .unwrap();
        let w = &mwc["webhooks"][0];
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["admissionReviewVersions"], json!(["v1", "v1beta1"]));
        assert_eq!(
            w["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system", "kube-public", "mesh"])
        );
        let bundle = base64::engine::general_purpose::STANDARD
            .decode(w["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap();
        assert!(String::from_utf8(bundle)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn serving_certificate_matches_the_ca_bundle() {
        let docs = manifests(&options()).unwrap();
        let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
        let mwc = docs
            .iter()
            .find(|d| d["kind"] == "MutatingWebhookConfiguration")
            .unwrap();
        assert_eq!(
            secret["data"]["ca.crt"],
            mwc["webhooks"][0]["clientConfig"]["caBundle"]
        );
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(args
            .as_array()
            .unwrap()
            .contains(&json!("--native-sidecar")));
        assert!(args
            .as_array()
            .unwrap()
            .contains(&json!("--proxy-image=p:1")));
    }
}
