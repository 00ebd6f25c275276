//! Issue 3 end to end, in-process on 127.0.0.1:0 with the real dev agent: the seed
//! walkthrough, intentions applied to the next connection, the client side refusing a server
//! that names another service, spreading across instances and surviving a killed one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_walkthrough_get_deny_and_allow_again() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app_port, hits) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    assert_eq!(
        upstream.ip().to_string(),
        "127.0.0.1",
        "upstream listeners are on 127.0.0.1 only"
    );

    // kubectl exec static-client -- curl -s http://127.0.0.1:1234/  => "hello world"
    assert_eq!(get(upstream).await, "hello world");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A deny intention: the next connection gets an empty reply (curl exit 52), nothing restarted.
    set_intention(&url, "static-client", "static-server", "deny").await;
    wait_for("the deny intention to apply", || async {
        get(upstream).await.is_empty()
    })
    .await;
    let hits_while_denied = hits.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get(upstream).await, "", "denied connections get no data");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        hits_while_denied,
        "a denied caller never reaches the app"
    );
    let m = metrics(&server).await;
    assert!(
        metric(&m, "tandem_authorizations_total", &[("decision", "denied")]) >= 3.0,
        "{m}"
    );

    // Deleting it restores access.
    delete_intention(&url, "static-client", "static-server").await;
    wait_for("access to come back", || async {
        get(upstream).await == "hello world"
    })
    .await;

    // The registrations carry the contracted fields.
    let (status, body) = http_get(&format!(
        "{url}/v1/agent/service/static-server-sidecar-proxy"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let sidecar: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sidecar["Kind"], "connect-proxy");
    assert_eq!(sidecar["Service"], "static-server-sidecar-proxy");
    assert_eq!(sidecar["Port"], server.public_addr().unwrap().port());
    assert_eq!(sidecar["Proxy"]["DestinationServiceName"], "static-server");
    assert_eq!(sidecar["Proxy"]["DestinationServiceID"], "static-server");
    assert_eq!(sidecar["Proxy"]["LocalServicePort"], app_port);
    let (status, body) = http_get(&format!("{url}/v1/agent/service/static-client")).await;
    assert_eq!(
        status, 200,
        "the client-only pod's service is registered too: {body}"
    );

    // Stop deregisters both.
    server.shutdown().await;
    let (status, _) = http_get(&format!(
        "{url}/v1/agent/service/static-server-sidecar-proxy"
    ))
    .await;
    assert_eq!(status, 404, "the sidecar is deregistered on stop");
    let (status, _) = http_get(&format!("{url}/v1/agent/service/static-server")).await;
    assert_eq!(status, 404, "the service is deregistered on stop");
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_server_whose_certificate_names_another_service() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app_port, hits) = http_app("impostor").await;
    // A genuine mesh member of another service, not registered by itself...
    let mut c = config(&url, "billing");
    c.service_port = Some(app_port);
    c.no_register = true;
    let impostor = tandem_proxy::start(c).await.unwrap();
    // ...advertised in the catalog as an instance of static-server.
    let status = http_put(
        &format!("{url}/v1/agent/service/register"),
        serde_json::json!({
            "Kind": "connect-proxy", "ID": "fake-sidecar-proxy", "Name": "static-server-sidecar-proxy",
            "Address": "127.0.0.1", "Port": impostor.public_addr().unwrap().port(),
            "Proxy": { "DestinationServiceName": "static-server" },
            "Check": { "Name": "up", "TTL": "1h", "Status": "passing" }
        }),
    )
    .await;
    assert_eq!(status, 200);
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();

    wait_for("the client to try the impostor", || async {
        let m = metrics(&client).await;
        get(upstream).await.is_empty()
            && metric(
                &m,
                "tandem_tls_handshake_failures_total",
                &[("direction", "outbound"), ("reason", "wrong_service")],
            ) >= 1.0
    })
    .await;
    assert_eq!(get(upstream).await, "");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no byte reached the impostor's app"
    );
    impostor.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_across_instances_and_survive_a_killed_one() {
    let agent = agent(true).await;
    let url = agent.url();
    let (port_a, _) = http_app("instance a").await;
    let (port_b, _) = http_app("instance b").await;
    let server_a = server_proxy(&url, "static-server", "static-server-a", port_a).await;
    let server_b = server_proxy(&url, "static-server", "static-server-b", port_b).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();

    let mut seen = BTreeMap::new();
    let until = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < 2 {
        assert!(
            tokio::time::Instant::now() < until,
            "connections never reached both instances: {seen:?}"
        );
        let body = get(upstream).await;
        assert!(
            body == "instance a" || body == "instance b",
            "every connection succeeds, got {body:?}"
        );
        *seen.entry(body).or_insert(0) += 1;
    }
    for _ in 0..10 {
        let body = get(upstream).await;
        assert!(!body.is_empty());
        *seen.entry(body).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|n| *n >= 2),
        "both instances get connections: {seen:?}"
    );

    // Kill instance b like a crash: no deregistration, the catalog still lists it.
    let b_addr = server_b.public_addr().unwrap();
    drop(server_b);
    wait_for("instance b's listener to close", || async {
        tokio::net::TcpStream::connect(b_addr).await.is_err()
    })
    .await;
    for i in 0..20 {
        assert_eq!(
            get(upstream).await,
            "instance a",
            "connection {i} after the kill must succeed"
        );
    }
    let m = metrics(&client).await;
    assert!(
        metric(
            &m,
            "tandem_upstream_connect_failures_total",
            &[
                ("upstream", "static-server"),
                ("reason", "connection_refused")
            ]
        ) >= 1.0,
        "the refusing instance was tried and skipped: {m}"
    );
    server_a.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_deny_from_the_agent_header_and_an_allow_intention() {
    // The agent's X-Consul-Default-ACL-Policy is deny: no intention means no access.
    let agent = agent(false).await;
    let url = agent.url();
    let (app_port, hits) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let upstream = client.upstream_addr("static-server").unwrap();
    assert_eq!(get(upstream).await, "", "denied by default");
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    set_intention(&url, "static-client", "static-server", "allow").await;
    wait_for("the allow intention to apply", || async {
        get(upstream).await == "hello world"
    })
    .await;
    // A wildcard deny does not override the more precise allow (first match in Consul's order).
    // A later allow for a sentinel client proves the server has seen the wildcard too.
    set_intention(&url, "*", "static-server", "deny").await;
    set_intention(&url, "sentinel", "static-server", "allow").await;
    let sentinel = client_proxy(&url, "sentinel", "static-server").await;
    let sentinel_upstream = sentinel.upstream_addr("static-server").unwrap();
    wait_for("the server to apply both intentions", || async {
        get(sentinel_upstream).await == "hello world"
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get(upstream).await, "hello world");
    }
    sentinel.shutdown().await;
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_through_the_pair() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An app that answers only after the caller has finished sending (like `nc -q` or a
    // request/response protocol framed by EOF).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                if s.read_to_end(&mut request).await.is_ok() {
                    let _ = s
                        .write_all(format!("got {} bytes", request.len()).as_bytes())
                        .await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    let agent = agent(true).await;
    let url = agent.url();
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let mut s = tokio::net::TcpStream::connect(client.upstream_addr("static-server").unwrap())
        .await
        .unwrap();
    s.write_all(&[7u8; 100_000]).await.unwrap();
    s.shutdown().await.unwrap(); // half-close: we are done sending, still reading
    let mut reply = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "got 100000 bytes");
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}
