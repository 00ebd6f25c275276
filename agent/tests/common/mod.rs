//! Helpers shared by the integration tests: an in-process agent on 127.0.0.1:0 and a small
//! HTTP client that keeps status, headers and raw text.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::time::Duration;

use serde_json::Value;
use tandem_agent::{Config, DevAgent};

pub(crate) async fn agent() -> DevAgent {
    agent_with(|_| {}).await
}

pub(crate) async fn agent_with(tweak: impl FnOnce(&mut Config)) -> DevAgent {
    let mut config = Config {
        http_addr: "127.0.0.1:0".parse().expect("literal socket address"),
        node_name: "test-node".into(),
        ..Config::default()
    };
    tweak(&mut config);
    tandem_agent::start(config)
        .await
        .expect("the dev agent starts")
}

#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub(crate) fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .expect("X-Consul-Index is set")
            .parse()
            .expect("X-Consul-Index is a number")
    }
}

pub(crate) struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub(crate) fn new(agent: &DevAgent) -> Self {
        tandem_certs::tls::install_default();
        Api {
            base: agent.url(),
            client: reqwest::Client::new(),
            token: None,
        }
    }

    pub(crate) fn with_token(agent: &DevAgent, token: &str) -> Self {
        Api {
            token: Some(token.to_string()),
            ..Api::new(agent)
        }
    }

    pub(crate) async fn send(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.expect("the agent answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("a readable body");
        Resp {
            status,
            headers,
            text,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None).await
    }

    pub(crate) async fn put(&self, path: &str, body: &str) -> Resp {
        self.send("PUT", path, Some(body)).await
    }

    pub(crate) async fn post(&self, path: &str, body: &str) -> Resp {
        self.send("POST", path, Some(body)).await
    }

    /// GET that must answer 200 with JSON.
    pub(crate) async fn json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.text);
        resp.json()
    }

    /// PUT that must answer 200.
    pub(crate) async fn ok_put(&self, path: &str, body: &str) -> Resp {
        let resp = self.put(path, body).await;
        assert_eq!(resp.status, 200, "PUT {path}: {}", resp.text);
        resp
    }
}

/// Polls `check` until it returns `Some`, failing after a generous deadline.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn authorize_body(target: &str, uri: &str) -> String {
    serde_json::json!({"Target": target, "ClientCertURI": uri, "ClientCertSerial": "01"})
        .to_string()
}

pub(crate) fn service_uri(trust_domain: &str, service: &str) -> String {
    format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/{service}")
}
