//! The L7 setup of the HTTP scenario: the `service-defaults` entry that makes the server's
//! service `http`, and one intention `bench-client -> echo` of five permissions, four denying
//! other requests and the last allowing the measured one, so every measured request is checked
//! against all five. Plus the probes that show the server-side proxy enforces them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http;
use crate::http_load::{status_on_new_connection, Request, BENCH_PATH};
use crate::tandem::{CLIENT_SERVICE, SERVER_SERVICE};

/// `PUT /v1/config`: the server's service speaks HTTP.
pub fn config_entry() -> Value {
    json!({"Kind": "service-defaults", "Name": SERVER_SERVICE, "Protocol": "http"})
}

/// The five permissions, in evaluation order: one each of the matchers a deny rule typically
/// uses (a path regex, a header, methods, a path prefix), then the allow for everything else.
/// [`Request::bench`] fits only the last one.
pub fn permissions() -> Value {
    json!([
        {"Action": "deny", "HTTP": {"PathRegex": "/admin(/.*)?"}},
        {"Action": "deny", "HTTP": {"Header": [{"Name": "user-agent", "Prefix": "curl/"}]}},
        {"Action": "deny", "HTTP": {"Methods": ["DELETE", "PUT", "PATCH"]}},
        {"Action": "deny", "HTTP": {"PathPrefix": "/internal/"}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/"}}
    ])
}

/// `PUT /v1/connect/intentions/exact?source=bench-client&destination=echo`.
pub fn intention() -> Value {
    json!({"SourceType": "consul", "Permissions": permissions()})
}

/// One request per deny permission, each fitting that permission only (in the same order).
pub fn denied_probes() -> Vec<Request> {
    vec![
        Request::new("GET", "/admin/users", &[("user-agent", "tandem-bench")]),
        Request::new("GET", BENCH_PATH, &[("user-agent", "curl/8.5.0")]),
        Request::new("DELETE", BENCH_PATH, &[("user-agent", "tandem-bench")]),
        Request::new("GET", "/internal/state", &[("user-agent", "tandem-bench")]),
    ]
}

/// Writes the config entry, then the intention (the agent, like Consul, refuses L7 permissions
/// for a service whose protocol is still `tcp`).
pub fn configure(agent: SocketAddr) -> anyhow::Result<()> {
    put(agent, "/v1/config", &config_entry())?;
    put(
        agent,
        &format!(
            "/v1/connect/intentions/exact?source={CLIENT_SERVICE}&destination={SERVER_SERVICE}"
        ),
        &intention(),
    )
}

/// Waits until requests through `target` are decided per request: every [`denied_probes`]
/// request answered 403 and the measured one 200, each on a new connection (a protocol change
/// applies to new connections only).
pub fn wait_enforced(target: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match check(target) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(last.context(format!(
                "the L7 intention was not enforced through {target} within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(target: SocketAddr) -> anyhow::Result<()> {
    for probe in denied_probes() {
        let status = status_on_new_connection(target, &probe)?;
        anyhow::ensure!(status == 403, "{} answered {status}, not 403", probe.line());
    }
    let bench = Request::bench();
    let status = status_on_new_connection(target, &bench)?;
    anyhow::ensure!(status == 200, "{} answered {status}, not 200", bench.line());
    Ok(())
}

fn put(agent: SocketAddr, path: &str, body: &Value) -> anyhow::Result<()> {
    let r = http::request(agent, "PUT", path, Some(&body.to_string()))?;
    anyhow::ensure!(
        r.status == 200,
        "agent at {agent} answered {} to PUT {path}: {}",
        r.status,
        r.body.trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_permissions_the_last_allowing_everything_else() {
        let p = permissions();
        let p = p.as_array().unwrap();
        assert_eq!(p.len(), 5);
        let actions: Vec<&str> = p.iter().map(|x| x["Action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["deny", "deny", "deny", "deny", "allow"]);
        let matcher = |i: usize| {
            let keys: Vec<&String> = p[i]["HTTP"].as_object().unwrap().keys().collect();
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            (0..5).map(matcher).collect::<Vec<_>>(),
            ["PathRegex", "Header", "Methods", "PathPrefix", "PathPrefix"]
        );
        assert_eq!(p[4]["HTTP"]["PathPrefix"], "/");
        assert_eq!(denied_probes().len(), 4, "one probe per deny permission");
    }

    /// A stand-in agent: answers one request per element of `answers` with it, each on its own
    /// connection, and returns the requests it got (request line without the version, body).
    fn recording_agent(
        answers: Vec<&'static [u8]>,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<(String, String)>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::thread::spawn(move || {
            answers
                .into_iter()
                .map(|answer| {
                    let (mut s, _) = listener.accept().unwrap();
                    let mut raw = Vec::new();
                    let mut buf = [0u8; 4096];
                    // The whole request (head and Content-Length body) before answering.
                    let (head, body) = loop {
                        let n = s.read(&mut buf).unwrap();
                        assert!(n > 0, "request ended early");
                        raw.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&raw).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len: usize = head
                                .lines()
                                .find_map(|l| {
                                    let l = l.to_ascii_lowercase();
                                    Some(l.strip_prefix("content-length:")?.trim().parse().unwrap())
                                })
                                .unwrap_or(0);
                            if body.len() >= len {
                                break (head.to_string(), body.to_string());
                            }
                        }
                    };
                    s.write_all(answer).unwrap();
                    let line = head.lines().next().unwrap();
                    (line.trim_end_matches(" HTTP/1.1").to_string(), body)
                })
                .collect()
        });
        (addr, seen)
    }

    #[test]
    fn configure_writes_the_config_entry_then_the_intention() {
        let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntrue";
        let (addr, seen) = recording_agent(vec![ok, ok]);
        configure(addr).unwrap();
        let seen = seen.join().unwrap();
        let json = |i: usize| serde_json::from_str::<Value>(&seen[i].1).unwrap();
        assert_eq!(seen[0].0, "PUT /v1/config");
        assert_eq!(
            json(0),
            json!({"Kind": "service-defaults", "Name": "echo", "Protocol": "http"})
        );
        assert_eq!(
            seen[1].0,
            "PUT /v1/connect/intentions/exact?source=bench-client&destination=echo"
        );
        // L7: permissions and no action of its own (Consul refuses both at once).
        assert_eq!(json(1)["Permissions"], permissions());
        assert!(json(1).get("Action").is_none(), "{}", seen[1].1);
    }

    #[test]
    fn a_refused_write_is_an_error_naming_the_path() {
        let (addr, seen) = recording_agent(vec![
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nbad request",
        ]);
        let e = configure(addr).unwrap_err().to_string();
        assert_eq!(
            seen.join().unwrap().len(),
            1,
            "no intention after a refused entry"
        );
        assert!(
            e.contains("answered 400 to PUT /v1/config: bad request"),
            "{e}"
        );
    }
}
