//! The ACL token read from a file and sent with every request.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_is_read_and_sent() {
    init_tracing();
    let agent = tandem_agent::start(tandem_agent::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        require_token: Some("s3cr3t".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = agent.url();
    let file = std::env::temp_dir().join(format!("tandem-proxy-test-token-{}", std::process::id()));
    std::fs::write(&file, "s3cr3t\n").unwrap();
    let (app_port, _) = http_app("hello world").await;
    let mut c = config(&url, "static-server");
    c.service_port = Some(app_port);
    c.token_file = Some(file.clone());
    let server = tandem_proxy::start(c).await.unwrap();
    let mut c = config(&url, "static-client");
    c.token = Some("s3cr3t".into());
    c.upstreams = tandem_proxy::UpstreamList(vec![tandem_proxy::Upstream::new(
        name("static-server"),
        0,
        None,
    )]);
    let client = tandem_proxy::start(c).await.unwrap();
    wait_for("the seed GET with ACL tokens", || async {
        get(client.upstream_addr("static-server").unwrap()).await == "hello world"
    })
    .await;
    std::fs::remove_file(&file).ok();
    server.shutdown().await;
    client.shutdown().await;
    agent.shutdown().await;
}
