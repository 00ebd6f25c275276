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
