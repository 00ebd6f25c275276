//! Writes the seed corpora (`fuzz/corpus/<target>/`) and the peer-check roots
//! (`fuzz/fixtures/peer_check/`) from the repository's test inputs: the injector's golden
//! cases and test pods, the recorded Consul answers (`agent/tests/data/consul-recorded/`, the
//! same files as `/work/shared/consul-recorded/`), Consul's API samples, the SPIFFE unit tests'
//! IDs, and leaves issued by a `tandem-certs` test PKI.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! Every run replaces the corpora. The test PKI's leaves and root are kept as they are, unless
//! `-- --new-pki` is given (a new PKI changes the certificate seeds and their root together).
//! Identical inputs are written once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tandem_certs::rustls::pki_types::pem::PemObject;
use tandem_certs::rustls::pki_types::CertificateDer;
use tandem_certs::testing::{TestIdentity, TestPki};
use tandem_certs::ServiceId;

/// Recorded Consul sessions: (file, short name).
const RECORDED: [(&str, &str); 3] = [
    ("consul-1.10.4-dev.json", "1.10.4"),
    ("consul-1.8.17-dev.json", "1.8.17"),
    ("consul-1.10.4-prepared-queries.json", "1.10.4-pq"),
];

/// Annotation values of the injector's unit tests (`injector/src/annotations.rs`), beyond
/// those already in the golden pods.
const ANNOTATION_VALUES: [&str; 14] = [
    " db : 1234 : dc2 ",
    "db:",
    "db:abc",
    "db:65536",
    "db:-1",
    ":1234",
    "db:1:dc:x",
    "db:1:",
    "d b:1",
    " db:1234 ,\n auth:6789:dc2, ",
    "db:1234,db:1235:dc2,db:1236,a-b:1237,a.b:1238,db:1239:dc2,prepared_query:geo-db:1240",
    "db:1,db:2:dc2,db_dc2:3,db:4,db_4:5",
    "9lives:1",
    " a, b ,",
];

/// Durations of the agent's unit tests (`agent/src/godur.rs`).
const DURATIONS: [&str; 14] = [
    "10s",
    "300000ms",
    "1m30s",
    "1.5h",
    "0",
    "10",
    "-1s",
    "5x",
    "1.5s",
    "250ms",
    "72h0m0s",
    "1m0s",
    "2562047h47m16.854775807s",
    "94522879700260684295381835.9h",
];

/// Inputs that crashed a target once (each has a regression test next to the code it broke).
const REGRESSIONS: [(&str, &str, &str); 3] = [
    (
        "injector_review",
        "regression-pod-without-spec.json",
        r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
  "request": {"uid": "uid-pods-consul-names-0", "kind": {"group": "", "version": "v1", "kind": "Pod"},
    "operation": "CREATE", "namespace": "default",
    "object": {"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "consul-names", "annotations": {
        "monsul.hashicorp.com/connect-inject": "true",
        "consul.hashicorp.com/connect-service": "web.v2",
        "consrvice-upstreams": "Web_UPPER:1234, a.b:1235:dc2"}},
      "spuc": {"containers": []}}}}
"#,
    ),
    (
        "certs_spiffe_id",
        "regression-percent-sign",
        "spiffe://23333-4444-555555555555.consul/ns/de20xfault/dc/dc1/svc/we%+2Fbe%2Fb%20x",
    ),
    (
        "injector_annotations",
        "regression-prepared-query-space",
        "prepared_query :5:dc",
    ),
];

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz.parent().expect("fuzz/ is inside the repository");
    let mut seeds = Seeds::default();

    injector(repo, &mut seeds);
    let recorded: Vec<(String, Vec<Value>)> = RECORDED
        .iter()
        .map(|(file, short)| {
            let path = repo.join("agent/tests/data/consul-recorded").join(file);
            let Value::Array(exchanges) = read_json(&path) else {
                panic!("{}: not a list", path.display());
            };
            (short.to_string(), exchanges)
        })
        .collect();
    agent(repo, &recorded, &mut seeds);
    spiffe_ids(repo, &recorded, &mut seeds);
    let new_pki = std::env::args().any(|a| a == "--new-pki");
    certificates(fuzz, repo, &recorded, new_pki, &mut seeds);
    consul_answers(repo, &recorded, &mut seeds);
    tls_states(fuzz, repo, &recorded, new_pki, &mut seeds);
    for (target, name, input) in REGRESSIONS {
        seeds.add(target, name, input);
    }

    for (target, files) in &seeds.0 {
        let dir = fuzz.join("corpus").join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut seen = BTreeSet::new();
        for (name, bytes) in files {
            if seen.insert(bytes.clone()) {
                write(&dir.join(name), bytes);
            }
        }
        println!("{target}: {} seeds", seen.len());
    }
}

/// Target -> (file name, contents), in the order added.
#[derive(Default)]
struct Seeds(BTreeMap<&'static str, Vec<(String, Vec<u8>)>>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: &str, bytes: impl Into<Vec<u8>>) {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.0.entry(target).or_default().push((name, bytes.into()));
    }
}

/// Reviews of every golden case and test pod; their annotation values.
fn injector(repo: &Path, seeds: &mut Seeds) {
    let mut pods: Vec<(String, String, Value)> = Vec::new();
    for case in sorted_entries(&repo.join("injector/tests/golden")) {
        // `golden/inject/` holds the offline `inject` command's cases, not reviews.
        if !case.join("input.json").exists() {
            continue;
        }
        let input = read_json(&case.join("input.json"));
        let name = file_name(&case);
        let namespace = input["namespace"].as_str().unwrap_or("default").to_string();
        pods.push((format!("golden-{name}"), namespace, input["pod"].clone()));
    }
    for dir in ["pods", "seed", "workloads"] {
        for file in sorted_entries(&repo.join("injector/tests/data").join(dir)) {
            let text = read_text(&file);
            let (_, docs) = tandem_injector::inject::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (i, doc) in docs.into_iter().enumerate() {
                let name = format!("{dir}-{}-{i}", file_name(&file));
                let pod = match doc["kind"].as_str() {
                    Some("Pod") => doc,
                    Some(_) if doc.pointer("/spec/template").is_some() => {
                        doc["spec"]["template"].clone()
                    }
                    _ => continue,
                };
                pods.push((name, "default".to_string(), pod));
            }
        }
    }
    for (i, (name, namespace, pod)) in pods.iter().enumerate() {
        // Mostly v1, as the API server sends today; every fourth one v1beta1.
        let api = if i % 4 == 3 {
            tandem_injector::review::API_V1BETA1
        } else {
            tandem_injector::review::API_V1
        };
        let review = json!({
            "apiVersion": api,
            "kind": "AdmissionReview",
            "request": {
                "uid": format!("uid-{name}"),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": namespace,
                "object": pod,
            },
        });
        seeds.add("injector_review", &format!("{name}.json"), pretty(&review));
        if let Some(annotations) = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            for (key, value) in annotations {
                if let Some(value) = value.as_str() {
                    let key = key.rsplit('/').next().unwrap_or(key);
                    seeds.add("injector_annotations", &format!("{name}-{key}"), value);
                }
            }
        }
    }
    for (i, value) in ANNOTATION_VALUES.iter().enumerate() {
        seeds.add("injector_annotations", &format!("unit-{i:02}"), *value);
    }
}

/// Registration and intention bodies, query strings and durations.
fn agent(repo: &Path, recorded: &[(String, Vec<Value>)], seeds: &mut Seeds) {
    let mut durations: Vec<(String, String)> = DURATIONS
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("unit-{i:02}"), d.to_string()))
        .collect();
    for (short, exchanges) in recorded {
        for exchange in exchanges {
            let name = format!("{short}-{}", exchange["name"].as_str().unwrap_or("call"));
            let request = &exchange["request"];
            let method = request["method"].as_str().unwrap_or_default();
            let full_path = request["path"].as_str().unwrap_or_default();
            let (path, query) = full_path.split_once('?').unwrap_or((full_path, ""));
            let body = match &request["body"] {
                Value::Null => None,
                Value::String(raw) => Some(raw.as_bytes().to_vec()),
                other => Some(pretty(other)),
            };
            if !query.is_empty() {
                seeds.add("agent_query", &name, query);
                for pair in query.split('&') {
                    if let Some(wait) = pair.strip_prefix("wait=") {
                        durations.push((name.clone(), wait.to_string()));
                    }
                }
            }
            let target = match (method, path) {
                ("PUT", "/v1/agent/service/register") => "agent_registration",
                ("PUT", "/v1/connect/intentions/exact") | ("POST", "/v1/connect/intentions") => {
                    "agent_intention"
                }
                _ => continue,
            };
            if let Some(body) = body {
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    collect_durations(&name, &value, &mut durations);
                }
                seeds.add(target, &format!("recorded-{name}"), body);
            }
        }
    }
    let samples = repo.join("agent/tests/data/consul-api-samples");
    for (file, target) in [
        ("agent-service-register.json", "agent_registration"),
        ("agent-service-register-sidecar.json", "agent_registration"),
        (
            "sidecar-service-definition.config.json",
            "agent_registration",
        ),
        ("connect-intentions-create-request.json", "agent_intention"),
        (
            "connect-intentions-update-by-id-request.json",
            "agent_intention",
        ),
        (
            "connect-intentions-upsert-exact-request.json",
            "agent_intention",
        ),
    ] {
        let text = read_text(&samples.join(file));
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            collect_durations(&format!("sample-{file}"), &value, &mut durations);
            // A config-file definition wraps the registration body in "service".
            if let Some(inner) = value.get("service") {
                seeds.add(target, &format!("sample-{file}-service"), pretty(inner));
            }
        }
        seeds.add(target, &format!("sample-{file}"), text);
    }
    for (name, duration) in durations {
        seeds.add("agent_godur", &name, duration);
    }
}

/// Every string under a duration-like key.
fn collect_durations(name: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let lower = key.to_ascii_lowercase();
                let is_duration = ["ttl", "interval", "timeout", "deregistercritical"]
                    .iter()
                    .any(|k| lower.contains(k));
                match v {
                    Value::String(s) if is_duration && !s.is_empty() => {
                        out.push((format!("{name}-{key}"), s.clone()));
                    }
                    other => collect_durations(name, other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_durations(name, v, out)),
        _ => {}
    }
}

/// The SPIFFE IDs of the unit tests and of the recorded answers.
fn spiffe_ids(repo: &Path, recorded: &[(String, Vec<Value>)], seeds: &mut Seeds) {
    let tests = read_text(&repo.join("certs/src/spiffe/tests.rs"));
    let td = "11111111-2222-3333-4444-555555555555.consul";
    for literal in string_literals(&tests) {
        let id = if literal.contains("spiffe://") {
            literal.replace("{TD}", td)
        } else if literal.starts_with('/') {
            format!("spiffe://{td}{literal}")
        } else {
            continue;
        };
        if !id.contains('{') {
            // Named by what they are, so that a new test does not rename the others.
            let what = id.replace(td, "TD").replace("spiffe://", "");
            let what: String = what.chars().take(60).collect();
            seeds.add("certs_spiffe_id", &format!("unit-{what}"), id);
        }
    }
    // The unit tests' badly encoded services (written there as `.../svc/{svc}`).
    for (i, svc) in ["we%zzb", "web%2", "%ff%fe"].iter().enumerate() {
        let id = format!("spiffe://{td}/ns/default/dc/dc1/svc/{svc}");
        seeds.add("certs_spiffe_id", &format!("unit-svc-{i}"), id);
    }
    for (short, exchanges) in recorded {
        for exchange in exchanges {
            let name = format!("{short}-{}", exchange["name"].as_str().unwrap_or("call"));
            let mut found = Vec::new();
            collect_spiffe(&exchange["request"]["body"], &mut found);
            if let Some(text) = exchange["response"]["body"].as_str() {
                if let Ok(value) = serde_json::from_str::<Value>(text) {
                    collect_spiffe(&value, &mut found);
                }
            }
            for (i, id) in found.into_iter().enumerate() {
                seeds.add("certs_spiffe_id", &format!("{name}-{i}"), id);
            }
        }
    }
}

fn collect_spiffe(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with("spiffe://") => out.push(s.clone()),
        Value::Object(map) => map.values().for_each(|v| collect_spiffe(v, out)),
        Value::Array(items) => items.iter().for_each(|v| collect_spiffe(v, out)),
        _ => {}
    }
}

/// The string literals of a Rust source file (plain `"..."` ones, no escapes handled but `\"`).
fn string_literals(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut literal = String::new();
        let mut escaped = false;
        for c in chars.by_ref() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => break,
                c => {
                    escaped = false;
                    literal.push(c);
                }
            }
        }
        out.push(literal);
    }
    out
}

/// Leaves (DER) of the test PKI and of the recorded agents; the roots they chain to.
fn certificates(
    fuzz: &Path,
    repo: &Path,
    recorded: &[(String, Vec<Value>)],
    new_pki: bool,
    seeds: &mut Seeds,
) {
    let fixtures = fuzz.join("fixtures/peer_check");
    fs::create_dir_all(&fixtures).unwrap_or_else(|e| panic!("{}: {e}", fixtures.display()));
    let root = fixtures.join("testpki-root.pem");
    if new_pki || !root.exists() {
        test_pki(&root, seeds);
    } else {
        // The leaves already in the corpus, which chain to the root already in the fixtures.
        for file in sorted_entries(&fuzz.join("corpus/certs_peer_check")) {
            let name = file_name(&file);
            if name.starts_with("testpki-") {
                let bytes = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                seeds.add("certs_peer_check", &format!("{name}.der"), bytes);
            }
        }
    }

    for (short, exchanges) in recorded {
        let mut roots: Vec<String> = Vec::new();
        for exchange in exchanges {
            let name = format!("{short}-{}", exchange["name"].as_str().unwrap_or("call"));
            let Some(text) = exchange["response"]["body"].as_str() else {
                continue;
            };
            let Ok(body) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if let Some(cert) = body["CertPEM"].as_str() {
                seeds.add("certs_peer_check", &format!("{name}.der"), der(cert));
            }
            for root in body["Roots"].as_array().into_iter().flatten() {
                if let Some(pem) = root["RootCert"].as_str() {
                    if !roots.iter().any(|r| r.trim() == pem.trim()) {
                        roots.push(pem.trim().to_string());
                    }
                }
            }
        }
        if roots.is_empty() {
            continue;
        }
        for (i, pem) in roots.iter().enumerate() {
            let name = format!("{short}-root-{i}.der");
            seeds.add("certs_peer_check", &name, der(pem));
        }
        write(
            &fixtures.join(format!("consul-{short}-roots.pem")),
            (roots.join("\n") + "\n").as_bytes(),
        );
    }
    let samples = repo.join("agent/tests/data/consul-api-samples");
    let leaf = read_json(&samples.join("agent-connect-ca-leaf.json"));
    if let Some(cert) = leaf["CertPEM"].as_str() {
        let name = "sample-agent-connect-ca-leaf.der";
        seeds.add("certs_peer_check", name, der(cert));
    }
}

/// A new test PKI: its root written to `root`, a leaf of every kind (and two more service
/// forms) and the root itself as seeds.
fn test_pki(root: &Path, seeds: &mut Seeds) {
    let pki = TestPki::new();
    write(root, pki.root_pem().as_bytes());
    for kind in TestIdentity::ALL {
        let (cert, _key) = pki.identity(kind, "web");
        let name = format!("testpki-{kind:?}.der");
        seeds.add("certs_peer_check", &name, der(&cert));
    }
    let td = pki.trust_domain().clone();
    let mut partitioned = ServiceId::new(td.clone(), "dc2", "db");
    partitioned.partition = Some("team-a".into());
    partitioned.namespace = "billing".into();
    let escaped = ServiceId::new(td, "dc1", "we/b x");
    for (name, id) in [("partition", partitioned), ("escaped", escaped)] {
        let leaf = pki
            .ca()
            .issue_leaf(&id, Duration::from_secs(3600))
            .expect("issuing a test leaf");
        let name = format!("testpki-{name}.der");
        seeds.add("certs_peer_check", &name, der(&leaf.cert_pem));
    }
    seeds.add("certs_peer_check", "testpki-root.der", der(pki.root_pem()));
}

/// Every recorded answer (its headers, an empty line, its body) and the proxy's test answers.
fn consul_answers(repo: &Path, recorded: &[(String, Vec<Value>)], seeds: &mut Seeds) {
    for (short, exchanges) in recorded {
        for exchange in exchanges {
            let name = format!("{short}-{}", exchange["name"].as_str().unwrap_or("call"));
            let response = &exchange["response"];
            let mut input = String::new();
            for (key, value) in response["headers"].as_object().into_iter().flatten() {
                input.push_str(&format!("{key}: {}\n", value.as_str().unwrap_or_default()));
            }
            input.push('\n');
            input.push_str(response["body"].as_str().unwrap_or_default());
            seeds.add("proxy_consul_answer", &format!("recorded-{name}"), input);
        }
    }
    for file in sorted_entries(&repo.join("proxy/tests/data")) {
        if file.extension().is_some_and(|e| e == "json") {
            let mut input = b"\n".to_vec();
            input.extend(fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
            seeds.add(
                "proxy_consul_answer",
                &format!("test-{}", file_name(&file)),
                input,
            );
        }
    }
}

/// The service every `proxy_tls_state` seed is for (the recorded agents' leaves name it).
const TLS_SERVICE: &str = "static-server";

/// `proxy_tls_state` inputs (the framing is in its target's doc): leaves and keys of a test
/// PKI issued for ten years (kept between runs, like the peer-check PKI), for the service,
/// another service and from another CA; the recorded agents' leaves with every roots answer of
/// the same agent; each for the right service and another one.
fn tls_states(
    fuzz: &Path,
    repo: &Path,
    recorded: &[(String, Vec<Value>)],
    new_pki: bool,
    seeds: &mut Seeds,
) {
    const TARGET: &str = "proxy_tls_state";
    let kept: Vec<PathBuf> = sorted_entries(&fuzz.join("corpus"))
        .into_iter()
        .filter(|dir| file_name(dir) == TARGET)
        .flat_map(|dir| sorted_entries(&dir))
        .filter(|file| file_name(file).starts_with("testpki-"))
        .collect();
    if new_pki || kept.is_empty() {
        tls_test_pki(seeds);
    } else {
        for file in kept {
            let bytes = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            seeds.add(TARGET, &file_name(&file), bytes);
        }
    }

    for (short, exchanges) in recorded {
        let mut leaves: Vec<(String, Value)> = Vec::new();
        let mut roots: Vec<(String, Value)> = Vec::new();
        for exchange in exchanges {
            let name = exchange["name"].as_str().unwrap_or("call").to_string();
            let Some(Ok(body)) = exchange["response"]["body"]
                .as_str()
                .map(serde_json::from_str::<Value>)
            else {
                continue;
            };
            if body["CertPEM"].is_string() && !leaves.iter().any(|(_, l)| l == &body) {
                leaves.push((name, body));
            } else if body["Roots"].is_array() && !roots.iter().any(|(_, r)| r == &body) {
                roots.push((name, body));
            }
        }
        for (leaf_name, leaf) in &leaves {
            for (roots_name, answer) in &roots {
                let td = answer["TrustDomain"].as_str().unwrap_or_default();
                let pems: Vec<&str> = answer["Roots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["RootCert"].as_str())
                    .collect();
                let name = format!("{short}-{leaf_name}-{roots_name}");
                let input = tls_input(TLS_SERVICE, td, leaf, &pems);
                seeds.add(TARGET, &format!("recorded-{name}"), input);
                let input = tls_input("web", td, leaf, &pems);
                seeds.add(TARGET, &format!("recorded-{name}-web"), input);
                if pems.len() > 1 {
                    let swapped: Vec<&str> = pems.iter().rev().copied().collect();
                    let input = tls_input(TLS_SERVICE, td, leaf, &swapped);
                    seeds.add(TARGET, &format!("recorded-{name}-swapped"), input);
                }
            }
        }
        // One as PEM text, through the raw-text chunks.
        if let (Some((_, leaf)), Some((_, answer))) = (leaves.first(), roots.first()) {
            let mut input = tls_head(
                TLS_SERVICE,
                answer["TrustDomain"].as_str().unwrap_or_default(),
            );
            chunk(
                &mut input,
                b'c',
                leaf["CertPEM"].as_str().unwrap_or_default(),
            );
            chunk(
                &mut input,
                b'k',
                leaf["PrivateKeyPEM"].as_str().unwrap_or_default(),
            );
            for root in answer["Roots"].as_array().into_iter().flatten() {
                chunk(
                    &mut input,
                    b'r',
                    root["RootCert"].as_str().unwrap_or_default(),
                );
            }
            seeds.add(TARGET, &format!("recorded-{short}-text"), input);
        }
    }

    let data = repo.join("proxy/tests/data");
    let leaf = read_json(&data.join("agent-connect-ca-leaf.json"));
    for file in ["agent-connect-ca-roots.json", "connect-ca-roots.json"] {
        let answer = read_json(&data.join(file));
        let td = answer["TrustDomain"].as_str().unwrap_or_default();
        let pems: Vec<&str> = answer["Roots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["RootCert"].as_str())
            .collect();
        for service in ["web", TLS_SERVICE] {
            let input = tls_input(service, td, &leaf, &pems);
            seeds.add(
                TARGET,
                &format!("test-{}-{service}", file_name(&data.join(file))),
                input,
            );
        }
    }
}

/// The test-PKI seeds of `proxy_tls_state`: a new PKI, another CA of the same trust domain and
/// a rotated root.
fn tls_test_pki(seeds: &mut Seeds) {
    const TARGET: &str = "proxy_tls_state";
    let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
    let pki = TestPki::new();
    let td = pki.trust_domain().clone();
    let other = tandem_certs::CertificateAuthority::generate(&td, "fuzz-other-ca")
        .expect("generating a test CA");
    let rotated = pki.ca().rotate().expect("rotating the test CA");
    let root = pki.root_pem();
    let other_root = other.root().root_cert_pem.as_str();
    let rotated_root = rotated.root().root_cert_pem.as_str();
    let issue = |ca: &tandem_certs::CertificateAuthority, service: &str| {
        let leaf = ca
            .issue_leaf(&pki.service_id(service), ten_years)
            .expect("issuing a test leaf");
        json!({"CertPEM": leaf.cert_pem, "PrivateKeyPEM": leaf.private_key_pem})
    };
    let valid = issue(pki.ca(), TLS_SERVICE);
    let from_other = issue(&other, TLS_SERVICE);
    let from_rotated = issue(&rotated, TLS_SERVICE);
    let not_service = issue(pki.ca(), &format!("not-{TLS_SERVICE}"));
    let td = td.to_string();
    let upper = TLS_SERVICE.to_ascii_uppercase();
    let cases: [(&str, &str, &str, &Value, Vec<&str>); 12] = [
        ("valid", TLS_SERVICE, &td, &valid, vec![root]),
        ("valid-upper-service", &upper, &td, &valid, vec![root]),
        (
            "valid-upper-trust-domain",
            TLS_SERVICE,
            &td.to_ascii_uppercase(),
            &valid,
            vec![root],
        ),
        ("valid-other-service", "web", &td, &valid, vec![root]),
        (
            "valid-two-roots",
            TLS_SERVICE,
            &td,
            &valid,
            vec![other_root, root],
        ),
        (
            "valid-other-trust-domain",
            TLS_SERVICE,
            "11111111-2222-3333-4444-555555555555.consul",
            &valid,
            vec![root],
        ),
        ("other-ca", TLS_SERVICE, &td, &from_other, vec![root]),
        (
            "other-ca-trusted",
            TLS_SERVICE,
            &td,
            &from_other,
            vec![root, other_root],
        ),
        ("rotated", TLS_SERVICE, &td, &from_rotated, vec![root]),
        (
            "rotated-both-roots",
            TLS_SERVICE,
            &td,
            &from_rotated,
            vec![rotated_root, root],
        ),
        ("wrong-service", TLS_SERVICE, &td, &not_service, vec![root]),
        (
            "wrong-service-asked",
            &format!("not-{TLS_SERVICE}"),
            &td,
            &not_service,
            vec![root],
        ),
    ];
    for (name, service, td, leaf, roots) in cases {
        seeds.add(
            TARGET,
            &format!("testpki-{name}"),
            tls_input(service, td, leaf, &roots),
        );
    }
    // The other kinds of test identity (valid for the default TTL or not at all).
    for kind in TestIdentity::ALL {
        if matches!(
            kind,
            TestIdentity::Valid | TestIdentity::OtherCa | TestIdentity::WrongService
        ) {
            continue;
        }
        let (cert, key) = pki.identity(kind, TLS_SERVICE);
        let leaf = json!({"CertPEM": cert, "PrivateKeyPEM": key});
        let input = tls_input(TLS_SERVICE, &td, &leaf, &[root]);
        seeds.add(TARGET, &format!("testpki-{kind:?}"), input);
    }
}

/// A `proxy_tls_state` input: the service and trust domain lines, the leaf's certificates and
/// key, the roots, each as a DER chunk.
fn tls_input(service: &str, trust_domain: &str, leaf: &Value, roots: &[&str]) -> Vec<u8> {
    let mut input = tls_head(service, trust_domain);
    for (label, der) in pem_blocks(leaf["CertPEM"].as_str().unwrap_or_default()) {
        assert_eq!(label, "CERTIFICATE", "a leaf's chain");
        chunk(&mut input, b'L', der);
    }
    for (label, der) in pem_blocks(leaf["PrivateKeyPEM"].as_str().unwrap_or_default()) {
        let tag = match label.as_str() {
            "EC PRIVATE KEY" => b'E',
            "RSA PRIVATE KEY" => b'S',
            "PRIVATE KEY" => b'P',
            other => panic!("a private key labelled {other}"),
        };
        chunk(&mut input, tag, der);
    }
    for pem in roots {
        for (_, der) in pem_blocks(pem) {
            chunk(&mut input, b'R', der);
        }
    }
    input
}

fn tls_head(service: &str, trust_domain: &str) -> Vec<u8> {
    format!("{service}\n{trust_domain}\n").into_bytes()
}

/// Appends a `proxy_tls_state` chunk: tag, big-endian u16 length, bytes.
fn chunk(input: &mut Vec<u8>, tag: u8, bytes: impl AsRef<[u8]>) {
    let bytes = bytes.as_ref();
    let len = u16::try_from(bytes.len()).expect("a chunk under 64 KiB");
    input.push(tag);
    input.extend(len.to_be_bytes());
    input.extend(bytes);
}

/// Every block of a PEM text: (label, DER).
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after.find("-----").expect("a PEM armor line");
        let label = &after[..label_end];
        let end_line = format!("-----END {label}-----");
        let body_end = after.find(&end_line).expect("a PEM end line");
        let b64: String = after[label_end + 5..body_end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("PEM base64");
        out.push((label.to_string(), der));
        rest = &after[body_end + end_line.len()..];
    }
    out
}

/// The first certificate of a PEM, as DER.
fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a certificate PEM")
        .as_ref()
        .to_vec()
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(value).expect("a Value serializes");
    text.push(b'\n');
    text
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read_text(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    entries
}

fn file_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .expect("a UTF-8 file name")
        .to_string()
}
