//! The `inject` and `install` commands, run as the real binary.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::{json, Value};
use tandem_injector::decision::Policy;
use tandem_injector::inject;
use tandem_injector::review;

use common::*;

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-injector"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem-injector");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait")
}

/// `tandem-injector inject --proxy-image PROXY_IMAGE -f FILE`.
fn inject_file(file: &Path) -> Output {
    let file = file.to_str().expect("test data paths are UTF-8");
    run(&["inject", "--proxy-image", PROXY_IMAGE, "-f", file], None)
}

fn stdout_docs(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "tandem-injector failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    inject::parse(&String::from_utf8_lossy(&out.stdout))
        .expect("output parses")
        .1
}

fn labelled(docs: &[Value]) -> Vec<(String, Value)> {
    docs.iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("doc").to_lowercase(),
                d.clone(),
            )
        })
        .collect()
}

#[test]
fn inject_puts_the_sidecar_into_the_seed_deployments_pod_template() {
    let file = data("seed/example-deployment.yaml");
    let out = inject_file(&file);
    let docs = stdout_docs(&out);
    assert_eq!(docs.len(), 1);
    let template = &docs[0]["spec"]["template"];
    let containers = template["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "example");
    assert_eq!(containers[1]["name"], "tandem-proxy");
    assert_eq!(containers[1]["args"], json!(["--service", "example"]));
    assert_eq!(
        template["metadata"]["annotations"]["consul.hashicorp.com/connect-inject-status"],
        "injected"
    );
    // The rest of the Deployment is untouched.
    let original = read_doc(&file);
    assert_eq!(docs[0]["spec"]["selector"], original["spec"]["selector"]);
    assert_eq!(docs[0]["spec"]["replicas"], original["spec"]["replicas"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deployment/consul-example-deployment: injected"),
        "{stderr}"
    );
    kubernetes_validate(&labelled(&docs));

    // Same result as the webhook for a pod created from that template.
    let mut pod = original["spec"]["template"].clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["generateName"] = json!("consul-example-deployment-5d8f7c9b6-");
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": "default", "object": pod}});
    let hook = injector(Policy::default(), false, None);
    let (response, _) = review::respond(&hook, &serde_json::to_vec(&body).unwrap()).unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patched = kubectl_patch(&pod, &serde_json::from_slice(&patch).unwrap());
    assert_eq!(patched["spec"], template["spec"]);
    assert_eq!(
        patched["metadata"]["annotations"],
        template["metadata"]["annotations"]
    );
    assert_eq!(
        patched["metadata"]["labels"],
        template["metadata"]["labels"]
    );
}

#[test]
fn inject_reads_many_documents_from_stdin_and_keeps_the_rest() {
    let mut input = String::new();
    for f in [
        "seed/static-server.yaml",
        "seed/static-client.yaml",
        "seed/example-deployment.yaml",
    ] {
        input.push_str("---\n");
        input.push_str(&std::fs::read_to_string(data(f)).unwrap());
    }
    input.push_str("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: static-server\nspec:\n  selector:\n    app: static-server\n  ports:\n  - port: 80\n    targetPort: 8080\n");
    let out = run(
        &["inject", "--native-sidecar", "--proxy-image", PROXY_IMAGE],
        Some(&input),
    );
    let docs = stdout_docs(&out);
    assert_eq!(docs.len(), 4);
    assert_eq!(docs[0]["spec"]["initContainers"][0]["name"], "tandem-proxy");
    assert_eq!(
        docs[0]["spec"]["initContainers"][0]["restartPolicy"],
        "Always"
    );
    let client_env = docs[1]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(
        client_env[0],
        json!({"name": "STATIC_SERVER_CONNECT_SERVICE_HOST", "value": "127.0.0.1"})
    );
    assert_eq!(
        client_env[1],
        json!({"name": "STATIC_SERVER_CONNECT_SERVICE_PORT", "value": "1234"})
    );
    assert_eq!(
        docs[2]["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "tandem-proxy"
    );
    let original_service: Value = inject::parse(&input).unwrap().1[3].clone();
    assert_eq!(
        docs[3], original_service,
        "a Service passes through unchanged"
    );
    kubernetes_validate(&labelled(&docs));
}

#[test]
fn inject_handles_json_lists_and_writes_json() {
    let pod = read_doc(&data("pods/multi-container-env.yaml"));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [pod, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}}]});
    let out = run(&["inject", "-f", "-"], Some(&list.to_string()));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.trim_start().starts_with('{'),
        "JSON in, JSON out: {text}"
    );
    let docs = stdout_docs(&out);
    assert_eq!(
        docs[0]["items"][0]["spec"]["containers"][3]["name"],
        "tandem-proxy"
    );
    assert_eq!(docs[0]["items"][1], list["items"][1]);
}

#[test]
fn inject_is_idempotent() {
    let file = data("seed/static-client.yaml");
    let once = run(&["inject", "-f", file.to_str().unwrap()], None);
    let first = String::from_utf8_lossy(&once.stdout).to_string();
    let twice = run(&["inject"], Some(&first));
    assert_eq!(stdout_docs(&twice), stdout_docs(&once));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("skipped: already injected"));
}

#[test]
fn inject_rejects_bad_annotations_and_prints_nothing() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    consul.hashicorp.com/connect-inject: \"true\"\n    consul.hashicorp.com/connect-service-upstreams: \"db:1234,cache:1234\"\nspec:\n  containers:\n  - name: a\n    image: a\n";
    let out = run(&["inject"], Some(input));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pod/p")
            && stderr.contains("connect-service-upstreams")
            && stderr.contains("db:1234,cache:1234"),
        "{stderr}"
    );
}

#[test]
fn bad_command_lines_exit_64_and_name_the_flag() {
    let out = run(&["serve", "--proxy-image", "p"], None);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert-file"));
    let out = run(&["inject", "--allow-namespaces", ""], None);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-namespaces"));
    let help = run(&["serve", "--help"], None);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--tls-auto-hosts"));
}

#[test]
fn install_output_is_valid_and_complete() {
    let out = run(
        &[
            "install",
            "--namespace",
            "mesh",
            "--proxy-image",
            "reg/tandem-proxy:1",
            "--injector-image",
            "reg/tandem-injector:1",
        ],
        None,
    );
    let docs = stdout_docs(&out);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "Secret",
            "Deployment",
            "Service",
            "MutatingWebhookConfiguration"
        ]
    );
    kubernetes_validate(&labelled(&docs));

    let deployment = &docs[3];
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "reg/tandem-injector:1");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert!(c["livenessProbe"].is_object());

    // The container's command line is one the binary accepts (checked by parsing it).
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(args.contains(&"--proxy-image=reg/tandem-proxy:1".to_string()));
    let mut argv = vec!["tandem-injector".to_string()];
    argv.extend(args);
    <tandem_injector::cli::Cli as clap::Parser>::try_parse_from(argv)
        .expect("install's serve args parse");

    let webhook = &docs[5]["webhooks"][0];
    assert_eq!(webhook["clientConfig"]["service"]["namespace"], "mesh");
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(
        webhook["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "kube-public", "mesh"])
    );

    // The secret's certificate is for the Service's DNS name and chains to the caBundle.
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = b64
        .decode(webhook["clientConfig"]["caBundle"].as_str().unwrap())
        .unwrap();
    let cert = b64
        .decode(docs[2]["data"]["tls.crt"].as_str().unwrap())
        .unwrap();
    let key = b64
        .decode(docs[2]["data"]["tls.key"].as_str().unwrap())
        .unwrap();
    assert_chain(&ca, &cert, &key, "tandem-injector.mesh.svc");

    let ignore = run(
        &[
            "install",
            "--failure-policy",
            "ignore",
            "--native-sidecar",
            "--default-inject",
        ],
        None,
    );
    let docs = stdout_docs(&ignore);
    assert_eq!(docs[5]["webhooks"][0]["failurePolicy"], "Ignore");
    kubernetes_validate(&labelled(&docs));
}

/// Serves `cert`/`key` in memory and connects as the API server would (trusting `ca`, SNI `host`).
fn assert_chain(ca: &[u8], cert: &[u8], key: &[u8], host: &str) {
    use rustls::pki_types::ServerName;
    let server =
        tandem_injector::tls::server_config(cert, key, "install secret").expect("secret loads");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(tandem_injector::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = rustls::ClientConnection::new(
        std::sync::Arc::new(client),
        ServerName::try_from(host.to_string()).unwrap(),
    )
    .unwrap();
    let mut server = rustls::ServerConnection::new(server).unwrap();
    // Pump the handshake through memory.
    for _ in 0..10 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        server.read_tls(&mut &buf[..]).unwrap();
        server.process_new_packets().expect("server accepts");
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        client.read_tls(&mut &buf[..]).unwrap();
        client
            .process_new_packets()
            .expect("client verifies the chain and the name");
        if !client.is_handshaking() && !server.is_handshaking() {
            return;
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn inject_handles_every_workload_kind_and_the_results_validate() {
    let file = data("workloads/all-kinds.yaml");
    for native in [false, true] {
        let mut args = vec!["inject", "-f", file.to_str().unwrap()];
        if native {
            args.push("--native-sidecar");
        }
        let out = run(&args, None);
        let docs = stdout_docs(&out);
        let original = inject::parse(&std::fs::read_to_string(&file).unwrap())
            .unwrap()
            .1;
        assert_eq!(docs.len(), original.len());
        let template_of = |d: &Value| -> Value {
            if d["kind"] == "CronJob" {
                d["spec"]["jobTemplate"]["spec"]["template"].clone()
            } else {
                d["spec"]["template"].clone()
            }
        };
        for (doc, before) in docs.iter().zip(&original) {
            let kind = doc["kind"].as_str().unwrap();
            match kind {
                "ConfigMap" => assert_eq!(doc, before),
                "Deployment" => assert_eq!(doc, before, "not opted in: unchanged"),
                _ => {
                    let t = template_of(doc);
                    let list = if native {
                        "initContainers"
                    } else {
                        "containers"
                    };
                    let sidecars: Vec<&Value> = t["spec"][list]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|c| c["name"] == "tandem-proxy")
                        .collect();
                    assert_eq!(sidecars.len(), 1, "{kind}");
                    if native {
                        assert_eq!(
                            t["spec"]["initContainers"][0]["name"], "tandem-proxy",
                            "{kind}"
                        );
                    }
                    // Everything outside the template is untouched.
                    let (mut a, mut b) = (doc.clone(), before.clone());
                    for v in [&mut a, &mut b] {
                        if kind == "CronJob" {
                            v["spec"]["jobTemplate"]["spec"]["template"] = Value::Null;
                        } else {
                            v["spec"]["template"] = Value::Null;
                        }
                    }
                    assert_eq!(a, b, "{kind}");
                }
            }
        }
        let statefulset = template_of(&docs[0]);
        let sidecar = ["initContainers", "containers"]
            .iter()
            .flat_map(|l| statefulset["spec"][*l].as_array().into_iter().flatten())
            .find(|c| c["name"] == "tandem-proxy")
            .expect("the StatefulSet has the sidecar");
        assert_eq!(
            sidecar["args"],
            json!(["--service", "postgres", "--service-port", "5432"])
        );
        let cron = template_of(&docs[4]);
        let wait = cron["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "wait")
            .unwrap();
        assert_eq!(
            wait["env"][2],
            json!({"name": "API_CONNECT_SERVICE_HOST", "value": "127.0.0.1"})
        );
        kubernetes_validate(&labelled(&docs));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("deployment/not-opted-in: skipped"),
            "{stderr}"
        );
    }
}

#[test]
fn inject_output_of_the_seed_manifests_matches_golden() {
    for name in ["static-server", "static-client", "example-deployment"] {
        let out = inject_file(&data(&format!("seed/{name}.yaml")));
        let docs = stdout_docs(&out);
        golden(&format!("inject/{name}.json"), &Value::Array(docs));
    }
}
