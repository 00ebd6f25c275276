//! Shared harness for the integration tests: the real `tandem-agent` dev agent in-process,
//! proxies on 127.0.0.1:0, small TCP/HTTP apps, and waiting for conditions with a deadline.
#![allow(dead_code)] // each test file uses a different part of the harness
#![allow(unreachable_pub)] // a test harness, not API: `pub` only shares it between the test files

use std::future::Future;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_proxy::{Config, Proxy, ServiceName, Upstream, UpstreamList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn agent(default_allow: bool) -> tandem_agent::DevAgent {
    init_tracing();
    tandem_agent::start(tandem_agent::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        default_allow,
        ..Default::default()
    })
    .await
    .expect("dev agent starts")
}

pub fn name(s: &str) -> ServiceName {
    s.parse().unwrap()
}

/// A proxy configuration for `service` against `agent`, on loopback with port 0 everywhere.
pub fn config(agent_url: &str, service: &str) -> Config {
    let mut c = Config::new(name(service));
    c.consul_http_addr = Some(agent_url.to_string());
    c.advertise_address = Some("127.0.0.1".parse().unwrap());
    c.service_id = Some(service.to_string());
    c.retry_max = Duration::from_millis(300);
    c.registration_check_interval = Duration::from_millis(200);
    c.handshake_timeout = Duration::from_secs(5);
    c
}

/// A server-side proxy for `service` (instance `id`) in front of the app on `app_port`.
pub async fn server_proxy(agent_url: &str, service: &str, id: &str, app_port: u16) -> Proxy {
    server_proxy_with(agent_url, service, id, app_port, |_| {}).await
}

/// [`server_proxy`] with `tweak` applied to its configuration first.
pub async fn server_proxy_with(
    agent_url: &str,
    service: &str,
    id: &str,
    app_port: u16,
    tweak: impl FnOnce(&mut Config),
) -> Proxy {
    let mut c = config(agent_url, service);
    c.service_id = Some(id.to_string());
    c.service_port = Some(app_port);
    tweak(&mut c);
    tandem_proxy::start(c).await.expect("server proxy starts")
}

/// A client-side proxy for `service` with one upstream listener (port 0) for `upstream`.
pub async fn client_proxy(agent_url: &str, service: &str, upstream: &str) -> Proxy {
    client_proxy_with(agent_url, service, upstream, |_| {}).await
}

/// [`client_proxy`] with `tweak` applied to its configuration first.
pub async fn client_proxy_with(
    agent_url: &str,
    service: &str,
    upstream: &str,
    tweak: impl FnOnce(&mut Config),
) -> Proxy {
    let mut c = config(agent_url, service);
    c.upstreams = UpstreamList(vec![Upstream::new(name(upstream), 0, None)]);
    tweak(&mut c);
    tandem_proxy::start(c).await.expect("client proxy starts")
}

/// An HTTP server that answers every request with `body` and closes; counts requests.
pub async fn http_app(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, hits)
}

/// A TCP app that echoes every byte back until the caller closes.
pub async fn echo_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// What an HTTP/1.0 GET to `addr` returns: the response body, or "" for an empty reply
/// (what curl reports as exit 52).
pub async fn get(addr: SocketAddr) -> String {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await
    else {
        return String::new();
    };
    if s.write_all(b"GET / HTTP/1.0\r\nhost: test\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => String::new(),
    }
}

/// Waits until `f` returns true, polling; panics with `what` after the deadline.
pub async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > until {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn http() -> reqwest::Client {
    tandem_certs::tls::install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `PUT /v1/connect/intentions/exact` on the agent (as `consul intention create`).
pub async fn set_intention(agent_url: &str, source: &str, destination: &str, action: &str) {
    let r = http()
        .put(format!(
            "{agent_url}/v1/connect/intentions/exact?source={source}&destination={destination}"
        ))
        .json(&serde_json::json!({ "Action": action }))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "intention upsert failed: {}",
        r.status()
    );
}

/// `DELETE /v1/connect/intentions/exact` on the agent.
pub async fn delete_intention(agent_url: &str, source: &str, destination: &str) {
    let r = http()
        .delete(format!(
            "{agent_url}/v1/connect/intentions/exact?source={source}&destination={destination}"
        ))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "intention delete failed: {}",
        r.status()
    );
}

/// `GET <url>` returning status and body.
pub async fn http_get(url: &str) -> (u16, String) {
    match http().get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// `PUT <url>` with a JSON body.
pub async fn http_put(url: &str, body: serde_json::Value) -> u16 {
    http()
        .put(url)
        .json(&body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `DELETE <url>`.
pub async fn http_delete(url: &str) -> u16 {
    http()
        .delete(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `POST <url>`.
pub async fn http_post(url: &str) -> u16 {
    http()
        .post(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Healthy mesh instances of `service` as the agent reports them.
pub async fn passing_instances(agent_url: &str, service: &str) -> usize {
    let (status, body) = http_get(&format!(
        "{agent_url}/v1/health/connect/{service}?passing=1"
    ))
    .await;
    if status != 200 {
        return 0;
    }
    serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .map(|v| v.len())
        .unwrap_or(0)
}

/// Parses `/metrics` with a Prometheus text-format parser; returns the sum of the samples
/// of `name` whose labels include every `(key, value)` of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

pub async fn metrics(proxy: &Proxy) -> String {
    let (status, body) = http_get(&format!("http://{}/metrics", proxy.admin_addr())).await;
    assert_eq!(status, 200);
    body
}

/// A client looping HTTP GETs through `upstream` until stopped; counts successes and failures.
pub struct Traffic {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(upstream: std::net::SocketAddr, expected: &'static str) -> Traffic {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, f, s) = (ok.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let body = get(upstream).await;
                if body == expected {
                    o.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                    eprintln!("traffic: unexpected reply {body:?}");
                }
            }
        });
        Traffic {
            ok,
            failed,
            stop,
            task,
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits for `n` more successful connections.
    pub async fn more(&self, n: usize) {
        let target = self.ok() + n;
        wait_for("more successful connections", || async {
            self.ok() >= target
        })
        .await;
    }

    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

pub async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && buf == msg
}

/// What the misbehaving agent does with a call whose path starts with a rule's prefix.
#[derive(Debug, Clone)]
pub enum Misbehavior {
    /// This status and body at once, as a Consul agent with trouble answers.
    Status(u16, &'static str),
    /// 200 with a body that is not JSON, and an index that moved on.
    Garbage,
    /// Forwards after this long.
    Slow(Duration),
    /// Closes the connection without an answer (a blocking query reset).
    Reset,
    /// Answers what `base` answers for `path` (another agent, another service's leaf), without
    /// the blocking parameters, as if the index moved on.
    From { base: String, path: String },
    /// Forwards, but the index in the answer has gone back to 1.
    IndexBack,
}

/// An agent in front of a real one that forwards every call as it came, except those a rule
/// picks (by path prefix); the rules can change while the proxies run.
pub struct MisbehavingAgent {
    pub url: String,
    rules: Arc<std::sync::Mutex<Vec<(String, Misbehavior)>>>,
    /// Fired when the rules change: every call in flight (a blocking query) is reset, so the
    /// next one meets the new rules.
    changed: Arc<tokio::sync::Notify>,
}

impl MisbehavingAgent {
    /// Starts one in front of `agent_url`, forwarding everything.
    pub async fn start(agent_url: &str) -> MisbehavingAgent {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = agent_url.trim_end_matches('/').to_string();
        let rules: Arc<std::sync::Mutex<Vec<(String, Misbehavior)>>> = Arc::default();
        let changed = Arc::new(tokio::sync::Notify::new());
        let (shared, notify) = (rules.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (upstream, rules, notify) = (upstream.clone(), shared.clone(), notify.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (upstream, rules, notify) =
                                (upstream.clone(), rules.clone(), notify.clone());
                            let reset = async move {
                                notify.notified().await;
                                Err::<hyper::Response<Full<Bytes>>, _>(std::io::Error::other(
                                    "the rules changed",
                                ))
                            };
                            let answer = async move {
                                let path = req.uri().path().to_string();
                                let target = req
                                    .uri()
                                    .path_and_query()
                                    .map_or("/", |p| p.as_str())
                                    .to_string();
                                let rule = rules
                                    .lock()
                                    .unwrap()
                                    .iter()
                                    .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                                    .map(|(_, m)| m.clone());
                                let mut url = format!("{upstream}{target}");
                                let mut index_back = false;
                                let mut moved_on = false;
                                match rule {
                                    Some(Misbehavior::Status(code, body)) => {
                                        let mut answer =
                                            hyper::Response::new(Full::new(Bytes::from(body)));
                                        *answer.status_mut() =
                                            hyper::StatusCode::from_u16(code).unwrap();
                                        return Ok(answer);
                                    }
                                    Some(Misbehavior::Garbage) => {
                                        let answer = hyper::Response::builder()
                                            .header("X-Consul-Index", "999999")
                                            .header("Content-Type", "application/json")
                                            .body(Full::new(Bytes::from_static(
                                                b"\x00{\"Roots\": [tru",
                                            )))
                                            .unwrap();
                                        return Ok(answer);
                                    }
                                    Some(Misbehavior::Reset) => {
                                        return Err(std::io::Error::other("reset by the test"));
                                    }
                                    Some(Misbehavior::Slow(d)) => tokio::time::sleep(d).await,
                                    Some(Misbehavior::From { base, path }) => {
                                        url = format!("{base}{path}");
                                        moved_on = true;
                                    }
                                    Some(Misbehavior::IndexBack) => index_back = true,
                                    None => {}
                                }
                                let method = req.method().clone();
                                let headers = req.headers().clone();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map_err(std::io::Error::other)?
                                    .to_bytes();
                                let sent = http()
                                    .request(method, url)
                                    .headers(headers)
                                    .body(body)
                                    .send()
                                    .await
                                    .map_err(std::io::Error::other)?;
                                let mut answer = hyper::Response::builder().status(sent.status());
                                for (k, v) in sent.headers() {
                                    // The body is sent whole: hyper sets its own framing.
                                    let framing = matches!(
                                        k.as_str(),
                                        "content-length" | "transfer-encoding" | "connection"
                                    );
                                    let index = k.as_str().eq_ignore_ascii_case("x-consul-index");
                                    if !framing && !(index && (index_back || moved_on)) {
                                        answer = answer.header(k, v);
                                    }
                                }
                                if index_back {
                                    answer = answer.header("X-Consul-Index", "1");
                                } else if moved_on {
                                    answer = answer.header("X-Consul-Index", "999999");
                                }
                                let body = sent.bytes().await.unwrap_or_default();
                                Ok(answer.body(Full::new(body)).unwrap())
                            };
                            async move {
                                tokio::select! {
                                    answered = answer => answered,
                                    reset = reset => reset,
                                }
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MisbehavingAgent {
            url,
            rules,
            changed,
        }
    }

    /// From now on, calls whose path starts with `prefix` get `what` (replacing a rule for the
    /// same prefix).
    pub fn set(&self, prefix: &str, what: Misbehavior) {
        let mut rules = self.rules.lock().unwrap();
        rules.retain(|(p, _)| p != prefix);
        rules.push((prefix.to_string(), what));
        drop(rules);
        self.changed.notify_waiters();
    }

    /// Forwards everything again.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
        self.changed.notify_waiters();
    }
}

/// The proxy binary, running, with the addresses its ready line gave.
pub struct Running {
    pub child: std::process::Child,
    pub public: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// A test that fails must not leave its proxy running: it would keep the port, and the test
/// runner's output pipe open (so `cargo test | ...` never ends).
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and reads its "tandem-proxy ready ..." line.
pub fn spawn(args: &[&str]) -> Running {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-proxy"));
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (k, _) in std::env::vars() {
        if k.starts_with("TANDEM_") || k.starts_with("CONSUL_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("the proxy binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the proxy prints its ready line");
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(
        line.starts_with("tandem-proxy ready"),
        "unexpected first line: {line:?}"
    );
    Running {
        public: field("public=").parse().ok(),
        admin: field("admin=").parse().unwrap(),
        child,
    }
}

/// Starts the binary as `static-server` in front of `app`, with the agent at `url`, its
/// listeners on free ports and the `extra` flags.
pub fn spawn_server(url: &str, app: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "--service",
        "static-server",
        "--service-port",
        app,
        "--public-listener",
        "127.0.0.1:0",
        "--admin-listener",
        "127.0.0.1:0",
        "--advertise-address",
        "127.0.0.1",
        "--consul-http-addr",
        url,
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// Sends SIGTERM to the running binary.
pub fn sigterm(proxy: &Running) {
    let pid = proxy.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits for the process to exit, up to `limit`; returns its exit code.
pub async fn exit_code(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
