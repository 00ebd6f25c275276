//! `tandem-agent intention ...` run as a process against the in-process agent: output text and
//! exit codes as `consul intention` gives them, configured through CONSUL_HTTP_ADDR/TOKEN.

mod common;

use common::agent_with;
use tandem_agent::DevAgent;

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(addr: &str, token: Option<&str>, args: &[&str]) -> Outcome {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem-agent"));
    cmd.arg("intention")
        .args(args)
        .env("CONSUL_HTTP_ADDR", addr);
    cmd.env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE");
    if let Some(token) = token {
        cmd.env("CONSUL_HTTP_TOKEN", token);
    }
    let out = cmd.output().await.expect("the tandem-agent binary runs");
    Outcome {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `host:port` without a scheme, as CONSUL_HTTP_ADDR is often written.
fn bare(agent: &DevAgent) -> String {
    agent.addr().to_string()
}

#[tokio::test]
async fn create_get_check_list_delete() {
    let agent = agent_with(|_| {}).await;
    let addr = bare(&agent);

    let empty = run(&addr, None, &["list"]).await;
    assert_eq!(
        (empty.code, empty.stderr.as_str()),
        (2, "There are no intentions.\n")
    );

    let created = run(&addr, None, &["create", "web", "db"]).await;
    assert_eq!(
        (created.code, created.stdout.as_str()),
        (0, "Created: web => db (allow)\n")
    );

    let duplicate = run(&addr, None, &["create", "-deny", "web", "db"]).await;
    assert_eq!(duplicate.code, 1);
    assert!(
        duplicate.stderr.starts_with(
            "Error creating intention \"web => db (deny)\": Unexpected response code: 500 (duplicate intention found: default/web => default/db (ID: "
        ),
        "{}",
        duplicate.stderr
    );

    // -replace keeps one intention per pair and prints nothing, like consul.
    let replaced = run(&addr, None, &["create", "-deny", "-replace", "web", "db"]).await;
    assert_eq!(
        (replaced.code, replaced.stdout.as_str()),
        (0, ""),
        "{}",
        replaced.stderr
    );

    let denied = run(&format!("http://{addr}"), None, &["check", "web", "db"]).await;
    assert_eq!((denied.code, denied.stdout.as_str()), (1, "Denied\n"));
    let allowed = run(&addr, None, &["check", "api", "db"]).await;
    assert_eq!((allowed.code, allowed.stdout.as_str()), (0, "Allowed\n"));

    let got = run(&addr, None, &["get", "web", "db"]).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    let lines: Vec<&str> = got.stdout.lines().collect();
    assert_eq!(lines[0], "Source:       web");
    assert_eq!(lines[1], "Destination:  db");
    assert_eq!(lines[2], "Action:       deny");
    assert!(lines[3].starts_with("ID:           "), "{lines:?}");
    assert!(lines[4].starts_with("Created At:   "), "{lines:?}");

    run(&addr, None, &["create", "-deny", "*", "db"]).await;
    let list = run(&addr, None, &["list"]).await;
    assert_eq!(list.code, 0);
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["ID", "Source", "Action", "Destination", "Precedence"]
    );
    assert_eq!(&rows[1][1..], ["web", "deny", "db", "9"]);
    assert_eq!(&rows[2][1..], ["*", "deny", "db", "8"]);

    let matched = run(&addr, None, &["match", "db"]).await;
    assert_eq!(matched.stdout, "web => db (deny)\n* => db (deny)\n");

    let deleted = run(&addr, None, &["delete", "web", "db"]).await;
    assert_eq!(
        (deleted.code, deleted.stdout.as_str()),
        (0, "Intention deleted.\n")
    );
    let missing = run(&addr, None, &["get", "web", "db"]).await;
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        "Intention not found with source \"web\" and destination \"db\"\n"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn usage_errors_and_unreachable_agent() {
    let agent = agent_with(|_| {}).await;
    let addr = bare(&agent);
    let bogus = run(&addr, None, &["create", "-bogus", "web", "db"]).await;
    assert_eq!(bogus.code, 1);
    assert!(
        bogus
            .stderr
            .starts_with("flag provided but not defined: -bogus\n"),
        "{}",
        bogus.stderr
    );
    let both = run(&addr, None, &["create", "-allow", "-deny", "web", "db"]).await;
    assert_eq!(
        (both.code, both.stderr.as_str()),
        (1, "Only one of -allow or -deny may be specified.\n")
    );
    let meta = run(&addr, None, &["create", "-meta", "owner", "web", "db"]).await;
    assert_eq!(meta.code, 1);
    assert!(
        meta.stderr.starts_with(
            "invalid value \"owner\" for flag -meta: Missing \"=\" value in argument: owner\n"
        ),
        "{}",
        meta.stderr
    );
    let none = run(&addr, None, &["list"]).await;
    assert_eq!(
        (none.code, none.stderr.as_str()),
        (2, "There are no intentions.\n"),
        "a refused create creates nothing"
    );
    let one_arg = run(&addr, None, &["create", "web"]).await;
    assert_eq!(
        (one_arg.code, one_arg.stderr.as_str()),
        (
            1,
            "Error: Must specify two arguments: source and destination\n"
        )
    );
    let check_args = run(&addr, None, &["check", "web"]).await;
    assert_eq!(
        (check_args.code, check_args.stderr.as_str()),
        (
            2,
            "Error: command requires exactly two arguments: src and dst\n"
        )
    );

    // A stopped agent: the Go client's connection error text, exit 2 for check.
    let stopped = agent.addr();
    agent.shutdown().await;
    let down = run(&stopped.to_string(), None, &["check", "web", "db"]).await;
    assert_eq!(down.code, 2);
    assert_eq!(
        down.stderr,
        format!(
            "Error checking the connection: Get \"http://{stopped}/v1/connect/intentions/check?source=web&destination=db&source-type=consul\": dial tcp {stopped}: connect: connection refused\n"
        )
    );
}

#[tokio::test]
async fn token_comes_from_consul_http_token() {
    let agent = agent_with(|c| c.require_token = Some("s3cret".into())).await;
    let addr = bare(&agent);
    let refused = run(&addr, None, &["create", "web", "db"]).await;
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.stderr,
        "Error creating intention \"web => db (allow)\": Unexpected response code: 403 (Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000002' lacks permission 'intentions:write' on \"db\")\n"
    );
    let wrong = run(&addr, Some("nope"), &["check", "web", "db"]).await;
    assert_eq!(wrong.code, 2);
    assert!(
        wrong
            .stderr
            .ends_with("Unexpected response code: 403 (ACL not found)\n"),
        "{}",
        wrong.stderr
    );
    let ok = run(&addr, Some("s3cret"), &["create", "web", "db"]).await;
    assert_eq!(
        (ok.code, ok.stdout.as_str()),
        (0, "Created: web => db (allow)\n"),
        "{}",
        ok.stderr
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn create_from_files() {
    let agent = agent_with(|_| {}).await;
    let addr = bare(&agent);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-files-{}", agent.addr().port()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("api-db.json");
    std::fs::write(
        &plain,
        r#"{"SourceName": "api", "DestinationName": "db", "SourceType": "consul", "Action": "deny"}"#,
    )
    .unwrap();
    let l7 = dir.join("l7.json");
    std::fs::write(
        &l7,
        r#"{"SourceName": "web", "DestinationName": "db", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}"#,
    )
    .unwrap();
    let created = run(&addr, None, &["create", "-file", plain.to_str().unwrap()]).await;
    assert_eq!(
        (created.code, created.stdout.as_str()),
        (0, "Created: api => db (deny)\n"),
        "{}",
        created.stderr
    );
    let refused = run(&addr, None, &["create", "-file", l7.to_str().unwrap()]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("cannot create L7 intention from file"),
        "{}",
        refused.stderr
    );
    let check = run(&addr, None, &["check", "api", "db"]).await;
    assert_eq!((check.code, check.stdout.as_str()), (1, "Denied\n"));
    agent.shutdown().await;
}

/// Against Consul 1.8, which has no `/v1/connect/intentions/exact`: `get`, `create -replace`
/// and `delete` by name fall back to the ID API as the consul 1.8 CLI does.
#[tokio::test]
async fn commands_by_name_work_against_consul_1_8() {
    let agent = agent_with(|_| {}).await;
    let front = Consul18Front::start(agent.url()).await;
    let addr = front.addr.to_string();

    let created = run(&addr, None, &["create", "web", "db"]).await;
    assert_eq!(
        (created.code, created.stdout.as_str()),
        (0, "Created: web => db (allow)\n"),
        "{}",
        created.stderr
    );
    let replaced = run(&addr, None, &["create", "-deny", "-replace", "web", "db"]).await;
    assert_eq!(
        (replaced.code, replaced.stdout.as_str()),
        (0, ""),
        "{}",
        replaced.stderr
    );
    let got = run(&addr, None, &["get", "web", "db"]).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    let lines: Vec<&str> = got.stdout.lines().collect();
    assert_eq!(lines[2], "Action:       deny");
    assert!(lines[3].starts_with("ID:           "), "{lines:?}");
    let denied = run(&addr, None, &["check", "web", "db"]).await;
    assert_eq!((denied.code, denied.stdout.as_str()), (1, "Denied\n"));

    let deleted = run(&addr, None, &["delete", "web", "db"]).await;
    assert_eq!(
        (deleted.code, deleted.stdout.as_str()),
        (0, "Intention deleted.\n"),
        "{}",
        deleted.stderr
    );
    let missing = run(&addr, None, &["get", "web", "db"]).await;
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (
            1,
            "Intention not found with source \"web\" and destination \"db\"\n"
        )
    );
    let again = run(&addr, None, &["delete", "web", "db"]).await;
    assert_eq!(
        (again.code, again.stderr.as_str()),
        (
            1,
            "Error deleting the intention: Intention not found with source \"web\" and destination \"db\"\n"
        )
    );

    // The fallback really ran: exact was tried and refused, then the ID API was used.
    let seen = front.requests();
    let uses = |method: &str, prefix: &str| {
        seen.iter()
            .any(|r| r.starts_with(&format!("{method} {prefix}")) && !r.contains("/exact"))
    };
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /v1/connect/intentions/exact")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.starts_with("DELETE /v1/connect/intentions/exact")),
        "{seen:?}"
    );
    assert!(uses("PUT", "/v1/connect/intentions/"), "{seen:?}");
    assert!(uses("DELETE", "/v1/connect/intentions/"), "{seen:?}");
    front.stop();
    agent.shutdown().await;
}

/// An HTTP front for the dev agent that answers `/v1/connect/intentions/exact` the way Consul
/// 1.8.17 did in `tests/data/consul-recorded/consul-1.8.17-dev.json` (it routes `exact` as an
/// intention ID) and passes every other request through, one request per connection.
struct Consul18Front {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Consul18Front {
    async fn start(agent_url: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let (get_refusal, put_refusal) = recorded_1_8_refusals();
        let task = tokio::spawn(async move {
            tandem_certs::tls::install_default();
            let http = reqwest::Client::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (http, log, agent_url) = (http.clone(), log.clone(), agent_url.clone());
                let (get_refusal, put_refusal) = (get_refusal.clone(), put_refusal.clone());
                tokio::spawn(async move {
                    let mut stream = stream;
                    let Some((method, target, body)) = read_request(&mut stream).await else {
                        return;
                    };
                    log.lock().unwrap().push(format!("{method} {target}"));
                    let (status, content_type, text) =
                        if target.starts_with("/v1/connect/intentions/exact") {
                            // DELETE was not recorded; 1.8 runs the same ID lookup as PUT.
                            let (status, text) = if method == "GET" {
                                (400, get_refusal)
                            } else {
                                (500, put_refusal)
                            };
                            (status, "text/plain; charset=utf-8".to_string(), text)
                        } else {
                            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                            let resp = http
                                .request(method, format!("{agent_url}{target}"))
                                .body(body)
                                .send()
                                .await
                                .unwrap();
                            let status = resp.status().as_u16();
                            let content_type = resp
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("text/plain")
                                .to_string();
                            (status, content_type, resp.text().await.unwrap())
                        };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    use tokio::io::AsyncWriteExt;
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Consul18Front { addr, seen, task }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// What 1.8.17 answered to `GET` and `PUT` on `/v1/connect/intentions/exact`.
fn recorded_1_8_refusals() -> (String, String) {
    let recording: serde_json::Value =
        serde_json::from_str(include_str!("data/consul-recorded/consul-1.8.17-dev.json")).unwrap();
    let body = |name: &str, status: u64| {
        let entry = recording
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap();
        assert_eq!(entry["response"]["status"], status);
        entry["response"]["body"].as_str().unwrap().to_string()
    };
    (body("exact-get", 400), body("exact-put-deny", 500))
}

/// Reads one HTTP/1.1 request: method, target and body (by Content-Length).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((method, target, buf[head_end..].to_vec()))
}
