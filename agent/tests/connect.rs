//! Integration tests over real sockets against the in-process agent: registration and
//! health/connect, leaves and roots, authorize, blocking queries, rotation, tokens, pause/resume.

mod common;

use common::{agent, agent_with, authorize_body, eventually, service_uri, Api};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{json, Value};

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("valid PEM certificates")
}

/// Verifies `leaf_pem` chains to one of `root_pems` for client and server auth.
fn verify_chain(leaf_pem: &str, root_pems: &[String]) -> Result<(), webpki::Error> {
    let leaf = pem_certs(leaf_pem).remove(0);
    let roots: Vec<CertificateDer<'static>> = root_pems.iter().flat_map(|p| pem_certs(p)).collect();
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).expect("root is a valid trust anchor"))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).expect("leaf parses");
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            UnixTime::now(),
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

fn uri_sans(leaf_pem: &str) -> Vec<String> {
    let der = pem_certs(leaf_pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("leaf parses");
    let san = cert
        .subject_alternative_name()
        .expect("SAN extension parses")
        .expect("leaf has a SAN extension");
    assert!(san.critical, "Consul marks the SAN extension critical");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

const WEB_WITH_SIDECAR: &str = r#"{"name": "web", "port": 8080,
    "connect": {"sidecar_service": {"proxy": {"upstreams": [
        {"destination_name": "db", "local_bind_port": 9191}]}}}}"#;

#[tokio::test]
async fn sidecar_registration_shows_in_health_connect() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", WEB_WITH_SIDECAR)
        .await;

    let entries = api.json("/v1/health/connect/web").await;
    let entries = entries.as_array().expect("an array");
    assert_eq!(entries.len(), 1);
    let service = &entries[0]["Service"];
    assert_eq!(service["Kind"], "connect-proxy");
    assert_eq!(service["ID"], "web-sidecar-proxy");
    assert_eq!(service["Port"], 21000);
    assert_eq!(service["Proxy"]["DestinationServiceName"], "web");
    assert_eq!(service["Proxy"]["LocalServicePort"], 8080);
    assert_eq!(service["Proxy"]["Upstreams"][0]["DestinationName"], "db");
    assert_eq!(service["Proxy"]["Upstreams"][0]["LocalBindPort"], 9191);
    let check_ids: Vec<&str> = entries[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(
        check_ids,
        [
            "serfHealth",
            "service:web-sidecar-proxy:1",
            "service:web-sidecar-proxy:2"
        ]
    );
    // Nothing listens on the sidecar port: the TCP check fails, so ?passing hides it.
    let passing = api.json("/v1/health/connect/web?passing").await;
    assert_eq!(passing, json!([]));
    // The destination's own name is not a mesh endpoint of anything else.
    assert_eq!(api.json("/v1/health/connect/db").await, json!([]));
    // The plain service is listed under /health/service.
    let web = api.json("/v1/health/service/web").await;
    assert_eq!(web[0]["Service"]["ID"], "web");
    agent.shutdown().await;
}

#[tokio::test]
async fn tcp_check_passes_when_the_proxy_listens() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = json!({"Name": "api", "Port": 9000,
        "Connect": {"SidecarService": {"Port": port}}});
    api.ok_put("/v1/agent/service/register", &body.to_string())
        .await;
    let passing = eventually("the sidecar to pass its checks", || async {
        let v = api.json("/v1/health/connect/api?passing=1").await;
        (v.as_array().unwrap().len() == 1).then_some(v)
    })
    .await;
    let checks = passing[0]["Checks"].as_array().unwrap();
    assert!(
        checks.iter().all(|c| c["Status"] == "passing"),
        "{checks:?}"
    );
    assert_eq!(
        checks[1]["Output"],
        format!("TCP connect 127.0.0.1:{port}: Success")
    );
    // The alias of a service without checks of its own: Consul 1.10.4 says "No checks found."
    // (recorded), the node's serfHealth not counting.
    assert_eq!(checks[2]["Output"], "No checks found.");
    drop(listener);
    agent.shutdown().await;
}

#[tokio::test]
async fn leaf_chains_to_roots_with_the_service_spiffe_id() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let roots = api.json("/v1/agent/connect/ca/roots").await;
    let trust_domain = roots["TrustDomain"].as_str().unwrap().to_string();
    assert!(trust_domain.ends_with(".consul"));
    let root_pems: Vec<String> = roots["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["RootCert"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roots["ActiveRootID"], roots["Roots"][0]["ID"]);

    let resp = api.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let leaf = resp.json();
    assert_eq!(resp.index(), leaf["ModifyIndex"].as_u64().unwrap());
    let expected_uri = service_uri(&trust_domain, "web");
    assert_eq!(leaf["ServiceURI"], expected_uri.as_str());
    assert_eq!(leaf["Service"], "web");
    let cert_pem = leaf["CertPEM"].as_str().unwrap();
    assert_eq!(uri_sans(cert_pem), vec![expected_uri.clone()]);
    verify_chain(cert_pem, &root_pems).expect("leaf chains to the advertised roots");
    assert!(leaf["PrivateKeyPEM"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN EC PRIVATE KEY-----"));
    // The key pairs with the cert (what a proxy loads).
    tandem_certs::Identity::from_pem(cert_pem, leaf["PrivateKeyPEM"].as_str().unwrap())
        .expect("cert and key load as a TLS identity");

    // Cached: same certificate on the next call.
    let again = api.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(again.json()["SerialNumber"], leaf["SerialNumber"]);
    assert_eq!(again.header("X-Cache").as_deref(), Some("HIT"));
    // The non-agent roots endpoint has the same shape.
    let roots2 = api.json("/v1/connect/ca/roots").await;
    assert_eq!(roots2["ActiveRootID"], roots["ActiveRootID"]);
    let pem = api.get("/v1/connect/ca/roots?pem=true").await;
    assert_eq!(
        pem.header("content-type").as_deref(),
        Some("application/pem-certificate-chain")
    );
    assert_eq!(pem.text, root_pems.concat());
    agent.shutdown().await;
}

#[tokio::test]
async fn authorize_follows_precedence_and_wildcards() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let td = api.json("/v1/agent/connect/ca/roots").await["TrustDomain"]
        .as_str()
        .unwrap()
        .to_string();
    let authz = |target: &'static str, source: &'static str| {
        let api = &api;
        let uri = service_uri(&td, source);
        async move {
            let resp = api
                .post("/v1/agent/connect/authorize", &authorize_body(target, &uri))
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text);
            let v = resp.json();
            (
                v["Authorized"].as_bool().unwrap(),
                v["Reason"].as_str().unwrap().to_string(),
            )
        }
    };
    // Nothing configured: ACLs are off in dev, so the default allows.
    assert_eq!(
        authz("db", "web").await,
        (true, "ACLs disabled, access is allowed by default".into())
    );

    api.ok_put(
        "/v1/connect/intentions/exact?source=*&destination=db",
        r#"{"Action": "deny"}"#,
    )
    .await;
    api.ok_put(
        "/v1/connect/intentions/exact?source=web&destination=db",
        r#"{"Action": "allow"}"#,
    )
    .await;
    api.ok_put(
        "/v1/connect/intentions/exact?source=web&destination=*",
        r#"{"Action": "deny"}"#,
    )
    .await;

    let (allowed, reason) = authz("db", "web").await;
    assert!(allowed);
    assert_eq!(
        reason,
        "Matched L4 intention: default/web => default/db (Precedence: 9, Action: ALLOW)"
    );
    let (allowed, reason) = authz("db", "api").await;
    assert!(!allowed);
    assert_eq!(
        reason,
        "Matched L4 intention: default/* => default/db (Precedence: 8, Action: DENY)"
    );
    let (allowed, reason) = authz("cache", "web").await;
    assert!(!allowed);
    assert!(
        reason.contains("default/web => default/* (Precedence: 6"),
        "{reason}"
    );
    assert!(authz("cache", "api").await.0);

    // /check agrees, and /match lists in evaluation order.
    let check = api
        .json("/v1/connect/intentions/check?source=api&destination=db")
        .await;
    assert_eq!(check, json!({"Allowed": false}));
    let matched = api
        .json("/v1/connect/intentions/match?by=destination&name=db")
        .await;
    let order: Vec<(&str, &str, i64)> = matched["db"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["SourceName"].as_str().unwrap(),
                i["DestinationName"].as_str().unwrap(),
                i["Precedence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(order, [("web", "db", 9), ("*", "db", 8), ("web", "*", 6)]);

    // Exactly one intention per pair: a second upsert replaces.
    api.ok_put(
        "/v1/connect/intentions/exact?source=web&destination=db",
        r#"{"Action": "deny"}"#,
    )
    .await;
    assert_eq!(
        api.json("/v1/connect/intentions")
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(!authz("db", "web").await.0);
    agent.shutdown().await;
}

#[tokio::test]
async fn default_deny_agent_denies_unmatched_and_says_so() {
    let agent = agent_with(|c| c.default_allow = false).await;
    let api = Api::new(&agent);
    let resp = api
        .post(
            "/v1/agent/connect/authorize",
            &authorize_body("db", "spiffe://1111.consul/ns/default/dc/dc1/svc/web"),
        )
        .await;
    assert_eq!(
        resp.header("X-Consul-Default-ACL-Policy").as_deref(),
        Some("deny")
    );
    assert_eq!(
        resp.json(),
        json!({"Authorized": false, "Reason": "Default behavior configured by ACLs"})
    );
    let allow_agent = agent_with(|_| {}).await;
    let other = Api::new(&allow_agent).get("/v1/status/leader").await;
    assert_eq!(
        other.header("X-Consul-Default-ACL-Policy").as_deref(),
        Some("allow")
    );
    agent.shutdown().await;
    allow_agent.shutdown().await;
}

#[tokio::test]
async fn root_rotation_reissues_leaves_and_keeps_old_root_trusted() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let roots = api.get("/v1/agent/connect/ca/roots").await;
    let roots_index = roots.index();
    let old_root = roots.json()["Roots"][0].clone();
    let leaf = api.json("/v1/agent/connect/ca/leaf/web").await;
    let leaf_index = leaf["ModifyIndex"].as_u64().unwrap();

    let base = agent.url();
    let leaf_waiter = {
        let base = base.clone();
        tokio::spawn(async move {
            reqwest::get(format!(
                "{base}/v1/agent/connect/ca/leaf/web?index={leaf_index}&wait=5m"
            ))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
        })
    };
    let roots_waiter = tokio::spawn(async move {
        reqwest::get(format!(
            "{base}/v1/agent/connect/ca/roots?index={roots_index}&wait=5m"
        ))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
    });
    // Rotate only once both requests are parked, so that they show the rotation woke them
    // (tests/blocking.rs covers every blocking endpoint this way).
    eventually("both blocking requests to park", || {
        let parked = agent.blocked_requests();
        let answered = leaf_waiter.is_finished() || roots_waiter.is_finished();
        async move {
            assert!(!answered, "a blocking request answered before the rotation");
            (parked == 2).then_some(())
        }
    })
    .await;
    let config = api.json("/v1/connect/ca/configuration").await;
    assert_eq!(config["Provider"], "consul");
    assert_eq!(config["Config"]["LeafCertTTL"], "72h");
    api.ok_put(
        "/v1/connect/ca/configuration",
        r#"{"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}"#,
    )
    .await;

    let roots = roots_waiter.await.unwrap();
    assert!(roots["Roots"].is_array(), "roots answer: {roots}");
    let list = roots["Roots"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let old = list
        .iter()
        .find(|r| r["ID"] == old_root["ID"])
        .expect("old root still listed");
    assert_eq!(old["Active"], false);
    let new = list
        .iter()
        .find(|r| r["Active"] == true)
        .expect("an active root");
    assert_eq!(roots["ActiveRootID"], new["ID"]);
    assert_ne!(new["ID"], old_root["ID"]);

    let new_leaf = leaf_waiter.await.unwrap();
    assert!(new_leaf["ModifyIndex"].as_u64().unwrap() > leaf_index);
    assert_ne!(new_leaf["SerialNumber"], leaf["SerialNumber"]);
    let new_root_pem = new["RootCert"].as_str().unwrap().to_string();
    let old_root_pem = old_root["RootCert"].as_str().unwrap().to_string();
    verify_chain(
        new_leaf["CertPEM"].as_str().unwrap(),
        std::slice::from_ref(&new_root_pem),
    )
    .expect("new leaf chains to the new root");
    assert!(verify_chain(
        new_leaf["CertPEM"].as_str().unwrap(),
        std::slice::from_ref(&old_root_pem)
    )
    .is_err());
    // The old leaf still verifies against the advertised set (old root kept).
    verify_chain(
        leaf["CertPEM"].as_str().unwrap(),
        &[old_root_pem, new_root_pem],
    )
    .expect("old leaf still chains while the old root is listed");
    let config = api.json("/v1/connect/ca/configuration").await;
    assert_eq!(config["Config"]["LeafCertTTL"], "24h");
    agent.shutdown().await;
}

#[tokio::test]
async fn token_is_enforced_when_required() {
    let agent = agent_with(|c| c.require_token = Some("s3cret".into())).await;
    let anonymous = Api::new(&agent);
    let body = authorize_body("db", "spiffe://1111.consul/ns/default/dc/dc1/svc/web");
    let denied = anonymous.post("/v1/agent/connect/authorize", &body).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.text,
        "Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000002' lacks permission 'service:write' on \"db\""
    );
    let wrong = Api::with_token(&agent, "nope")
        .post("/v1/agent/connect/authorize", &body)
        .await;
    assert_eq!((wrong.status, wrong.text.as_str()), (403, "ACL not found"));
    let ok = Api::with_token(&agent, "s3cret")
        .post("/v1/agent/connect/authorize", &body)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // Authorization: Bearer works too.
    tandem_certs::tls::install_default();
    let bearer = reqwest::Client::new()
        .get(format!("{}/v1/agent/connect/ca/leaf/web", agent.url()))
        .header("Authorization", "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let leaf = anonymous.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(leaf.status, 403);
    // Roots need no token (as in Consul); registration does.
    assert_eq!(
        anonymous.get("/v1/agent/connect/ca/roots").await.status,
        200
    );
    let reg = anonymous
        .put("/v1/agent/service/register", r#"{"Name":"web","Port":1}"#)
        .await;
    assert_eq!(reg.status, 403);
    // Lists are filtered rather than refused.
    let list = anonymous.get("/v1/connect/intentions").await;
    assert_eq!((list.status, list.json()), (200, json!([])));
    assert_eq!(
        list.header("X-Consul-Results-Filtered-By-ACLs").as_deref(),
        Some("true")
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn pause_refuses_connections_and_resume_forgets_local_registrations() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", WEB_WITH_SIDECAR)
        .await;
    api.ok_put(
        "/v1/connect/intentions/exact?source=web&destination=db",
        r#"{"Action":"deny"}"#,
    )
    .await;
    let td = api.json("/v1/agent/connect/ca/roots").await["TrustDomain"].clone();

    agent.pause().await;
    let refused = tokio::net::TcpStream::connect(agent.addr()).await;
    assert!(refused.is_err(), "a paused agent refuses connections");
    agent.resume().await;

    let fresh = Api::new(&agent);
    assert_eq!(fresh.json("/v1/health/connect/web").await, json!([]));
    assert_eq!(fresh.json("/v1/agent/services").await, json!({}));
    assert_eq!(
        fresh.json("/v1/agent/connect/ca/roots").await["TrustDomain"],
        td
    );
    assert_eq!(
        fresh
            .json("/v1/connect/intentions")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn ttl_checks_expire_and_update() {
    let agent = agent().await;
    let api = Api::new(&agent);
    let body = json!({"Name": "worker", "Port": 1, "Check": {"TTL": "300ms"}});
    api.ok_put("/v1/agent/service/register", &body.to_string())
        .await;
    api.ok_put("/v1/agent/check/pass/service:worker?note=ok", "")
        .await;
    let checks = api.json("/v1/agent/checks").await;
    let check = &checks["service:worker"];
    assert_eq!(check["Type"], "ttl");
    eventually("the TTL to expire", || async {
        let checks = api.json("/v1/agent/checks").await;
        (checks["service:worker"]["Status"] == "critical").then_some(())
    })
    .await;
    let checks = api.json("/v1/agent/checks").await;
    assert!(checks["service:worker"]["Output"]
        .as_str()
        .unwrap()
        .starts_with("TTL expired"));
    api.ok_put(
        "/v1/agent/check/update/service:worker",
        r#"{"Status": "warning", "Output": "slow"}"#,
    )
    .await;
    let checks = api.json("/v1/agent/checks").await;
    assert_eq!(checks["service:worker"]["Status"], "warning");
    assert_eq!(checks["service:worker"]["Output"], "slow");
    agent.shutdown().await;
}

#[tokio::test]
async fn deregistering_the_parent_removes_the_sidecar() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", WEB_WITH_SIDECAR)
        .await;
    let services = api.json("/v1/agent/services").await;
    assert_eq!(
        services["web-sidecar-proxy"]["Proxy"]["DestinationServiceID"],
        "web"
    );
    api.ok_put("/v1/agent/service/deregister/web", "").await;
    assert_eq!(api.json("/v1/agent/services").await, json!({}));
    assert_eq!(api.json("/v1/agent/checks").await, json!({}));
    agent.shutdown().await;
}

#[tokio::test]
async fn leaf_is_reissued_in_its_renewal_window() {
    // A 3 s leaf enters its renewal window (60-90 % of its life) within seconds; a blocking
    // query on its ModifyIndex returns the replacement.
    let agent = agent_with(|c| c.leaf_ttl = std::time::Duration::from_secs(3)).await;
    let api = Api::new(&agent);
    let leaf = api.json("/v1/agent/connect/ca/leaf/web").await;
    let index = leaf["ModifyIndex"].as_u64().unwrap();
    // Not expired on issue (short TTLs count from now).
    let der = pem_certs(leaf["CertPEM"].as_str().unwrap()).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.validity().is_valid(), "a fresh leaf is valid now");
    let renewed = api
        .get(&format!(
            "/v1/agent/connect/ca/leaf/web?index={index}&wait=60s"
        ))
        .await;
    assert_eq!(renewed.status, 200);
    let renewed = renewed.json();
    assert!(renewed["ModifyIndex"].as_u64().unwrap() > index);
    assert_ne!(renewed["SerialNumber"], leaf["SerialNumber"]);
    agent.shutdown().await;
}

#[tokio::test]
async fn catalog_views_list_services() {
    let agent = agent().await;
    let api = Api::new(&agent);
    api.ok_put("/v1/agent/service/register", WEB_WITH_SIDECAR)
        .await;
    let services = api.json("/v1/catalog/services").await;
    assert_eq!(services, json!({"web": [], "web-sidecar-proxy": []}));
    let nodes = api.json("/v1/catalog/service/web").await;
    assert_eq!(nodes[0]["ServiceID"], "web");
    assert_eq!(nodes[0]["Node"], "test-node");
    let mesh = api.json("/v1/catalog/connect/web").await;
    assert_eq!(mesh[0]["ServiceID"], "web-sidecar-proxy");
    assert_eq!(mesh[0]["ServiceKind"], "connect-proxy");
    agent.shutdown().await;
}

/// A tiny HTTP server answering every request with the status in `status`.
async fn status_server(
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let code = status.load(std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn http_checks_follow_the_endpoint_status() {
    use std::sync::atomic::{AtomicU16, Ordering};
    let status = std::sync::Arc::new(AtomicU16::new(200));
    let (addr, server) = status_server(status.clone()).await;
    let agent = agent().await;
    let api = Api::new(&agent);
    let url = format!("http://{addr}/health");
    let body = json!({"Name": "app", "Port": 1,
        "Check": {"HTTP": url, "Interval": "100ms", "Header": {"X-Probe": ["yes"]}}});
    api.ok_put("/v1/agent/service/register", &body.to_string())
        .await;
    let check = eventually("the HTTP check to pass", || async {
        let checks = api.json("/v1/agent/checks").await;
        let check = checks["service:app"].clone();
        (check["Status"] == "passing").then_some(check)
    })
    .await;
    assert_eq!(check["Type"], "http");
    // Consul 1.10.4 shows no Interval for a check registered with its service.
    assert_eq!(check["Interval"], "");
    assert_eq!(
        check["Output"],
        format!("HTTP GET {url}: 200 OK Output: ok")
    );
    status.store(503, Ordering::SeqCst);
    eventually("the HTTP check to fail", || async {
        let checks = api.json("/v1/agent/checks").await;
        (checks["service:app"]["Status"] == "critical").then_some(())
    })
    .await;
    status.store(429, Ordering::SeqCst);
    eventually("the HTTP check to warn", || async {
        let checks = api.json("/v1/agent/checks").await;
        (checks["service:app"]["Status"] == "warning").then_some(())
    })
    .await;
    agent.shutdown().await;
    server.abort();
}

/// Names real Consul accepts (dots, upper case, underscores): registrable, with a leaf for
/// that exact name and intentions that decide for it.
#[tokio::test]
async fn dotted_and_upper_case_service_names_work_like_consul() {
    let agent = agent().await;
    let api = Api::new(&agent);
    for name in ["web.v2", "Web_UPPER", "a.b"] {
        let body = json!({"Name": name, "Port": 8080});
        api.ok_put("/v1/agent/service/register", &body.to_string())
            .await;
        assert_eq!(
            api.json(&format!("/v1/agent/service/{name}")).await["Service"],
            name
        );
        let leaf = api.json(&format!("/v1/agent/connect/ca/leaf/{name}")).await;
        assert_eq!(leaf["Service"], name);
        assert!(
            leaf["ServiceURI"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/svc/{name}")),
            "{leaf}"
        );
        api.ok_put(
            &format!("/v1/connect/intentions/exact?source=client&destination={name}"),
            r#"{"Action": "deny"}"#,
        )
        .await;
        let check = api
            .json(&format!(
                "/v1/connect/intentions/check?source=client&destination={name}"
            ))
            .await;
        assert_eq!(check["Allowed"], false, "{name}");
    }
    agent.shutdown().await;
}
