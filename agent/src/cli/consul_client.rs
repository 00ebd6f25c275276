//! A small client for Consul's public HTTP API, configured the way the consul CLI is
//! (`CONSUL_HTTP_ADDR` with or without a scheme, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`),
//! with the Go client's error texts.

use std::fmt;

use reqwest::Method;
use serde_json::Value;

/// Where the consul CLI finds its agent when nothing is configured.
const DEFAULT_ADDR: &str = "127.0.0.1:8500";

pub(crate) struct ConsulClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// What went wrong on a call, worded as the Go `api` package words it.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The request never got an answer: `Put "http://...": dial tcp ...`.
    Transport(String),
    /// A non-200 answer: `Unexpected response code: 500 (body)`.
    Status { code: u16, body: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport(text) => f.write_str(text),
            ClientError::Status { code, body } => {
                write!(f, "Unexpected response code: {code} ({body})")
            }
        }
    }
}

impl ConsulClient {
    /// `addr` as in `CONSUL_HTTP_ADDR` (`host:port`, `http://host:port`, `https://...`).
    pub(crate) fn new(addr: Option<&str>, token: Option<String>) -> Result<Self, String> {
        let addr = addr.filter(|a| !a.is_empty()).unwrap_or(DEFAULT_ADDR);
        let base = match addr.split_once("://") {
            None => format!("http://{addr}"),
            Some(("http" | "https", _)) => addr.to_string(),
            Some((scheme, _)) => return Err(format!("Unknown protocol scheme: {scheme}")),
        };
        let base = base.trim_end_matches('/').to_string();
        url::Url::parse(&base).map_err(|e| format!("invalid address {addr:?}: {e}"))?;
        tandem_certs::tls::install_default();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(ConsulClient {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// Reads `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN` and `CONSUL_HTTP_TOKEN_FILE`; explicit
    /// `-http-addr`/`-token`/`-token-file` values win.
    pub(crate) fn from_env(
        addr: Option<String>,
        token: Option<String>,
        token_file: Option<String>,
    ) -> Result<Self, String> {
        let addr = addr.or_else(|| std::env::var("CONSUL_HTTP_ADDR").ok());
        let token_file = token_file.or_else(|| std::env::var("CONSUL_HTTP_TOKEN_FILE").ok());
        let token = match (token, token_file.filter(|f| !f.is_empty())) {
            (Some(t), _) => Some(t),
            (None, Some(file)) => Some(
                std::fs::read_to_string(&file)
                    .map_err(|e| format!("Error loading token file {file}: {e}"))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => std::env::var("CONSUL_HTTP_TOKEN").ok(),
        };
        ConsulClient::new(addr.as_deref(), token)
    }

    /// One API call; `Ok` only for 200. `Ok(None)` for a 404 when `not_found_ok`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        not_found_ok: bool,
    ) -> Result<Option<Value>, ClientError> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&method, &url, &e))?;
        let code = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| transport_error(&method, &url, &e))?;
        if code == 404 && not_found_ok {
            return Ok(None);
        }
        if code != 200 {
            return Err(ClientError::Status {
                code,
                body: text.trim().to_string(),
            });
        }
        if text.trim().is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ClientError::Transport(format!("invalid JSON from {url}: {e}")))
    }
}

fn transport_error(method: &Method, url: &url::Url, error: &reqwest::Error) -> ClientError {
    let verb = method.as_str();
    let verb = format!("{}{}", &verb[..1], verb[1..].to_ascii_lowercase());
    let cause = if error.is_connect() {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        format!("dial tcp {host}:{port}: connect: connection refused")
    } else {
        error.to_string()
    };
    ClientError::Transport(format!("{verb} \"{url}\": {cause}"))
}
