//! One access-log line per connection when it ends, with direction, peer identity, upstream,
//! bytes each way, duration and end reason (captured from `tracing` in-process).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

type Line = BTreeMap<String, String>;

/// Keeps every event of the `tandem_proxy::access` target as field -> value.
struct Capture(Arc<Mutex<Vec<Line>>>);

struct Fields<'a>(&'a mut Line);

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
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "tandem_proxy::access" {
            let mut line = Line::new();
            event.record(&mut Fields(&mut line));
            self.0.lock().unwrap().push(line);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_ends_with_one_access_line() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Capture(lines.clone())),
    )
    .unwrap();
    let agent = tandem_agent::start(tandem_agent::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = agent.url();
    let (app_port, _) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    assert_eq!(
        get(client.upstream_addr("static-server").unwrap()).await,
        "hello world"
    );
    let mesh_lines = |direction: &str| -> Vec<Line> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["direction"] == direction && l["peer.id"] != "-")
            .cloned()
            .collect()
    };
    wait_for("the first connection's lines", || async {
        !mesh_lines("inbound").is_empty() && !mesh_lines("outbound").is_empty()
    })
    .await;
    set_intention(&url, "static-client", "static-server", "deny").await;
    wait_for("a denied connection", || async {
        get(client.upstream_addr("static-server").unwrap())
            .await
            .is_empty()
    })
    .await;
    // That empty reply may have been an allowed connection closed by the change (`revoked`);
    // the server now has the deny, so the next one is refused at once (`denied`).
    assert_eq!(
        get(client.upstream_addr("static-server").unwrap()).await,
        ""
    );

    wait_for("the denied connection's lines on both sides", || async {
        mesh_lines("inbound").iter().any(|l| l["end"] == "denied")
            && mesh_lines("outbound").len() >= 2
    })
    .await;

    let request = "GET / HTTP/1.0\r\nhost: test\r\n\r\n".len().to_string();
    let outbound = &mesh_lines("outbound")[0];
    assert!(
        outbound["peer.id"].ends_with("/ns/default/dc/dc1/svc/static-server"),
        "{outbound:?}"
    );
    assert_eq!(outbound["upstream.service"], "static-server");
    assert_eq!(
        outbound["upstream.addr"],
        server.public_addr().unwrap().to_string()
    );
    assert_eq!(outbound["bytes.received"], request);
    assert!(outbound["bytes.sent"].parse::<u64>().unwrap() > "hello world".len() as u64);
    assert_eq!(outbound["end"], "completed");
    assert!(outbound.contains_key("duration.ms") && outbound.contains_key("client.addr"));

    let inbound = mesh_lines("inbound");
    assert!(
        inbound[0]["peer.id"].ends_with("/svc/static-client"),
        "{inbound:?}"
    );
    assert_eq!(inbound[0]["bytes.received"], request);
    assert_eq!(inbound[0]["bytes.sent"], outbound["bytes.sent"]);
    assert_eq!(inbound[0]["end"], "completed");
    assert_eq!(inbound[0]["upstream.addr"], format!("127.0.0.1:{app_port}"));
    let denied = inbound
        .iter()
        .find(|l| l["end"] == "denied")
        .expect("the denied connection is logged");
    assert_eq!(
        (
            denied["bytes.received"].as_str(),
            denied["bytes.sent"].as_str()
        ),
        ("0", "0")
    );
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}
