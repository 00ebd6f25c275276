//! An agent that misbehaves (a forwarding fake in front of the dev agent): slow answers, 500s,
//! garbage, reset blocking queries, an index gone back, a leaf for another service, a leaf from
//! a CA the proxy does not trust. The proxies keep serving with their last good state, each
//! watch logs a kind of failure once (not once per retry), and no certificate that does not
//! verify against the trusted roots, or names another service, is ever presented.
//!
//! The tests run on the current-thread runtime so that a scoped `tracing` subscriber sees the
//! proxies' events.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Every `warn` and `info` event: its message and fields.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::INFO {
            let mut line = BTreeMap::new();
            line.insert("level".into(), event.metadata().level().to_string());
            event.record(&mut Fields(&mut line));
            self.0.lock().unwrap().push(line);
        }
    }
}

impl Events {
    /// Captures the events of this thread until the guard drops.
    fn capture() -> (Events, tracing::subscriber::DefaultGuard) {
        let events = Events::default();
        let subscriber = tracing_subscriber::registry().with(events.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        (events, guard)
    }

    fn matching(&self, pick: impl Fn(&BTreeMap<String, String>) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| pick(e)).count()
    }

    fn warned(&self, watch: &str, message_start: &str) -> usize {
        self.matching(|e| {
            e.get("level").map(String::as_str) == Some("WARN")
                && e.get("watch").map(String::as_str) == Some(watch)
                && e.get("message")
                    .is_some_and(|m| m.starts_with(message_start))
        })
    }
}

/// A server and a client proxy, both on the misbehaving agent; traffic flows first.
async fn pair(
    agent_url: &str,
) -> (
    MisbehavingAgent,
    tandem_proxy::Proxy,
    tandem_proxy::Proxy,
    std::net::SocketAddr,
) {
    let fake = MisbehavingAgent::start(agent_url).await;
    let (app_port, _) = http_app("hello world").await;
    let server = server_proxy(&fake.url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&fake.url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    wait_for("traffic through the pair", || async {
        get(upstream).await == "hello world"
    })
    .await;
    (fake, server, client, upstream)
}

async fn traffic_flows(upstream: std::net::SocketAddr, requests: usize) {
    for i in 0..requests {
        assert_eq!(get(upstream).await, "hello world", "request {i}");
    }
}

#[tokio::test]
async fn the_proxies_serve_through_500s_garbage_resets_and_slow_answers_and_log_each_kind_once() {
    let (events, _guard) = Events::capture();
    let agent = agent(true).await;
    let (fake, server, client, upstream) = pair(&agent.url()).await;

    fake.set("/v1/agent/connect/ca/roots", Misbehavior::Garbage);
    fake.set(
        "/v1/connect/intentions/match",
        Misbehavior::Status(500, "rpc error making call: No cluster leader"),
    );
    fake.set("/v1/health/connect/", Misbehavior::Reset);
    fake.set(
        "/v1/agent/connect/ca/leaf/",
        Misbehavior::Slow(Duration::from_secs(3)),
    );
    fake.set("/v1/config/", Misbehavior::IndexBack);
    // Let every watch fail and retry several times (retry_max is 300 ms in the harness).
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        traffic_flows(upstream, 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http_get(&format!("http://{}/ready", server.admin_addr()))
            .await
            .0,
        200,
        "still ready: serving with the last good state"
    );
    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "tandem_agent_watch_errors_total",
            &[("watch", "intentions")]
        ) >= 3.0,
        "the intentions watch retried: {text}"
    );
    // Each watch said it once per kind of failure, whatever the number of retries: two
    // proxies, each at most two kinds (the reset when the rules changed, then the rule's own).
    let client_text = metrics(&client).await;
    for watch in ["intentions", "roots", "discovery"] {
        let warned = events.warned(watch, "consul query failed");
        let failures = metric(
            &text,
            "tandem_agent_watch_errors_total",
            &[("watch", watch)],
        ) + metric(
            &client_text,
            "tandem_agent_watch_errors_total",
            &[("watch", watch)],
        );
        assert!(warned >= 1, "{watch}: the failure is logged at warn");
        assert!(
            warned <= 4 && (warned as f64) < failures,
            "{watch}: {warned} warn lines for {failures} failures: not one per retry"
        );
    }

    fake.clear();
    traffic_flows(upstream, 5).await;
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_leaf_for_another_service_or_from_an_unknown_ca_is_never_presented() {
    let (events, _guard) = Events::capture();
    let agent = agent(true).await;
    let other_ca = common::agent(true).await;
    let (fake, server, client, upstream) = pair(&agent.url()).await;
    let before = metrics(&server).await;
    let expiry = metric(&before, "tandem_certificate_expiry_timestamp_seconds", &[]);

    let leaf_path = "/v1/agent/connect/ca/leaf/static-server";
    for (what, misbehavior, refusal) in [
        (
            "another service's leaf",
            Misbehavior::From {
                base: agent.url(),
                path: "/v1/agent/connect/ca/leaf/other-service".into(),
            },
            "the leaf is for",
        ),
        (
            "a leaf from a CA the proxy does not trust",
            Misbehavior::From {
                base: other_ca.url(),
                path: leaf_path.into(),
            },
            "the leaf does not verify",
        ),
    ] {
        fake.set(leaf_path, misbehavior);
        wait_for(&format!("{what} refused"), || async {
            events.matching(|e| {
                e.get("message")
                    .is_some_and(|m| m.starts_with("ignoring an unusable leaf"))
                    && e.get("error").is_some_and(|m| m.contains(refusal))
            }) > 0
        })
        .await;
        // The server still presents its own leaf: the client, which checks the server is
        // static-server of the trusted CA, keeps connecting.
        traffic_flows(upstream, 5).await;
        let text = metrics(&server).await;
        assert_eq!(
            metric(&text, "tandem_leaf_rotations_total", &[]),
            0.0,
            "{what}: no leaf installed"
        );
        assert_eq!(
            metric(&text, "tandem_certificate_expiry_timestamp_seconds", &[]),
            expiry,
            "{what}: the same leaf"
        );
    }

    fake.clear();
    client.shutdown().await;
    server.shutdown().await;
    other_ca.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_leaf_whose_new_root_is_not_known_yet_is_installed_once_the_root_is() {
    let (events, _guard) = Events::capture();
    let agent = agent(true).await;
    let url = agent.url();
    let (fake, server, client, upstream) = pair(&url).await;

    // The roots cannot be read, and the CA rotates: the new leaf chains to a root the proxy
    // has not seen, so it is refused for now...
    fake.set(
        "/v1/agent/connect/ca/roots",
        Misbehavior::Status(500, "rpc error: injected"),
    );
    let status = http_put(
        &format!("{url}/v1/connect/ca/configuration"),
        serde_json::json!({"Provider": "consul", "Config": {"PrivateKeyType": "ec", "PrivateKeyBits": 256}}),
    )
    .await;
    assert_eq!(status, 200, "CA rotated");
    wait_for("the new leaf refused while its root is unknown", || async {
        events.matching(|e| {
            e.get("error")
                .is_some_and(|m| m.contains("does not verify against the trusted roots"))
        }) > 0
    })
    .await;
    traffic_flows(upstream, 3).await;

    // ...and installed once the roots can be read again, without waiting for another leaf.
    fake.clear();
    wait_for("the new leaf installed", || async {
        metric(&metrics(&server).await, "tandem_leaf_rotations_total", &[]) >= 1.0
    })
    .await;
    traffic_flows(upstream, 5).await;
    client.shutdown().await;
    server.shutdown().await;
    agent.shutdown().await;
}
