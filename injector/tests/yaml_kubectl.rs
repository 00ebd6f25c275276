//! `inject` reads and writes YAML the way kubectl does: kubectl reads YAML the 1.1 way (`on`,
//! `y`, `1_000`, `0644` are a bool and numbers there), so every string that a 1.1 reader would
//! take for something else must come out quoted, and an unquoted `0644` in the input is 420.
//! The check is kubectl itself, offline: what it reads from `inject`'s YAML output must equal
//! what `inject` writes as JSON for the same objects, as kubectl read them from the input.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use common::*;

const PROXY_IMAGE: &str = "tandem-proxy:test";

/// Strings a YAML 1.1 reader takes for a bool, null, number, float or time, or that need
/// quotes in any YAML.
const CORPUS: &[&str] = &[
    "on",
    "On",
    "OFF",
    "off",
    "yes",
    "Yes",
    "NO",
    "no",
    "y",
    "Y",
    "n",
    "N",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "",
    "1_000",
    "0x1F",
    "0o17",
    "017",
    "0b101",
    "1e3",
    "1.5",
    "-1",
    "+1",
    ".inf",
    "-.Inf",
    ".nan",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "12:30",
    "1:20:30",
    "123",
    "0",
    "- x",
    "key: value",
    "a #b",
    "#x",
    "@x",
    "!x",
    "&a",
    "*a",
    "|",
    ">",
    "%x",
    "[x]",
    "{x}",
    "'q'",
    "\"q\"",
    "=",
    "<<",
    " lead",
    "trail ",
    "two\nlines",
    "tab\there",
    "ends:",
    "?",
    "nel\u{85}x",
    "ls\u{2028}x",
    "ps\u{2029}x",
    "del\u{7f}x",
    "c1\u{9b}x",
];

/// What kubectl reads from `file` (every object, as the API server would get it).
fn kubectl_read(file: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args([
            "patch",
            "--local",
            "--type=merge",
            "-p",
            "{}",
            "-o",
            "json",
            "-f",
        ])
        .arg(file)
        .env("KUBECONFIG", file.with_extension("no-kubeconfig"))
        .output()
        .expect("kubectl runs (scripts/setup checks it is installed)");
    assert!(
        out.status.success(),
        "kubectl cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(|v| v.expect("kubectl prints JSON"))
        .collect()
}

fn inject(input: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem-injector"))
        .args(["inject", "--proxy-image", PROXY_IMAGE, "-f"])
        .arg(input)
        .output()
        .expect("run tandem-injector");
    assert!(
        out.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The corpus in a Deployment (env, a label, an annotation, args), a ConfigMap (data) and a Pod
/// named `off` that is not injected; written as YAML with every string double-quoted.
fn input_yaml() -> String {
    // Double-quoted, with the characters YAML readers fold or refuse escaped.
    let q = |s: &str| {
        serde_json::to_string(s)
            .unwrap()
            .replace('\u{85}', "\\N")
            .replace('\u{2028}', "\\L")
            .replace('\u{2029}', "\\P")
            .replace('\u{7f}', "\\x7F")
            .replace('\u{9b}', "\\x9B")
    };
    let mut env = String::new();
    let mut data = String::new();
    let mut args = String::new();
    for (i, s) in CORPUS.iter().enumerate() {
        env.push_str(&format!(
            "            - name: V{i}\n              value: {}\n",
            q(s)
        ));
        data.push_str(&format!("  K{i}: {}\n", q(s)));
        args.push_str(&format!("            - {}\n", q(s)));
    }
    let deployment = [
        "apiVersion: \"apps/v1\"",
        "kind: \"Deployment\"",
        "metadata:",
        "  name: \"web\"",
        "  labels:",
        "    canary: \"yes\"",
        "spec:",
        "  replicas: 1",
        "  selector:",
        "    matchLabels:",
        "      app: \"web\"",
        "  template:",
        "    metadata:",
        "      labels:",
        "        app: \"web\"",
        "        canary: \"yes\"",
        "      annotations:",
        "        consul.hashicorp.com/connect-inject: \"true\"",
        "        note: \"off\"",
        "    spec:",
        "      enableServiceLinks: no",
        "      volumes:",
        "        - name: cfg",
        "          configMap:",
        "            name: flags",
        "            defaultMode: 0644",
        "      containers:",
        "        - name: \"web\"",
        "          image: \"nginx\"",
        "          ports:",
        "            - containerPort: 8080",
        "          args:",
    ]
    .join("\n");
    let config_map =
        "apiVersion: \"v1\"\nkind: \"ConfigMap\"\nmetadata:\n  name: \"flags\"\ndata:\n";
    let pod = "apiVersion: \"v1\"\nkind: \"Pod\"\nmetadata:\n  name: \"off\"\n  labels:\n    debug: \"no\"\n\
               spec:\n  containers:\n    - name: \"a\"\n      image: \"a\"\n";
    format!("{deployment}\n{args}          env:\n{env}---\n{config_map}{data}---\n{pod}")
}

#[test]
fn kubectl_reads_injected_yaml_as_the_objects_meant() {
    let dir = temp_dir("yaml-kubectl");
    let input = dir.join("in.yaml");
    std::fs::write(&input, input_yaml()).unwrap();
    let read_input = kubectl_read(&input);
    assert_eq!(read_input.len(), 3);
    // The input says what it means (every string quoted): kubectl reads the corpus back.
    for (i, s) in CORPUS.iter().enumerate() {
        assert_eq!(
            read_input[1]["data"][format!("K{i}")],
            json!(s),
            "input {s:?}"
        );
    }

    // The same objects through inject twice: YAML in -> YAML out, and JSON in -> JSON out.
    let yaml_out = dir.join("out.yaml");
    std::fs::write(&yaml_out, inject(&input)).unwrap();
    let json_in = dir.join("in.json");
    let joined: String = read_input.iter().map(|v| v.to_string() + "\n").collect();
    std::fs::write(&json_in, joined).unwrap();
    let json_out = dir.join("out.json");
    std::fs::write(&json_out, inject(&json_in)).unwrap();

    let from_yaml = kubectl_read(&yaml_out);
    let from_json = kubectl_read(&json_out);
    assert_eq!(from_yaml.len(), 3);
    for (a, b) in from_yaml.iter().zip(&from_json) {
        assert_eq!(
            a, b,
            "kubectl reads the YAML output differently from the JSON output"
        );
    }
    // Untouched objects come back equal to the input; the injected one kept every value.
    assert_eq!(from_yaml[1], read_input[1]);
    assert_eq!(from_yaml[2], read_input[2]);
    let env = &from_yaml[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    for (i, s) in CORPUS.iter().enumerate() {
        assert_eq!(env[i]["value"], json!(s), "env V{i}");
    }
    assert_eq!(from_yaml[0]["metadata"]["labels"]["canary"], "yes");
    // Unquoted YAML 1.1 values in the input mean to inject what they mean to kubectl.
    let template = &from_yaml[0]["spec"]["template"]["spec"];
    assert_eq!(template["volumes"][0]["configMap"]["defaultMode"], 420);
    assert_eq!(template["enableServiceLinks"], false);
    assert_eq!(
        from_yaml[0]["spec"]["template"]["metadata"]["annotations"]
            ["consul.hashicorp.com/connect-inject-status"],
        "injected"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
