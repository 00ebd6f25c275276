//! `tandem-agent config ...` run as a process against the in-process agent: output text and
//! exit codes as `consul config` 1.10.4 gives them (compared side by side with the real CLI
//! and agent), configured through CONSUL_HTTP_ADDR or `-http-addr`.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{agent_with, Api};
use tandem_agent::DevAgent;
use tokio::io::AsyncWriteExt;

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `tandem-agent config ARGS` with CONSUL_HTTP_ADDR=`addr` and `stdin` on its input.
async fn run_with_stdin(addr: &str, args: &[&str], stdin: &str) -> Outcome {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem-agent"));
    cmd.arg("config")
        .args(args)
        .env("CONSUL_HTTP_ADDR", addr)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the tandem-agent binary runs");
    let mut input = child.stdin.take().expect("a piped stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("stdin takes the input");
    drop(input);
    let out = child.wait_with_output().await.expect("the command ends");
    Outcome {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn run(addr: &str, args: &[&str]) -> Outcome {
    run_with_stdin(addr, args, "").await
}

/// A scratch directory for this test's files.
fn scratch(agent: &DevAgent, test: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("config-cli-{test}-{}", agent.addr().port()));
    std::fs::create_dir_all(&dir).expect("the scratch directory is created");
    dir
}

const WEB_HCL: &str =
    "# the docs' example\nKind = \"service-defaults\"\nName = \"web\"\nProtocol = \"http\"\n";

#[tokio::test]
async fn write_read_list_delete() {
    let agent = agent_with(|_| {}).await;
    let addr = agent.addr().to_string();
    let dir = scratch(&agent, "crud");
    let hcl = dir.join("web.hcl");
    std::fs::write(&hcl, WEB_HCL).unwrap();

    let written = run(&addr, &["write", hcl.to_str().unwrap()]).await;
    assert_eq!(
        (written.code, written.stdout.as_str()),
        (0, "Config entry written: service-defaults/web\n"),
        "{}",
        written.stderr
    );
    let from_stdin = run_with_stdin(
        &addr,
        &["write", "-"],
        r#"{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}"#,
    )
    .await;
    assert_eq!(
        (from_stdin.code, from_stdin.stdout.as_str()),
        (0, "Config entry written: proxy-defaults/global\n"),
        "{}",
        from_stdin.stderr
    );

    // `consul config read` prints the Go api struct: no empty Protocol, TransparentProxy
    // before Config.
    let read = run(
        &addr,
        &["read", "-kind", "proxy-defaults", "-name", "global"],
    )
    .await;
    assert_eq!(read.code, 0, "{}", read.stderr);
    let index = Api::new(&agent)
        .json("/v1/config/proxy-defaults/global")
        .await["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        read.stdout,
        format!("{{\n    \"Kind\": \"proxy-defaults\",\n    \"Name\": \"global\",\n    \"TransparentProxy\": {{}},\n    \"Config\": {{\n        \"protocol\": \"http\"\n    }},\n    \"MeshGateway\": {{}},\n    \"Expose\": {{}},\n    \"CreateIndex\": {index},\n    \"ModifyIndex\": {index}\n}}\n")
    );
    let web = run(
        &addr,
        &["read", "-kind", "service-defaults", "-name", "web"],
    )
    .await;
    assert!(
        web.stdout.contains("\"Protocol\": \"http\""),
        "{}",
        web.stdout
    );

    let listed = run(
        &format!("http://{addr}"),
        &["list", "-kind", "service-defaults"],
    )
    .await;
    assert_eq!((listed.code, listed.stdout.as_str()), (0, "web\n"));

    let deleted = run(
        &addr,
        &["delete", "-kind", "service-defaults", "-name", "web"],
    )
    .await;
    assert_eq!(
        (deleted.code, deleted.stdout.as_str()),
        (0, "Config entry deleted: service-defaults/web\n")
    );
    let gone = run(
        &addr,
        &["read", "-kind", "service-defaults", "-name", "web"],
    )
    .await;
    assert_eq!(
        (gone.code, gone.stderr.as_str()),
        (1, "Error reading config entry service-defaults/web: Unexpected response code: 404 (Config entry not found for \"service-defaults\" / \"web\")\n")
    );
    let empty = run(&addr, &["list", "-kind", "service-defaults"]).await;
    assert_eq!((empty.code, empty.stdout.as_str()), (0, ""));
    agent.shutdown().await;
}

#[tokio::test]
async fn check_and_set_writes() {
    let agent = agent_with(|_| {}).await;
    let addr = agent.addr().to_string();
    let first = run_with_stdin(&addr, &["write", "-cas", "-"], WEB_HCL).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let again = run_with_stdin(&addr, &["write", "-cas", "-"], WEB_HCL).await;
    assert_eq!(
        (again.code, again.stderr.as_str()),
        (1, "Config entry not updated: service-defaults/web\n")
    );
    let index = Api::new(&agent)
        .json("/v1/config/service-defaults/web")
        .await["ModifyIndex"]
        .to_string();
    let current = run_with_stdin(
        &addr,
        &["write", "-cas", "-modify-index", &index, "-"],
        WEB_HCL,
    )
    .await;
    assert_eq!(current.code, 0, "{}", current.stderr);
    agent.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_named() {
    let agent = agent_with(|_| {}).await;
    let addr = agent.addr().to_string();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["write"], "", "Must provide exactly one positional argument to specify the config entry to write\n"),
        (&["write", "/no/such/file.hcl"], "", "Failed to load data: Failed to read file: open /no/such/file.hcl: no such file or directory\n"),
        (&["write", "-"], "Kind = \"service-defaults\"\nName \"x\"\n", "Failed to decode config entry input: Failed to decode config entry input: At 3:1: key 'Name \"x\"' expected start of object ('{') or assignment ('=')\n"),
        (&["write", "-"], "{\"Kind\": \"service-defaults\", \"Name\": }", "Failed to decode config entry input: Failed to decode config entry input: invalid character '}' looking for beginning of value\n"),
        (&["write", "-"], "Name = \"x\"\n", "Failed to decode config entry input: Payload does not contain a kind/Kind key at the top level\n"),
        (&["write", "-"], "Kind = \"bogus\"\n", "Failed to decode config entry input: invalid config entry kind: bogus\n"),
        (&["write", "-"], "Kind = \"service-defaults\"\nName = \"x\"\nBogus = 1\n", "Failed to decode config entry input: 1 error occurred:\n\t* invalid config key \"Bogus\"\n\n\n"),
        (&["write", "-"], "Kind = \"service-defaults\"\n", "Error writing config entry service-defaults/: Unexpected response code: 500 (Name is required)\n"),
        (&["read", "-name", "web"], "", "Must specify the -kind parameter\n"),
        (&["read", "-kind", "service-defaults"], "", "Must specify the -name parameter\n"),
        (&["read", "-kind", "bogus", "-name", "x"], "", "Error reading config entry bogus/x: invalid config entry kind: bogus\n"),
        (&["list"], "", "Must specify the -kind parameter\n"),
        (&["list", "-kind", "bogus"], "", "Error listing config entries for kind \"bogus\": Unexpected response code: 500 (invalid config entry kind: bogus)\n"),
        (&["delete", "-kind", "bogus", "-name", "x"], "", "Error deleting config entry bogus/x: Unexpected response code: 400 (invalid config entry kind: bogus)\n"),
    ];
    let mut failures = Vec::new();
    for (args, stdin, stderr) in cases {
        let out = run_with_stdin(&addr, args, stdin).await;
        if (out.code, out.stderr.as_str()) != (1, *stderr) {
            failures.push(format!(
                "{args:?}: want 1 {stderr:?}, got {} {:?}",
                out.code, out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        Api::new(&agent).json("/v1/config/").await,
        serde_json::json!([]),
        "nothing was written"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn help_and_unreachable_agent() {
    let agent = agent_with(|_| {}).await;
    let addr = agent.addr().to_string();
    let help = run(&addr, &["--help"]).await;
    assert_eq!(help.code, 0);
    for sub in ["write", "read", "list", "delete", "CONSUL_HTTP_ADDR"] {
        assert!(help.stdout.contains(sub), "{sub}: {}", help.stdout);
    }
    let write_help = run(&addr, &["write", "-h"]).await;
    assert_eq!(write_help.code, 0);
    assert!(
        write_help.stdout.contains("-modify-index"),
        "{}",
        write_help.stdout
    );
    let bogus = run(&addr, &["read", "-bogus"]).await;
    assert_eq!(bogus.code, 1);
    assert!(
        bogus
            .stderr
            .starts_with("flag provided but not defined: -bogus\n"),
        "{}",
        bogus.stderr
    );

    let stopped = agent.addr();
    agent.shutdown().await;
    let down = run_with_stdin(&stopped.to_string(), &["write", "-"], WEB_HCL).await;
    assert_eq!(
        (down.code, down.stderr),
        (
            1,
            format!("Error writing config entry service-defaults/web: Put \"http://{stopped}/v1/config\": dial tcp {stopped}: connect: connection refused\n")
        )
    );
    let flag_addr = run(
        "127.0.0.1:1",
        &[
            "list",
            "-http-addr",
            &stopped.to_string(),
            "-kind",
            "service-defaults",
        ],
    )
    .await;
    assert!(
        flag_addr.stderr.contains(&format!(
            "Get \"http://{stopped}/v1/config/service-defaults\""
        )),
        "-http-addr wins over CONSUL_HTTP_ADDR: {}",
        flag_addr.stderr
    );
}
