//! Helpers shared by the integration tests: temp dirs, golden files, `kubectl patch --local`
//! and `kubernetes-validate`. The external tools are required: a test fails (never skips)
//! when one is missing, saying how to install it.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use tandem_injector::decision::Policy;
use tandem_injector::patch::SidecarOptions;
use tandem_injector::Injector;

pub(crate) const PROXY_IMAGE: &str = "tandem-proxy:test";

/// The crate's directory (tests never depend on ../shared).
pub(crate) fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn data(path: &str) -> PathBuf {
    crate_dir().join("tests/data").join(path)
}

/// A fresh directory under the system temp dir.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tandem-injector-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub(crate) fn injector(
    policy: Policy,
    native_sidecar: bool,
    consul_http_addr: Option<&str>,
) -> Injector {
    Injector::new(
        policy,
        SidecarOptions {
            proxy_image: PROXY_IMAGE.into(),
            consul_http_addr: consul_http_addr.map(str::to_string),
            native_sidecar,
            tunnel: false,
        },
    )
}

/// Reads a one-document YAML or JSON file.
pub(crate) fn read_doc(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the golden file, or rewrites it when `UPDATE_GOLDEN=1`.
pub(crate) fn golden(rel: &str, actual: &Value) {
    let path = crate_dir().join("tests/golden").join(rel);
    let pretty = serde_json::to_string_pretty(actual).expect("serialize") + "\n";
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("golden path has a parent")).expect("mkdir");
        std::fs::write(&path, pretty).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is missing ({e}); run `UPDATE_GOLDEN=1 cargo test -p tandem-injector` and review the diff",
            path.display()
        )
    });
    let expected: Value = serde_json::from_str(&expected).expect("golden file is JSON");
    if &expected != actual {
        panic!(
            "{} differs from the golden file.\n--- expected\n{}\n--- actual\n{}\n(if the change is intended: UPDATE_GOLDEN=1 cargo test -p tandem-injector)",
            path.display(),
            serde_json::to_string_pretty(&expected).unwrap_or_default(),
            pretty
        );
    }
}

/// Lists the golden files under `dir` (relative to tests/golden), to catch stale ones.
pub(crate) fn golden_files(dir: &str) -> Vec<String> {
    let root = crate_dir().join("tests/golden").join(dir);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn tool_missing(tool: &str, how: &str, err: std::io::Error) -> ! {
    panic!("{tool} is required by this test and could not be run ({err}); install it: {how} (scripts/setup does this)")
}

/// Applies `patch` to `pod` the way the API server does, with `kubectl patch --local --type=json`.
pub(crate) fn kubectl_patch(pod: &Value, patch: &Value) -> Value {
    let dir = temp_dir("kubectl");
    let pod_file = dir.join("pod.json");
    let patch_file = dir.join("patch.json");
    std::fs::write(&pod_file, serde_json::to_vec(pod).expect("json")).expect("write pod");
    std::fs::write(&patch_file, serde_json::to_vec(patch).expect("json")).expect("write patch");
    let out = Command::new("kubectl")
        .args(["patch", "--local", "--type=json", "-o", "json", "-f"])
        .arg(&pod_file)
        .arg("--patch-file")
        .arg(&patch_file)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .output()
        .unwrap_or_else(|e| {
            tool_missing("kubectl", "see https://kubernetes.io/docs/tasks/tools/", e)
        });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "kubectl patch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl printed JSON")
}

/// Validates every object against Kubernetes' schemas (strict: unknown fields are errors).
/// Objects without a name (generateName) get one, as the API server would assign.
/// Returns the tool's output; panics with it when any object fails.
pub(crate) fn kubernetes_validate(objects: &[(String, Value)]) -> String {
    let dir = temp_dir("validate");
    let mut files = Vec::new();
    for (i, (label, obj)) in objects.iter().enumerate() {
        let mut obj = obj.clone();
        if obj.pointer("/metadata/name").is_none() {
            let generated = obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .map(|g| format!("{g}x7k2p"))
                .unwrap_or_else(|| "unnamed".into());
            obj["metadata"]["name"] = Value::String(generated);
        }
        let safe: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let file = dir.join(format!("{i:02}-{safe}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&obj).expect("json")).expect("write");
        files.push(file);
    }
    let out = run_validator(&files);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn run_validator(files: &[PathBuf]) -> String {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            tool_missing("kubernetes-validate", "pip install kubernetes-validate", e)
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate rejected an object:\n{text}"
    );
    let passed = text.matches(" passed ").count();
    assert_eq!(
        passed,
        files.len(),
        "kubernetes-validate did not pass every file:\n{text}"
    );
    text
}

/// Runs the validator expecting a failure (to prove the check can fail).
pub(crate) fn kubernetes_validate_rejects(obj: &Value) -> String {
    let dir = temp_dir("validate-bad");
    let file = dir.join("bad.json");
    std::fs::write(&file, serde_json::to_vec_pretty(obj).expect("json")).expect("write");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            tool_missing("kubernetes-validate", "pip install kubernetes-validate", e)
        });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !out.status.success(),
        "kubernetes-validate accepted a broken object"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
