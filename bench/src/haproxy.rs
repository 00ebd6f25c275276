//! The reference pair: two HAProxy processes in `mode tcp` doing the same mutual TLS as a Tandem
//! pair, with certificates from the same kind of CA.
//!
//! client -> [client-side haproxy, plaintext 127.0.0.1] --mTLS--> [server-side haproxy] -> backend
//!
//! Both sides present a leaf and require the peer's to chain to the root (`verify required`).
//! HAProxy checks the chain only: it knows nothing of SPIFFE IDs or intentions, so it does a
//! little less work per connection than Tandem. Everything else is HAProxy's defaults (threads =
//! cores, TLS session resumption between the two on).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::pki::{write_file, BenchPki};
use crate::process::{free_port, wait_listening, ChildProcess};

/// Paths and addresses one side's configuration needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SideConfig {
    pub listen: SocketAddr,
    pub forward_to: SocketAddr,
    /// Combined certificate + key PEM this side presents.
    pub crt: PathBuf,
    pub ca_file: PathBuf,
    pub maxconn: u32,
}

/// The server side: terminates mutual TLS and forwards plaintext to the backend.
pub fn server_side_config(c: &SideConfig) -> String {
    format!(
        "{global}\
frontend mtls_in
    bind {listen} ssl crt {crt} ca-file {ca} verify required
    default_backend app

backend app
    server app {to}
",
        global = global_section(c.maxconn),
        listen = c.listen,
        crt = c.crt.display(),
        ca = c.ca_file.display(),
        to = c.forward_to,
    )
}

/// The client side: plaintext on loopback, mutual TLS to the server side.
pub fn client_side_config(c: &SideConfig) -> String {
    format!(
        "{global}\
frontend plain_in
    bind {listen}
    default_backend mtls_out

backend mtls_out
    server peer {to} ssl crt {crt} ca-file {ca} verify required
",
        global = global_section(c.maxconn),
        listen = c.listen,
        crt = c.crt.display(),
        ca = c.ca_file.display(),
        to = c.forward_to,
    )
}

/// The relay: one process copying plain TCP from `listen` to `forward_to`, no TLS.
pub fn relay_config(listen: SocketAddr, forward_to: SocketAddr, maxconn: u32) -> String {
    format!(
        "{global}\
frontend plain_in
    bind {listen}
    default_backend app

backend app
    server app {forward_to}
",
        global = global_section(maxconn),
    )
}

fn global_section(maxconn: u32) -> String {
    format!(
        "global
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-server-options ssl-min-ver TLSv1.2

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s

"
    )
}

/// A running HAProxy pair.
pub struct HaproxyPair {
    pub client_side: ChildProcess,
    pub server_side: ChildProcess,
    pub listen: SocketAddr,
}

impl HaproxyPair {
    /// Starts both sides in front of `backend`, with files under `dir`.
    pub fn start(
        pki: &BenchPki,
        backend: SocketAddr,
        dir: &Path,
        maxconn: u32,
    ) -> anyhow::Result<Self> {
        let ca = write_file(dir, "ca.pem", pki.root_pem())?;
        let server_leaf = pki.leaf("echo")?;
        let client_leaf = pki.leaf("bench-client")?;
        let server_crt = write_file(
            dir,
            "server.pem",
            &format!("{}{}", server_leaf.cert_pem, server_leaf.key_pem),
        )?;
        let client_crt = write_file(
            dir,
            "client.pem",
            &format!("{}{}", client_leaf.cert_pem, client_leaf.key_pem),
        )?;
        let server_listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let client_listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let server_cfg = write_file(
            dir,
            "server-side.cfg",
            &server_side_config(&SideConfig {
                listen: server_listen,
                forward_to: backend,
                crt: server_crt,
                ca_file: ca.clone(),
                maxconn,
            }),
        )?;
        let client_cfg = write_file(
            dir,
            "client-side.cfg",
            &client_side_config(&SideConfig {
                listen: client_listen,
                forward_to: server_listen,
                crt: client_crt,
                ca_file: ca,
                maxconn,
            }),
        )?;
        let mut server_side = ChildProcess::spawn("haproxy server side", haproxy(&server_cfg))?;
        wait_listening(&mut server_side, server_listen, Duration::from_secs(10))?;
        let mut client_side = ChildProcess::spawn("haproxy client side", haproxy(&client_cfg))?;
        wait_listening(&mut client_side, client_listen, Duration::from_secs(10))?;
        Ok(Self {
            client_side,
            server_side,
            listen: client_listen,
        })
    }
}

/// The ceiling on new connections/s for any proxy in the path: one HAProxy process relaying
/// plain TCP, without TLS.
/// A connection through it costs the two TCP connections every interposed proxy makes (the
/// caller's and the one to the backend) and nothing else, so its new-connection rate bounds
/// what any pair of proxies can reach on the same machine.
pub struct Relay {
    pub process: ChildProcess,
    pub listen: SocketAddr,
}

impl Relay {
    /// Starts the relay in front of `backend`, its configuration under `dir`.
    pub fn start(backend: SocketAddr, dir: &Path, maxconn: u32) -> anyhow::Result<Self> {
        Self::start_as("haproxy relay (no TLS)", backend, dir, maxconn)
    }

    /// The same, its process shown as `role`.
    fn start_as(role: &str, backend: SocketAddr, dir: &Path, maxconn: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let cfg = write_file(dir, "relay.cfg", &relay_config(listen, backend, maxconn))?;
        let mut process = ChildProcess::spawn(role, haproxy(&cfg))?;
        wait_listening(&mut process, listen, Duration::from_secs(10))?;
        Ok(Self { process, listen })
    }
}

/// Two relays in a row, no TLS (HAProxy's, or [`crate::copy_relay`]'s): the two processes and
/// the two extra TCP hops of any pair of proxies, and nothing else (no handshake, no
/// encryption, no identity). What it adds to a request, and the keep-alive requests/s it
/// carries, are what a pair of proxies that copy bytes as it does reaches before any TLS.
pub struct RelayPair {
    pub client_side: Relay,
    pub server_side: Relay,
}

impl RelayPair {
    /// Two of `tandem-bench copy-relay` (Tandem's runtime copying plain TCP) in a row in front
    /// of `backend`. Only from a release build: a debug build's relays would be measured.
    pub fn start_copy(backend: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !cfg!(debug_assertions),
            "the copy pair runs this binary's copy-relay, and this is a debug build: \
             run the bench from a release build (cargo run --release -p tandem-bench)"
        );
        let relay = |role: &str, to: SocketAddr| -> anyhow::Result<Relay> {
            let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
            let mut command =
                Command::new(std::env::current_exe().context("finding the tandem-bench binary")?);
            command
                .arg("copy-relay")
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--forward-to")
                .arg(to.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            let mut process = ChildProcess::spawn(role, command)?;
            wait_listening(&mut process, listen, Duration::from_secs(10))?;
            Ok(Relay { process, listen })
        };
        let server_side = relay("copy relay pair, server side (no TLS)", backend)?;
        let client_side = relay("copy relay pair, client side (no TLS)", server_side.listen)?;
        Ok(Self {
            client_side,
            server_side,
        })
    }

    /// Starts both relays in front of `backend`, their configurations under `dir`.
    pub fn start(backend: SocketAddr, dir: &Path, maxconn: u32) -> anyhow::Result<Self> {
        let server_side = Relay::start_as(
            "haproxy relay pair, server side (no TLS)",
            backend,
            &dir.join("server-side"),
            maxconn,
        )?;
        let client_side = Relay::start_as(
            "haproxy relay pair, client side (no TLS)",
            server_side.listen,
            &dir.join("client-side"),
            maxconn,
        )?;
        Ok(Self {
            client_side,
            server_side,
        })
    }
}

fn haproxy(cfg: &Path) -> Command {
    let mut c = Command::new("haproxy");
    // -db: stay in the foreground (the pid is the process to measure); -q: no start-up chatter.
    c.arg("-db").arg("-q").arg("-f").arg(cfg);
    c.stdin(Stdio::null()).stdout(Stdio::null());
    c
}

/// `haproxy -v`'s first line, or why not.
pub fn version() -> anyhow::Result<String> {
    let out = Command::new("haproxy")
        .arg("-v")
        .output()
        .context("running `haproxy -v` (install it with `apt-get install -y haproxy`)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("unknown")
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side() -> SideConfig {
        SideConfig {
            listen: "127.0.0.1:4000".parse().unwrap(),
            forward_to: "127.0.0.1:5000".parse().unwrap(),
            crt: "/tmp/x/leaf.pem".into(),
            ca_file: "/tmp/x/ca.pem".into(),
            maxconn: 9500,
        }
    }

    #[test]
    fn the_relay_forwards_plain_tcp() {
        let cfg = relay_config(
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
            9500,
        );
        assert!(cfg.contains("    mode tcp\n"));
        assert!(cfg.contains("    bind 127.0.0.1:4000\n"));
        assert!(cfg.contains("    server app 127.0.0.1:5000\n"));
        assert!(!cfg.contains("ssl crt"));
    }

    #[test]
    fn server_side_terminates_mutual_tls() {
        let cfg = server_side_config(&side());
        assert!(cfg.contains("    mode tcp\n"));
        assert!(cfg.contains("    maxconn 9500\n"));
        assert!(cfg.contains(
            "bind 127.0.0.1:4000 ssl crt /tmp/x/leaf.pem ca-file /tmp/x/ca.pem verify required\n"
        ));
        assert!(cfg.contains("    server app 127.0.0.1:5000\n"));
        assert!(!cfg.contains("server app 127.0.0.1:5000 ssl"));
    }

    #[test]
    fn client_side_originates_mutual_tls() {
        let cfg = client_side_config(&side());
        assert!(cfg.contains("    bind 127.0.0.1:4000\n"));
        assert!(cfg.contains(
            "server peer 127.0.0.1:5000 ssl crt /tmp/x/leaf.pem ca-file /tmp/x/ca.pem verify required\n"
        ));
        assert!(cfg.contains("    mode tcp\n"));
    }
}
