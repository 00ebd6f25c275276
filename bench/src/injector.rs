//! Scenario 6: AdmissionReviews per second and their latency against `tandem-injector serve`
//! over HTTPS, with a fixed number of concurrent keep-alive clients (closed loop).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::process::{free_port, ChildProcess};
use crate::stats::{nanos, new_histogram, Percentiles};
use crate::tandem::Binaries;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InjectorResult {
    pub concurrency: usize,
    pub reviews: u64,
    pub errors: u64,
    pub reviews_per_sec: f64,
    pub latency: Percentiles,
    pub rss_kb: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

/// Starts the injector with a self-made certificate and drives it for `duration`.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    bins: &Binaries,
    log_dir: &Path,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<InjectorResult> {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let ca_path = log_dir.join("injector-ca.pem");
    // A stale bundle from an earlier run must not be mistaken for this one's.
    let _ = std::fs::remove_file(&ca_path);
    let mut cmd = Command::new(bins.path("tandem-injector")?);
    cmd.arg("serve")
        .args(["--listen", &listen.to_string()])
        .args(["--proxy-image", "tandem-proxy:bench"])
        .args(["--tls-auto-hosts", "127.0.0.1"])
        .arg("--ca-bundle-out")
        .arg(&ca_path)
        .current_dir(log_dir);
    let log = std::fs::File::create(log_dir.join("injector.log"))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut injector = ChildProcess::spawn("tandem-injector", cmd)?;
    let ticks = crate::procstat::clock_ticks_per_sec();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ca_pem = loop {
        injector.check_running()?;
        match std::fs::read(&ca_path) {
            Ok(pem) if !pem.is_empty() => break pem,
            _ if Instant::now() > deadline => anyhow::bail!(
                "tandem-injector wrote no CA bundle to {} within 20 s",
                ca_path.display()
            ),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let ca = reqwest::Certificate::from_pem(&ca_pem)
        .with_context(|| format!("parsing the injector's CA bundle {}", ca_path.display()))?;
    tandem_certs::tls::install_default();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("https://{listen}");
    loop {
        injector.check_running()?;
        let ready = rt.block_on(async { client.get(format!("{base}/health/ready")).send().await });
        if matches!(&ready, Ok(r) if r.status().is_success()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "tandem-injector not ready at {base}/health/ready within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = Arc::new(admission_review().to_string());
    // A first review must be answered and allowed, or the figure means nothing.
    let first: serde_json::Value = rt.block_on(async {
        client
            .post(format!("{base}/mutate"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    })?;
    anyhow::ensure!(
        first["response"]["allowed"] == true,
        "the injector did not allow the bench's pod: {first}"
    );

    let cpu_before = crate::procstat::cpu_time(injector.pid(), ticks).ok();
    let start = Instant::now();
    let stop = start + duration;
    let (hist, errors) = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, body, url) = (client.clone(), body.clone(), format!("{base}/mutate"));
            tasks.push(tokio::spawn(async move {
                let mut h = new_histogram();
                let mut errors = 0u64;
                while Instant::now() < stop {
                    let t0 = Instant::now();
                    let ok = match client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        h.saturating_record(nanos(t0.elapsed()));
                    } else {
                        errors += 1;
                    }
                }
                (h, errors)
            }));
        }
        let mut all = new_histogram();
        let mut errors = 0;
        for t in tasks {
            let (h, e) = t.await.context("injector load task")?;
            all.add(&h).expect("histograms share bounds");
            errors += e;
        }
        anyhow::Ok((all, errors))
    })?;
    let secs = start.elapsed().as_secs_f64();
    let cpu_after = crate::procstat::cpu_time(injector.pid(), ticks).ok();
    Ok(InjectorResult {
        concurrency,
        reviews: hist.len(),
        errors,
        reviews_per_sec: hist.len() as f64 / secs,
        latency: Percentiles::of(&hist),
        rss_kb: crate::procstat::rss_kb(injector.pid()).ok(),
        cpu_seconds: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64()),
    })
}

/// An `admission.k8s.io/v1` review of a small annotated pod with one upstream.
pub fn admission_review() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "static-client-5d8f7c9b4-",
                    "namespace": "default",
                    "labels": {"app": "static-client"},
                    "annotations": {
                        "consul.hashicorp.com/connect-inject": "true",
                        "consul.hashicorp.com/connect-service-upstreams": "static-server:1234"
                    }
                },
                "spec": {
                    "serviceAccountName": "static-client",
                    "containers": [{
                        "name": "static-client",
                        "image": "curlimages/curl:latest",
                        "command": ["/bin/sh", "-c", "--"],
                        "args": ["while true; do sleep 30; done;"]
                    }]
                }
            },
            "dryRun": false
        }
    })
}
