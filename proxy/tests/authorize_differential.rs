//! Differential test: the proxy's local intention evaluation (`IntentionSet::authorize`) against
//! the dev agent's `POST /v1/agent/connect/authorize`, over many generated intention sets.
//!
//! Each case writes a random set of intentions through the agent's HTTP API, reads it back the
//! way the proxy does (`GET /v1/connect/intentions/match?by=destination&name=db` and the
//! `X-Consul-Default-ACL-Policy` header), then asks both sides about every caller. The run is
//! seeded: the seed is printed, and `TANDEM_DIFF_SEED=<seed>` replays the same cases.
//!
//! What the dev agent lets this vary: the default (`Config::default_allow`, one agent each way),
//! sources and destinations with wildcards and case, the `default/` and `*/` namespace forms
//! (the agent is CE-like: any other namespace is refused, so none is written), L7 intentions
//! (on any destination but `*`: a proxy-defaults entry makes every service http, as Consul
//! refuses L7 intentions for a tcp service or a wildcard destination) and
//! intentions created through the legacy `POST /v1/connect/intentions`, which carry an ID.

mod common;

use std::collections::BTreeMap;
use std::fmt;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tandem_proxy::consul::{Intention, IntentionMatch};
use tandem_proxy::{Action, IntentionSet, Source};

/// Generated intention sets per run.
const CASES: usize = 240;
/// The destination whose inbound connections are decided.
const TARGET: &str = "db";
const SOURCES: &[&str] = &["web", "api", "WEB", "*", "other"];
/// Destinations other than `db`; half of all intentions name `db` itself.
const OTHER_DESTINATIONS: &[&str] = &["DB", "*", "web", "api"];
/// Callers as (namespace, service); `team-b` is a namespace no intention can name here.
const CALLERS: &[(&str, &str)] = &[
    ("default", "web"),
    ("default", "api"),
    ("default", "WEB"),
    ("default", "other"),
    ("default", "db"),
    ("team-b", "web"),
];

/// Consul 1.10's reason when nothing matches and ACLs are disabled (a dev agent's allow default).
const ACLS_DISABLED: &str = "ACLs disabled, access is allowed by default";
/// Consul's reason when nothing matches and the ACL default decides.
const ACL_DEFAULT: &str = "Default behavior configured by ACLs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_decides_every_caller_as_the_agent_does() {
    let seed = std::env::var("TANDEM_DIFF_SEED")
        .ok()
        .map(|s| s.parse().expect("TANDEM_DIFF_SEED is a u64"))
        .unwrap_or_else(rand::random);
    println!("authorize differential: seed {seed} (replay with TANDEM_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let allow = Agent::start(true).await;
    let deny = Agent::start(false).await;
    let mut outcomes = BTreeMap::new();
    for case in 0..CASES {
        let agent = if rng.random_bool(0.5) { &allow } else { &deny };
        let writes = generate(&mut rng);
        agent.clear().await;
        for write in &writes {
            agent.write(write).await;
        }
        let (set, matched) = agent.intention_set().await;
        for &(namespace, service) in CALLERS {
            let want = agent.authorize(namespace, service).await;
            let got = proxy_answer(&set, namespace, service);
            let mismatch =
                got.authorized != want.authorized || got.reason != expected_reason(&want.reason);
            assert!(
                !mismatch,
                "the proxy and the agent disagree (seed {seed}, case {case})\n\
                 agent default: {}\nwrites:\n{}\nmatch answer for {TARGET}:\n{}\n\
                 caller: {namespace}/{service}\n  agent: {want}\n  proxy: {got}",
                if agent.default_allow { "allow" } else { "deny" },
                lines(&writes),
                lines(&matched.iter().map(Shown).collect::<Vec<_>>()),
            );
            *outcomes.entry(outcome(&want)).or_insert(0) += 1;
        }
    }
    println!("authorize differential: {CASES} sets, decisions by outcome: {outcomes:?}");
    // The generator reaches every path of the rules, whatever the seed.
    for kind in [
        "L4 allow",
        "L4 deny",
        "L7 deny",
        "default allow",
        "default deny",
    ] {
        assert!(
            outcomes.contains_key(kind),
            "no {kind} decision (seed {seed})"
        );
    }
}

/// Consul's `Intention.String()` (`structs/intention.go`, 1.10.4) puts `ID: <id>, ` before the
/// precedence when the intention has an ID, as every intention made through the legacy
/// `POST /v1/connect/intentions` does; this test found the proxy leaving it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_names_a_legacy_intention_by_its_id() {
    let agent = Agent::start(false).await;
    agent
        .write(&Write {
            legacy: true,
            source: "web".into(),
            destination: TARGET.into(),
            body: json!({"Action": "allow"}),
        })
        .await;
    let (set, _) = agent.intention_set().await;
    let want = agent.authorize("default", "web").await;
    assert_eq!(proxy_answer(&set, "default", "web"), want);
}

/// A decision as either side gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    authorized: bool,
    reason: String,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "authorized={} reason={:?}", self.authorized, self.reason)
    }
}

/// Which rule decided, for the run's tally.
fn outcome(answer: &Answer) -> &'static str {
    let matched = |kind| {
        answer
            .reason
            .starts_with(&format!("Matched {kind} intention: "))
    };
    match (matched("L4"), matched("L7"), answer.authorized) {
        (true, _, true) => "L4 allow",
        (true, _, false) => "L4 deny",
        (_, true, _) => "L7 deny",
        (_, _, true) => "default allow",
        (_, _, false) => "default deny",
    }
}

/// The proxy's answer for a caller: the only place this test touches the proxy's `Decision`.
fn proxy_answer(set: &IntentionSet, namespace: &str, service: &str) -> Answer {
    let decision = set.authorize(&Source {
        partition: None,
        namespace,
        service,
    });
    Answer {
        authorized: decision.is_allowed(),
        reason: decision.reason,
    }
}

/// The agent's reason as the proxy must word it. One difference is expected: without a match,
/// Consul 1.10 says "ACLs disabled, ..." when ACLs are off and "Default behavior configured by
/// ACLs" when the ACL default decides. The proxy sees only `X-Consul-Default-ACL-Policy`, which
/// reads `allow` in both the first case and an ACL allow default, so it cannot tell them apart
/// and always gives the second wording.
fn expected_reason(agent_reason: &str) -> String {
    if agent_reason == ACLS_DISABLED {
        ACL_DEFAULT.to_string()
    } else {
        agent_reason.to_string()
    }
}

/// One intention write, as sent to the agent.
#[derive(Debug, Clone)]
struct Write {
    /// `POST /v1/connect/intentions` (gets an ID) rather than `PUT .../exact`.
    legacy: bool,
    /// As the write names it: `web`, `default/web`, `*/web`, `*`.
    source: String,
    destination: String,
    body: Value,
}

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let api = if self.legacy {
            "POST legacy"
        } else {
            "PUT exact"
        };
        write!(
            f,
            "{api} {} => {} {}",
            self.source, self.destination, self.body
        )
    }
}

/// Up to six intentions, at most one per (source, destination) pair ignoring case: the agent
/// keeps one intention per pair, so a second write would replace (exact) or be refused (legacy).
fn generate(rng: &mut StdRng) -> Vec<Write> {
    let count = rng.random_range(0..=6);
    let mut writes: Vec<Write> = Vec::new();
    let mut pairs = Vec::new();
    for _ in 0..count {
        let name = *SOURCES.choose(rng).expect("SOURCES is not empty");
        let destination = if rng.random_bool(0.5) {
            TARGET
        } else {
            *OTHER_DESTINATIONS
                .choose(rng)
                .expect("OTHER_DESTINATIONS is not empty")
        };
        let pair = (name.to_ascii_lowercase(), destination.to_ascii_lowercase());
        if pairs.contains(&pair) {
            continue;
        }
        pairs.push(pair);
        let action = if rng.random_bool(0.5) {
            "allow"
        } else {
            "deny"
        };
        let body = match rng.random_range(0..20) {
            // Consul refuses permissions on a wildcard destination.
            0..=2 if destination != "*" => json!({ "Permissions": permissions(rng) }),
            3 => json!({ "Action": action, "Permissions": [] }),
            _ => json!({ "Action": action }),
        };
        // The legacy API names the source bare and takes no L7 permissions.
        let legacy = body.get("Permissions").is_none() && rng.random_bool(0.2);
        let source = match rng.random_range(0..10) {
            _ if legacy => name.to_string(),
            0 | 1 => format!("default/{name}"),
            2 => format!("*/{name}"),
            _ => name.to_string(),
        };
        writes.push(Write {
            legacy,
            source,
            destination: destination.to_string(),
            body,
        });
    }
    writes
}

fn permissions(rng: &mut StdRng) -> Vec<Value> {
    (0..rng.random_range(1..=2))
        .map(|i| {
            let action = if rng.random_bool(0.5) {
                "allow"
            } else {
                "deny"
            };
            json!({ "Action": action, "HTTP": { "PathPrefix": format!("/p{i}") } })
        })
        .collect()
}

/// A dev agent in-process, with what a case needs from its HTTP API.
struct Agent {
    _agent: tandem_agent::DevAgent,
    url: String,
    http: reqwest::Client,
    default_allow: bool,
    trust_domain: String,
}

impl Agent {
    async fn start(default_allow: bool) -> Agent {
        let agent = common::agent(default_allow).await;
        let url = agent.url();
        tandem_certs::tls::install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a plain http client builds");
        let roots: Value = http
            .get(format!("{url}/v1/connect/ca/roots"))
            .send()
            .await
            .expect("the agent answers")
            .json()
            .await
            .expect("roots are JSON");
        let trust_domain = roots["TrustDomain"]
            .as_str()
            .expect("roots name the trust domain")
            .to_string();
        // Every destination speaks HTTP, so the agent accepts L7 intentions for any of them
        // (Consul refuses them for a tcp service).
        let global = serde_json::json!({
            "Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}
        });
        let written = http
            .put(format!("{url}/v1/config"))
            .json(&global)
            .send()
            .await
            .expect("the agent answers");
        assert!(written.status().is_success(), "proxy-defaults written");
        Agent {
            _agent: agent,
            url,
            http,
            default_allow,
            trust_domain,
        }
    }

    /// Deletes every intention.
    async fn clear(&self) {
        let all: Vec<Value> = self
            .http
            .get(format!("{}/v1/connect/intentions", self.url))
            .send()
            .await
            .expect("the agent answers")
            .json()
            .await
            .expect("the intention list is JSON");
        for ixn in all {
            let pair = [
                ("source", ixn["SourceName"].as_str().unwrap_or_default()),
                (
                    "destination",
                    ixn["DestinationName"].as_str().unwrap_or_default(),
                ),
            ];
            let response = self
                .http
                .delete(format!("{}/v1/connect/intentions/exact", self.url))
                .query(&pair)
                .send()
                .await
                .expect("the agent answers");
            assert!(
                response.status().is_success(),
                "delete {pair:?}: {response:?}"
            );
        }
    }

    async fn write(&self, write: &Write) {
        let request = if write.legacy {
            let mut body = write.body.clone();
            body["SourceName"] = json!(write.source);
            body["DestinationName"] = json!(write.destination);
            self.http
                .post(format!("{}/v1/connect/intentions", self.url))
                .json(&body)
        } else {
            self.http
                .put(format!("{}/v1/connect/intentions/exact", self.url))
                .query(&[
                    ("source", &write.source),
                    ("destination", &write.destination),
                ])
                .json(&write.body)
        };
        let response = request.send().await.expect("the agent answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{write}: {status} {text}");
    }

    /// What the proxy would build: the match answer for `db` and the default from the header
    /// (allow when absent, as `intentions::first` does); also the intentions, for messages.
    async fn intention_set(&self) -> (IntentionSet, Vec<Intention>) {
        let response = self
            .http
            .get(format!("{}/v1/connect/intentions/match", self.url))
            .query(&[("by", "destination"), ("name", TARGET)])
            .send()
            .await
            .expect("the agent answers");
        let default_allow = match response
            .headers()
            .get("X-Consul-Default-ACL-Policy")
            .and_then(|v| v.to_str().ok())
        {
            Some("deny") => false,
            Some("allow") | None => true,
            Some(other) => panic!("unexpected X-Consul-Default-ACL-Policy {other:?}"),
        };
        assert_eq!(
            default_allow, self.default_allow,
            "the header says the agent's default"
        );
        let mut matched: IntentionMatch = response.json().await.expect("the match answer decodes");
        let list = matched.take(TARGET);
        let default = if default_allow {
            Action::Allow
        } else {
            Action::Deny
        };
        (IntentionSet::new(list.clone(), default), list)
    }

    async fn authorize(&self, namespace: &str, service: &str) -> Answer {
        let uri = format!(
            "spiffe://{}/ns/{namespace}/dc/dc1/svc/{service}",
            self.trust_domain
        );
        let response = self
            .http
            .post(format!("{}/v1/agent/connect/authorize", self.url))
            .json(&json!({ "Target": TARGET, "ClientCertURI": uri }))
            .send()
            .await
            .expect("the agent answers");
        assert!(
            response.status().is_success(),
            "authorize {uri}: {response:?}"
        );
        let body: Value = response.json().await.expect("authorize answers JSON");
        Answer {
            authorized: body["Authorized"]
                .as_bool()
                .expect("the answer has Authorized"),
            reason: body["Reason"]
                .as_str()
                .expect("the answer has a Reason")
                .to_string(),
        }
    }
}

/// An intention from the match answer, one line.
struct Shown<'a>(&'a Intention);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.0;
        write!(
            f,
            "{}/{} => {}/{} action={:?} permissions={} precedence={} id={:?}",
            i.source_ns,
            i.source_name,
            i.destination_ns,
            i.destination_name,
            i.action,
            i.permissions.as_ref().map_or(0, Vec::len),
            i.precedence,
            i.id
        )
    }
}

fn lines<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "  (none)".to_string();
    }
    items
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}
