//! The tasks behind checks: TCP and HTTP probes at their interval, TTL expiry.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{limit_output, CheckKind, HttpProbe, CRITICAL, DEFAULT_TIMEOUT, PASSING, WARNING};
use crate::state::Agent;

/// A task that is aborted when its owner drops this handle.
#[derive(Debug)]
pub(crate) struct OwnedTask(JoinHandle<()>);

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the task that drives `check_id` (TCP probing or TTL expiry); `None` for checks that
/// are evaluated inline (alias, serf).
pub(crate) fn spawn_runner(
    agent: &Arc<Agent>,
    check_id: &str,
    kind: &CheckKind,
) -> Option<OwnedTask> {
    let weak = Arc::downgrade(agent);
    let id = check_id.to_string();
    match kind.clone() {
        CheckKind::Tcp {
            address,
            interval,
            timeout,
        } => {
            let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
            let probe = Probe::Tcp { address, timeout };
            Some(spawn_interval(weak, id, interval, probe))
        }
        CheckKind::Http {
            probe,
            interval,
            timeout,
        } => {
            let client = match http_client(&probe, timeout.unwrap_or(DEFAULT_TIMEOUT)) {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(check.id = %id, error = %e, "cannot build the HTTP check client");
                    return None;
                }
            };
            let probe = Probe::Http { client, probe };
            Some(spawn_interval(weak, id, interval, probe))
        }
        CheckKind::Ttl(_) => Some(OwnedTask(tokio::spawn(async move {
            loop {
                let Some(agent) = weak.upgrade() else { return };
                let Some((deadline, reset)) = agent.read(|state| state.catalog.ttl_timer(&id))
                else {
                    return;
                };
                drop(agent);
                match deadline {
                    Some(deadline) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => {
                                let Some(agent) = weak.upgrade() else { return };
                                agent.write(|state, tx| state.catalog.expire_ttl(&id, tx));
                            }
                            _ = reset.notified() => {}
                        }
                    }
                    None => reset.notified().await,
                }
            }
        }))),
        CheckKind::Alias { .. } | CheckKind::Serf => None,
    }
}

/// What an interval check does each round.
enum Probe {
    Tcp {
        address: String,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        probe: HttpProbe,
    },
}

impl Probe {
    async fn run(&self) -> (&'static str, String) {
        match self {
            Probe::Tcp { address, timeout } => probe_tcp(address, *timeout).await,
            Probe::Http { client, probe } => probe_http(client, probe).await,
        }
    }
}

/// Runs `probe` now and then every `interval`, recording each result on check `id`, until the
/// agent is gone or the returned handle is dropped.
fn spawn_interval(weak: Weak<Agent>, id: String, interval: Duration, probe: Probe) -> OwnedTask {
    OwnedTask(tokio::spawn(async move {
        loop {
            let (status, output) = probe.run().await;
            let Some(agent) = weak.upgrade() else { return };
            agent.write(|state, tx| {
                state.catalog.set_check_result(&id, status, &output, tx);
            });
            drop(agent);
            tokio::time::sleep(interval).await;
        }
    }))
}

async fn probe_tcp(address: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => (PASSING, format!("TCP connect {address}: Success")),
        Ok(Err(e)) => (
            CRITICAL,
            format!("dial tcp {address}: {}", go_dial_error(&e)),
        ),
        Err(_) => (CRITICAL, format!("dial tcp {address}: i/o timeout")),
    }
}

fn http_client(probe: &HttpProbe, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    let redirects = if probe.disable_redirects {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::limited(10)
    };
    tandem_certs::tls::install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(redirects)
        .danger_accept_invalid_certs(probe.tls_skip_verify)
        .user_agent("Consul Health Check")
        .build()
}

/// Consul's HTTP check: 2xx passing, 429 warning, anything else critical; the output names the
/// request and carries the (truncated) body.
async fn probe_http(client: &reqwest::Client, probe: &HttpProbe) -> (&'static str, String) {
    let method =
        reqwest::Method::from_bytes(probe.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client
        .request(method.clone(), &probe.url)
        .header("Accept", "text/plain, text/*, */*");
    for (name, value) in &probe.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if !probe.body.is_empty() {
        request = request.body(probe.body.clone());
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let verb = method.as_str();
            let verb = format!("{}{}", &verb[..1], verb[1..].to_ascii_lowercase());
            return (CRITICAL, format!("{verb} \"{}\": {e}", probe.url));
        }
    };
    let code = response.status();
    let body = response.text().await.unwrap_or_default();
    let status = if code.is_success() {
        PASSING
    } else if code.as_u16() == 429 {
        WARNING
    } else {
        CRITICAL
    };
    let output = format!(
        "HTTP {} {}: {} Output: {}",
        probe.method,
        probe.url,
        code,
        limit_output(&body)
    );
    (status, output)
}

fn go_dial_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        _ => error.to_string(),
    }
}
