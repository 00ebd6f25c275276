//! The binary's command-line contract: malformed input exits 64 with a message naming the
//! flag (or variable), the value and what was expected; `--check-ready` probes `/ready`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

fn proxy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem-proxy"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TANDEM_") || k.starts_with("CONSUL_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the proxy binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Arguments, environment, and what stderr must mention.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn malformed_flags_exit_64_naming_flag_value_and_expectation() {
    let cases: &[Case<'_>] = &[
        (
            &["--service", "web", "--upstreams", "db:abc"],
            &[],
            &[
                "--upstreams",
                "db:abc",
                "local port \"abc\" is not a number",
            ],
        ),
        (
            &["--service", "web", "--upstreams", "db"],
            &[],
            &["--upstreams", "\"db\"", "want NAME:PORT"],
        ),
        (
            &["--service", "web", "--service-port", "http"],
            &[],
            &["--service-port", "http"],
        ),
        (
            &["--service", "web", "--service-port", "0"],
            &[],
            &["--service-port", "'0'", "1..=65535"],
        ),
        (
            &["--service", "web", "--public-listener", "20000"],
            &[],
            &["--public-listener", "20000"],
        ),
        (
            &["--service", "we b"],
            &[],
            &["--service", "we b", "letters, digits, '-', '_' and '.' are"],
        ),
        (
            &["--service", "web", "--drain-deadline", "soon"],
            &[],
            &["--drain-deadline", "soon", "duration"],
        ),
        (&["--service-port", "8080"], &[], &["--service"]),
        (
            &["--service", "web"],
            &[("TANDEM_SERVICE_PORT", "abc")],
            &["--service-port", "abc"],
        ),
        (
            &["--service", "web", "--consul-http-addr", "ftp://x"],
            &[],
            &[
                "invalid --consul-http-addr \"ftp://x\"",
                "http:// or https://",
            ],
        ),
        (
            &["--service", "web"],
            &[("CONSUL_HTTP_ADDR", "gopher://x")],
            &["invalid CONSUL_HTTP_ADDR \"gopher://x\""],
        ),
        (
            &["--service", "web"],
            &[("POD_IP", "banana")],
            &["invalid POD_IP \"banana\": expected an IP address"],
        ),
        (
            &["--service", "web"],
            &[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/t")],
            &["invalid CONSUL_HTTP_TOKEN_FILE \"/nonexistent/t\""],
        ),
    ];
    for (args, env, needles) in cases {
        let out = proxy(args, env);
        let text = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?} {env:?} must exit 64; stderr: {text}"
        );
        for n in *needles {
            assert!(
                text.contains(n),
                "{args:?} {env:?}: stderr should mention {n:?}: {text}"
            );
        }
    }
}

#[test]
fn every_resolution_error_is_reported_at_once() {
    let out = proxy(
        &["--service", "web", "--consul-http-addr", "ftp://x"],
        &[("POD_IP", "banana")],
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text.contains("--consul-http-addr") && text.contains("POD_IP"),
        "{text}"
    );
}

#[test]
fn help_explains_and_exits_0() {
    let out = proxy(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--service",
        "--service-port",
        "--service-address",
        "--service-id",
        "--upstreams",
        "--public-listener",
        "--advertise-address",
        "--consul-http-addr",
        "--token",
        "--admin-listener",
        "--no-register",
        "--check-ready",
        "--drain-deadline",
        "--close-denied-connections",
        "--handshake-timeout",
        "--idle-timeout",
        "--max-connections",
    ] {
        assert!(text.contains(flag), "--help should document {flag}");
    }
    assert!(
        text.contains("TANDEM_UPSTREAMS"),
        "--help names the env variables"
    );
}

/// A one-shot HTTP server answering `status` to every request, on 127.0.0.1:0.
fn one_shot(status: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    (addr, handle)
}

#[test]
fn check_ready_probes_the_admin_listener() {
    let (addr, server) = one_shot("200 OK");
    let out = proxy(&["--check-ready", "--admin-listener", &addr], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(server.join().unwrap().starts_with("GET /ready "));

    let (addr, server) = one_shot("503 Service Unavailable");
    let out = proxy(&["--check-ready", "--admin-listener", &addr], &[]);
    assert_eq!(out.status.code(), Some(1));
    server.join().unwrap();

    let (addr, server) = one_shot("200 OK");
    let out = proxy(&["--check-ready"], &[("TANDEM_ADMIN_LISTENER", &addr)]);
    assert_eq!(out.status.code(), Some(0), "TANDEM_ADMIN_LISTENER is read");
    server.join().unwrap();
}

#[test]
fn every_malformed_flag_is_reported_at_once() {
    let out = proxy(
        &[
            "--service",
            "we b",
            "--service-port",
            "abc",
            "--drain-deadline=soon",
        ],
        &[("TANDEM_HANDSHAKE_TIMEOUT", "1")],
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(64));
    for needle in [
        "'we b' for '--service",
        "'abc' for '--service-port",
        "'soon' for '--drain-deadline",
        "'1' for '--handshake-timeout",
    ] {
        assert!(
            text.contains(needle),
            "stderr should report {needle:?}: {text}"
        );
    }
    assert!(
        !text.contains("required arguments were not provided"),
        "a bad --service is not also 'missing': {text}"
    );
}
