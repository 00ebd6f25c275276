//! What real Consul showed that `tandem-agent dev` alone did not: a token that cannot read
//! `/v1/agent/self`, a client pod's public listener probed by Consul's TCP check, and the first
//! request of an app that starts before its upstream is listed.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tandem_proxy::{Upstream, UpstreamList};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// Forwards every request to `agent`, except `/v1/agent/self`, which it answers as real Consul
/// does for a token made with `consul acl token create -service-identity NAME` (no
/// `agent:read`): 403 `Permission denied`.
async fn service_identity_front(agent: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tandem_certs::tls::install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (http, agent) = (http.clone(), agent.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (http, agent) = (http.clone(), agent.clone());
                    async move { Ok::<_, Infallible>(forward(&http, &agent, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn forward(
    http: &reqwest::Client,
    agent: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/v1/agent/self" {
        return Response::builder()
            .status(403)
            .body(Full::new(Bytes::from_static(b"Permission denied")))
            .unwrap();
    }
    let url = format!(
        "{agent}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let answer = http
        .request(method, url)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let mut out = Response::builder().status(answer.status().as_u16());
    for (k, v) in answer.headers() {
        out = out.header(k.as_str(), v.as_bytes());
    }
    out.body(Full::new(answer.bytes().await.unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_identity_token_is_enough_to_start_and_serve() {
    let agent = agent(true).await;
    let front = service_identity_front(agent.url()).await;
    let (app, _) = http_app("hello world").await;
    let server = server_proxy(&front, "static-server", "static-server", app).await;
    let client = client_proxy(&front, "static-client", "static-server").await;
    assert_eq!(
        get(client.upstream_addr("static-server").unwrap()).await,
        "hello world"
    );
    // The datacenter came from the leaf, not from /v1/agent/self.
    let config = reqwest::get(format!("http://{}/config", client.admin_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["datacenter"], "dc1", "{config:#}");
    drop((server, client));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_serves_nothing_listens_counts_probes_and_refuses_callers() {
    let agent = agent(true).await;
    let client = client_proxy(&agent.url(), "static-client", "static-server").await;
    let public = client
        .public_addr()
        .expect("the public listener is bound without --service-port");

    // Consul's TCP check: connect, close, nothing sent.
    drop(TcpStream::connect(public).await.unwrap());
    wait_for("the probe is counted", || async {
        metric(&metrics(&client).await, "tandem_inbound_probes_total", &[]) >= 1.0
    })
    .await;
    let text = metrics(&client).await;
    assert_eq!(
        metric(&text, "tandem_tls_handshake_failures_total", &[]),
        0.0,
        "{text}"
    );

    // The sidecar registration's checks are passing in the agent.
    let checks: serde_json::Value = reqwest::get(format!("{}/v1/agent/checks", agent.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = checks
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["ServiceID"] == "static-client-sidecar-proxy")
        .map(|c| c["Status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passing", "passing"], "{checks:#}");

    // A mesh caller is authenticated, then refused: there is no app behind this pod.
    let (app, _) = http_app("hello world").await;
    let mut caller = config(&agent.url(), "caller");
    caller.upstreams = UpstreamList(vec![Upstream::new(name("static-client"), 0, None)]);
    let caller = tandem_proxy::start(caller).await.unwrap();
    assert_eq!(
        get(caller.upstream_addr("static-client").unwrap()).await,
        ""
    );
    wait_for("the refusal is counted as no_service_port", || async {
        metric(
            &metrics(&client).await,
            "tandem_connections_closed_total",
            &[("direction", "inbound"), ("reason", "no_service_port")],
        ) == 1.0
    })
    .await;
    drop((client, caller, app));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_waits_for_an_upstream_that_is_not_listed_yet() {
    let agent = agent(true).await;
    let client = client_proxy(&agent.url(), "static-client", "late").await;
    let upstream = client.upstream_addr("late").unwrap();
    // The app's first call, before any instance of `late` exists.
    let first = tokio::spawn(async move { get(upstream).await });
    wait_for("the connection is held", || async {
        metric(
            &metrics(&client).await,
            "tandem_upstream_waits_total",
            &[("upstream", "late")],
        ) == 1.0
    })
    .await;
    let (app, _) = http_app("hello late").await;
    let server = server_proxy(&agent.url(), "late", "late-1", app).await;
    let body = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("the held request is answered")
        .unwrap();
    assert_eq!(body, "hello late");
    drop((client, server));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_on_several_local_ports_and_a_failover_pair_start_and_serve() {
    let agent = agent(true).await;
    let (app, _) = http_app("hello db").await;
    let server = server_proxy(&agent.url(), "db", "db-1", app).await;
    // consul-k8s forms: `db:A,db:B` (one service, two local ports) and `db:C:dc2` (the failover
    // half in a datacenter this agent has no path to: it must not hold up start-up).
    let mut c = config(&agent.url(), "static-client");
    c.upstreams = UpstreamList(vec![
        Upstream::new(name("db"), 0, None),
        Upstream::new(name("db"), 0, None),
        Upstream::new(name("db"), 0, Some("dc2".parse().unwrap())),
    ]);
    let client = tandem_proxy::start(c)
        .await
        .expect("starts with every upstream bound");
    let listeners = client.upstream_listeners().to_vec();
    assert_eq!(listeners.len(), 3, "{listeners:?}");
    assert_eq!(get(listeners[0].1).await, "hello db");
    assert_eq!(get(listeners[1].1).await, "hello db");
    // The unreachable half has a series of its own: it does not reset the local one.
    let text = metrics(&client).await;
    assert_eq!(
        metric(&text, "tandem_upstream_instances", &[("upstream", "db")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "tandem_upstream_instances",
            &[("upstream", "db?dc=dc2")]
        ),
        0.0
    );
    // Consul refuses the same upstream twice in a registration: the second `db` listener is
    // served but not registered.
    let sidecar: serde_json::Value = reqwest::get(format!(
        "{}/v1/agent/service/static-client-sidecar-proxy",
        agent.url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let ups = sidecar["Proxy"]["Upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 2, "{sidecar:#}");
    assert_eq!(ups[0]["LocalBindPort"], listeners[0].1.port());
    assert_eq!(ups[1]["Datacenter"], "dc2");
    drop((client, server));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_query_upstream_finds_instances_and_follows_the_query() {
    let agent = agent(true).await;
    tandem_certs::tls::install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // The client starts before the query exists: it starts empty and polls.
    let mut c = config(&agent.url(), "static-client");
    c.upstreams = "prepared_query:geo-db:1".parse().unwrap();
    c.upstreams.0[0].local_port = 0;
    c.prepared_query_poll_interval = Duration::from_millis(100);
    let client = tandem_proxy::start(c)
        .await
        .expect("starts without the query");
    let upstream = client.upstream_addr("geo-db").unwrap();

    let (app, _) = http_app("hello geo").await;
    let server = server_proxy(&agent.url(), "db", "db-1", app).await;
    let created = http
        .post(format!("{}/v1/query", agent.url()))
        // No `Connect: true`: the proxy asks for the mesh endpoints itself (`?connect=true`),
        // as Consul's proxies do; otherwise it would dial the app's plaintext port.
        .json(&serde_json::json!({"Name": "geo-db", "Service": {"Service": "db", "OnlyPassing": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{:?}", created.text().await);
    wait_for("the query's instance is served", || async {
        get(upstream).await == "hello geo"
    })
    .await;

    // The sidecar registered the upstream as a prepared query.
    let sidecar: serde_json::Value = http
        .get(format!(
            "{}/v1/agent/service/static-client-sidecar-proxy",
            agent.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sidecar["Proxy"]["Upstreams"][0]["DestinationType"],
        "prepared_query"
    );
    assert_eq!(
        sidecar["Proxy"]["Upstreams"][0]["DestinationName"],
        "geo-db"
    );
    drop((client, server));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ca_whose_leaf_reuses_the_old_serial_is_still_a_new_leaf() {
    // A restarted dev agent (real Consul too) has a new CA that numbers its leaves from the
    // start again: the first leaf it issues has the serial the old agent's first leaf had.
    let first = agent(true).await;
    let addr = first.addr();
    let (app, _) = http_app("hello").await;
    let server = server_proxy(&first.url(), "static-server", "static-server", app).await;
    first.shutdown().await;
    let second = tandem_agent::start(tandem_agent::Config {
        http_addr: addr,
        default_allow: true,
        ..Default::default()
    })
    .await
    .expect("a new agent on the same address");
    wait_for("the new CA's leaf is presented", || async {
        metric(&metrics(&server).await, "tandem_leaf_rotations_total", &[]) >= 1.0
    })
    .await;
    // And it works end to end with a client of the new CA.
    let client = client_proxy(&second.url(), "static-client", "static-server").await;
    wait_for("a request through the new CA", || async {
        get(client.upstream_addr("static-server").unwrap()).await == "hello"
    })
    .await;
    drop((client, server));
    second.shutdown().await;
}
