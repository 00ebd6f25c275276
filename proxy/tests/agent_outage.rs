//! The agent stopped and restarted mid-traffic, and a start-up that waits for an agent that is down.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stopped_and_restarted_mid_traffic() {
    let agent = agent(true).await;
    let url = agent.url();
    let (app_port, _) = http_app("hello world").await;
    let server = server_proxy(&url, "static-server", "static-server", app_port).await;
    let client = client_proxy(&url, "static-client", "static-server").await;
    let traffic = Traffic::start(
        client.upstream_addr("static-server").unwrap(),
        "hello world",
    );
    traffic.more(5).await;

    agent.pause().await;
    traffic.more(20).await;
    wait_for("staleness to show in the metrics", || async {
        let m = metrics(&client).await;
        metric(&m, "tandem_agent_watch_errors_total", &[]) >= 1.0
            && metric(&m, "tandem_agent_watch_staleness_seconds", &[]) > 0.0
    })
    .await;
    assert_eq!(
        http_get(&format!("http://{}/ready", server.admin_addr()))
            .await
            .0,
        200,
        "still ready: serving from the last good state"
    );

    // The restarted agent has forgotten every registration; the proxies register again.
    agent.resume().await;
    wait_for("the services to be registered again", || async {
        http_get(&format!(
            "{url}/v1/agent/service/static-server-sidecar-proxy"
        ))
        .await
        .0 == 200
            && http_get(&format!("{url}/v1/agent/service/static-server"))
                .await
                .0
                == 200
            && http_get(&format!("{url}/v1/agent/service/static-client"))
                .await
                .0
                == 200
    })
    .await;
    wait_for("the server to be discoverable again", || async {
        passing_instances(&url, "static-server").await == 1
    })
    .await;
    traffic.more(10).await;
    let (ok, failed) = traffic.finish().await;
    assert_eq!(
        failed, 0,
        "no connection failed while the agent was away ({ok} succeeded)"
    );
    let m = metrics(&server).await;
    assert!(metric(&m, "tandem_registrations_total", &[]) >= 2.0, "{m}");
    wait_for("staleness to return to 0", || async {
        let m = metrics(&client).await;
        let stale = metric(&m, "tandem_agent_watch_staleness_seconds", &[]);
        if stale > 0.0 {
            eprintln!(
                "{}",
                m.lines()
                    .filter(|l| l.starts_with("tandem_agent_watch_staleness"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        stale == 0.0
    })
    .await;
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_an_agent_that_is_down() {
    let agent = agent(true).await;
    let url = agent.url();
    agent.pause().await;
    let (app_port, _) = http_app("hello world").await;
    let mut c = config(&url, "static-server");
    c.service_port = Some(app_port);
    let starting = tokio::spawn(tandem_proxy::start(c));
    // Not up while the agent is down...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!starting.is_finished(), "start-up waits for the agent");
    // ...and up once it is back.
    agent.resume().await;
    let server = tokio::time::timeout(DEADLINE, starting)
        .await
        .expect("starts once the agent is back")
        .unwrap()
        .unwrap();
    assert_eq!(
        http_get(&format!("http://{}/ready", server.admin_addr()))
            .await
            .0,
        200
    );
    assert_eq!(
        http_get(&format!(
            "{url}/v1/agent/service/static-server-sidecar-proxy"
        ))
        .await
        .0,
        200
    );
    server.shutdown().await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_start_up_removes_its_registrations() {
    let agent = agent(true).await;
    // Registration works; the intentions never come, so start-up stops just after registering.
    let misbehaving = MisbehavingAgent::start(&agent.url()).await;
    misbehaving.set(
        "/v1/connect/intentions/match",
        Misbehavior::Status(500, "rpc error: injected"),
    );
    let url = misbehaving.url.clone();
    let (app_port, _) = http_app("hello world").await;
    let mut c = config(&url, "static-server");
    c.service_port = Some(app_port);
    let settings = c.resolve(&|_| None).unwrap();
    let interrupt = tokio_util::sync::CancellationToken::new();
    let starting = tokio::spawn(tandem_proxy::start_with(settings, interrupt.clone()));
    let sidecar = format!(
        "{}/v1/agent/service/static-server-sidecar-proxy",
        agent.url()
    );
    wait_for("the sidecar registered", || async {
        http_get(&sidecar).await.0 == 200
    })
    .await;
    assert!(!starting.is_finished(), "start-up waits for the intentions");

    interrupt.cancel();
    let result = tokio::time::timeout(DEADLINE, starting)
        .await
        .expect("an interrupted start-up ends")
        .unwrap();
    assert!(
        matches!(result, Err(tandem_proxy::StartError::Stopped)),
        "{result:?}"
    );
    assert_eq!(
        http_get(&sidecar).await.0,
        404,
        "the sidecar is deregistered"
    );
    let service = format!("{}/v1/agent/service/static-server", agent.url());
    assert_eq!(
        http_get(&service).await.0,
        404,
        "the service is deregistered"
    );
    agent.shutdown().await;
}
