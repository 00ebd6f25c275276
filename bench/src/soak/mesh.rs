//! The agent and the two proxies as processes, and what the driver does to them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::load::{lock, Ledger};
use super::outcome::{Cause, DENY_GRACE, RESTART_GRACE};
use super::report::{metric_sum, tail};
use super::schedule::Action;
use super::verdict::Resources;
use crate::loadgen::one_shot;
use crate::process::{free_port, wait_listening, ChildProcess};
use crate::tandem::{logs_to, wait_ready, Binaries};
use crate::{http, procstat};

pub const CLIENT_SERVICE: &str = "static-client";
pub const SERVER_SERVICE: &str = "static-server";

/// Resources are the smallest of this many readings 100 ms apart, so a connection in flight at
/// one reading does not count.
const READINGS: usize = 5;

/// The agent and the two proxies.
pub(super) struct Mesh {
    // Fields drop in order: the proxies go before the agent they watch.
    pub(super) client: ChildProcess,
    pub(super) server: Option<ChildProcess>,
    agent: ChildProcess,
    proxy: PathBuf,
    log_dir: PathBuf,
    pub(super) agent_addr: SocketAddr,
    backend: SocketAddr,
    pub(super) client_admin: SocketAddr,
    pub(super) upstream: SocketAddr,
    server_public: SocketAddr,
    server_admin: SocketAddr,
    pub(super) server_starts: u32,
}

impl Mesh {
    pub(super) fn start(
        bins: &Binaries,
        backend: SocketAddr,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let agent_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = Command::new(bins.path("tandem-agent")?);
        cmd.arg("dev")
            .args(["--http-addr", &agent_addr.to_string()])
            .args(["--default-intention", "deny"]);
        logs_to(&mut cmd, log_dir, "agent")?;
        let mut agent = ChildProcess::spawn("tandem-agent", cmd)?;
        wait_listening(&mut agent, agent_addr, Duration::from_secs(15))?;
        set_intention(agent_addr, "allow")?;

        let proxy = bins.path("tandem-proxy")?;
        let upstream: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let client_admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = Command::new(&proxy);
        cmd.args(["--service", CLIENT_SERVICE])
            .args([
                "--upstreams",
                &format!("{SERVER_SERVICE}:{}", upstream.port()),
            ])
            .args(["--public-listener", &format!("127.0.0.1:{}", free_port()?)])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--admin-listener", &client_admin.to_string()])
            .args(["--consul-http-addr", &format!("http://{agent_addr}")]);
        logs_to(&mut cmd, log_dir, "proxy-client")?;
        let client = ChildProcess::spawn("tandem-proxy client", cmd)?;

        let mut mesh = Self {
            client,
            server: None,
            agent,
            proxy,
            log_dir: log_dir.to_path_buf(),
            agent_addr,
            backend,
            client_admin,
            upstream,
            server_public: ([127, 0, 0, 1], free_port()?).into(),
            server_admin: ([127, 0, 0, 1], free_port()?).into(),
            server_starts: 0,
        };
        mesh.start_server()?;
        wait_ready(&mut mesh.client, client_admin)?;
        // Ready means listening; the client may still be learning the server's instance.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = one_shot(upstream) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no answer through the pair at {upstream} within 60 s: {e:#}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Ok(mesh)
    }

    /// Starts a server proxy on the same ports as every one before it, and waits until it is
    /// ready. Each one logs to its own file.
    fn start_server(&mut self) -> anyhow::Result<()> {
        self.server_starts += 1;
        let mut cmd = Command::new(&self.proxy);
        cmd.args(["--service", SERVER_SERVICE])
            .args(["--service-port", &self.backend.port().to_string()])
            .args(["--service-address", "127.0.0.1"])
            .args(["--public-listener", &self.server_public.to_string()])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--admin-listener", &self.server_admin.to_string()])
            .args(["--consul-http-addr", &format!("http://{}", self.agent_addr)]);
        let log = format!("proxy-server-{}", self.server_starts);
        logs_to(&mut cmd, &self.log_dir, &log)?;
        let mut server = ChildProcess::spawn(&format!("tandem-proxy server ({log})"), cmd)?;
        let ready = wait_ready(&mut server, self.server_admin);
        self.server = Some(server);
        ready
    }

    pub(super) fn act(
        &mut self,
        action: Action,
        ledger: &Mutex<Ledger>,
        start: Instant,
    ) -> anyhow::Result<()> {
        let now = || start.elapsed();
        match action {
            Action::Report { .. } => unreachable!("reports are handled by the driver"),
            Action::Deny => {
                lock(ledger).windows.open(Cause::Denied, now());
                set_intention(self.agent_addr, "deny")
            }
            Action::Allow => {
                let r = set_intention(self.agent_addr, "allow");
                lock(ledger).windows.close(Cause::Denied, now(), DENY_GRACE);
                r
            }
            Action::RotateCa => rotate_ca(self.agent_addr),
            Action::RestartServer => {
                lock(ledger).windows.open(Cause::Restart, now());
                // Dropping the process kills it (SIGKILL) and reaps it.
                drop(self.server.take());
                let r = self.start_server();
                lock(ledger)
                    .windows
                    .close(Cause::Restart, now(), RESTART_GRACE);
                r
            }
            Action::PauseAgent => signal(&self.agent, "STOP"),
            Action::ResumeAgent => signal(&self.agent, "CONT"),
        }
    }

    /// Both proxies' resources, and an error if either proxy is not running or cannot be read.
    pub(super) fn sample(&mut self) -> (Option<Resources>, Option<Resources>, anyhow::Result<()>) {
        let client = self
            .client
            .check_running()
            .and_then(|()| resources(self.client.pid(), self.client_admin));
        let server = match self.server.as_mut() {
            Some(s) => match s.check_running() {
                Ok(()) => resources(s.pid(), self.server_admin),
                Err(e) => {
                    let log = self
                        .log_dir
                        .join(format!("proxy-server-{}.log", self.server_starts));
                    Err(anyhow::anyhow!(
                        "{e:#}; the end of {} (per-connection lines left out):\n{}",
                        log.display(),
                        tail(&log, 20)
                    ))
                }
            },
            None => Err(anyhow::anyhow!("no server proxy running")),
        };
        let result = match (&client, &server) {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(e), _) => Err(anyhow::anyhow!("client proxy: {e:#}")),
            (_, Err(e)) => Err(anyhow::anyhow!("server proxy: {e:#}")),
        };
        (client.ok(), server.ok(), result)
    }
}

/// `PUT /v1/connect/intentions/exact` for `static-client -> static-server`.
fn set_intention(agent: SocketAddr, action: &str) -> anyhow::Result<()> {
    let path = format!(
        "/v1/connect/intentions/exact?source={CLIENT_SERVICE}&destination={SERVER_SERVICE}"
    );
    let body = format!(r#"{{"SourceType":"consul","Action":"{action}"}}"#);
    expect_200(agent, "PUT", &path, &body)
}

/// A new root from the built-in provider. The dev agent's CA makes every root EC P-256 (it
/// does not take a key or key type from the configuration), so every rotation is to a new
/// P-256 key.
fn rotate_ca(agent: SocketAddr) -> anyhow::Result<()> {
    let body = r#"{"Provider":"consul","Config":{"LeafCertTTL":"72h"}}"#;
    expect_200(agent, "PUT", "/v1/connect/ca/configuration", body)
}

fn expect_200(agent: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<()> {
    let r = http::request(agent, method, path, Some(body))?;
    anyhow::ensure!(
        r.status == 200,
        "agent at {agent} answered {} to {method} {path}: {}",
        r.status,
        r.body.trim()
    );
    Ok(())
}

fn signal(process: &ChildProcess, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &process.pid().to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {} failed", process.role);
    Ok(())
}

/// The smallest of [`READINGS`] readings of each resource.
fn resources(pid: u32, admin: SocketAddr) -> anyhow::Result<Resources> {
    let mut min: Option<Resources> = None;
    for i in 0..READINGS {
        if i > 0 {
            thread::sleep(Duration::from_millis(100));
        }
        let metrics = http::request(admin, "GET", "/metrics", None)?;
        let tasks = metric_sum(&metrics.body, "tandem_tasks")
            .with_context(|| format!("no tandem_tasks in http://{admin}/metrics"))?;
        let r = Resources {
            rss_kb: procstat::rss_kb(pid)?,
            fds: procstat::open_fds(pid)?,
            tasks: tasks as u64,
        };
        min = Some(match min {
            None => r,
            Some(m) => Resources {
                rss_kb: m.rss_kb.min(r.rss_kb),
                fds: m.fds.min(r.fds),
                tasks: m.tasks.min(r.tasks),
            },
        });
    }
    min.context("no readings")
}
