//! Drives `serve` over real HTTPS on 127.0.0.1:0 with reqwest trusting only the test CA:
//! AdmissionReview v1 and v1beta1, the 400 cases, routes, certificate reload from disk, and the
//! binary's `--tls-auto-hosts` mode with its CA bundle file.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tandem_injector::decision::Policy;
use tandem_injector::tls::{CertFiles, GeneratedCa};
use tandem_injector::webhook::{self, ServeConfig, TlsSource, Webhook};

use common::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

fn write_pair(ca: &GeneratedCa, dir: &Path) -> CertFiles {
    let leaf = ca
        .issue_serving(&hosts(), Duration::from_secs(3600))
        .expect("issue");
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    // Written aside and renamed, as a kubelet-updated secret volume swaps files atomically.
    for (path, text) in [(&files.key, &leaf.key_pem), (&files.cert, &leaf.cert_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
    files
}

fn client(ca_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::CryptoProvider::install_default(
        (*tandem_injector::tls::provider()).clone(),
    );
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"))
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        // A new connection (and handshake) per request, so the certificate served now is seen.
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

async fn start(files: CertFiles) -> Webhook {
    webhook::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsSource::Files {
            files,
            reload_interval: Duration::from_millis(100),
        },
        injector: injector(Policy::default(), false, None),
    })
    .await
    .expect("webhook starts")
}

fn review(api: &str, uid: &str) -> Value {
    let pod = read_doc(&data("seed/static-server.yaml"));
    json!({
        "apiVersion": api, "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": "default", "object": pod}
    })
}

#[tokio::test]
async fn admission_reviews_over_https() {
    let dir = temp_dir("serve");
    let ca = GeneratedCa::generate("test CA", Duration::from_secs(3600)).unwrap();
    let hook = start(write_pair(&ca, &dir)).await;
    let base = format!("https://127.0.0.1:{}", hook.local_addr().port());
    let http = client(&ca.cert_pem());

    for api in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let resp = http
            .post(format!("{base}/mutate"))
            .json(&review(api, "4b0c-uid"))
            .send()
            .await
            .expect("POST /mutate");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("JSON answer");
        assert_eq!(body["apiVersion"], api);
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], "4b0c-uid");
        assert_eq!(body["response"]["allowed"], true);
        let patch = base64::engine::general_purpose::STANDARD
            .decode(body["response"]["patch"].as_str().expect("a patch"))
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON patch");
        let mut pod = read_doc(&data("seed/static-server.yaml"));
        json_patch::patch(&mut pod, &patch).expect("the patch applies");
        assert_eq!(pod["spec"]["containers"][1]["name"], "tandem-proxy");
        assert_eq!(
            pod["spec"]["containers"][1]["args"],
            json!(["--service", "static-server", "--service-port", "8080"])
        );
    }

    // A bad annotation is an answer, not an HTTP error.
    let mut bad = review("admission.k8s.io/v1", "bad-1");
    bad["request"]["object"]["metadata"]["annotations"]
        ["consul.hashicorp.com/connect-service-upstreams"] = json!("static-server");
    let resp = http
        .post(format!("{base}/mutate"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["uid"], "bad-1");

    // Malformed reviews: 400 with a message.
    for (body, want) in [
        ("this is not json".to_string(), "not JSON"),
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            "no request",
        ),
        (String::new(), "not JSON"),
        (
            json!({"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": {}})
                .to_string(),
            "apiVersion",
        ),
    ] {
        let resp = http
            .post(format!("{base}/mutate"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body:?}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(want), "{body:?}: {text}");
    }

    // Oversized bodies are refused before they are parsed.
    let huge = vec![b' '; tandem_injector::webhook::MAX_BODY_BYTES + 1];
    let resp = http
        .post(format!("{base}/mutate"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // Routes.
    for (path, status) in [("/health/ready", 200), ("/mutate", 405), ("/other", 404)] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), status, "GET {path}");
    }

    hook.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn renewed_certificate_on_disk_is_served_without_restart() {
    let dir = temp_dir("reload");
    let old_ca = GeneratedCa::generate("old CA", Duration::from_secs(3600)).unwrap();
    let new_ca = GeneratedCa::generate("new CA", Duration::from_secs(3600)).unwrap();
    let hook = start(write_pair(&old_ca, &dir)).await;
    let url = format!(
        "https://127.0.0.1:{}/health/ready",
        hook.local_addr().port()
    );
    let old_client = client(&old_ca.cert_pem());
    let new_client = client(&new_ca.cert_pem());

    assert_eq!(
        old_client
            .get(&url)
            .send()
            .await
            .expect("old cert served")
            .status(),
        200
    );
    assert!(
        new_client.get(&url).send().await.is_err(),
        "new CA must not verify the old cert yet"
    );

    write_pair(&new_ca, &dir);
    let start = Instant::now();
    loop {
        if let Ok(resp) = new_client.get(&url).send().await {
            assert_eq!(resp.status(), 200);
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        old_client.get(&url).send().await.is_err(),
        "old certificate still served"
    );

    hook.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the child on drop so a failing assertion does not leak the process.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_with_auto_tls_writes_its_ca_bundle() {
    let dir = temp_dir("auto");
    let bundle = dir.join("out/ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-injector"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--proxy-image",
            "p:1",
            "--tls-auto-hosts",
            "localhost,127.0.0.1",
            "--ca-bundle-out",
        ])
        .arg(&bundle)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tandem-injector serve");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let guard = ChildGuard(child);

    // The bound address is logged once serving; read lines until it appears.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !line.contains("serving POST /mutate") {
                continue;
            }
            if let Some(rest) = line.split(" addr=").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(DEADLINE)
        .expect("serve logged its address")
        .parse()
        .expect("a socket address");
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert_eq!(
        first.trim(),
        format!("CA bundle written to {}", bundle.display())
    );

    let ca_pem = std::fs::read_to_string(&bundle).expect("CA bundle written");
    let resp = client(&ca_pem)
        .get(format!("https://127.0.0.1:{}/health/ready", addr.port()))
        .send()
        .await
        .expect("the generated certificate verifies against the written bundle");
    assert_eq!(resp.status(), 200);
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
