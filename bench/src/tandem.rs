//! The subject under test: `tandem-agent dev` and two `tandem-proxy` processes from the release
//! build, each its own process so memory and CPU are measured per proxy.
//!
//! client -> [bench-client proxy: upstream listener 127.0.0.1:U] --mTLS--> [echo proxy: public
//! listener] -> backend. The agent's default intention is deny; one intention allows
//! `bench-client -> echo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http;
use crate::http_load::{HttpConnection, Request};
use crate::loadgen::one_shot;
use crate::process::{free_port, wait_listening, ChildProcess};

pub const CLIENT_SERVICE: &str = "bench-client";
pub const SERVER_SERVICE: &str = "echo";
/// `--tunnel-max-streams` of the tunnel pair: above the memory scenario's largest count of
/// open connections, so that all of them ride the one tunnel.
pub const TUNNEL_STREAMS: u32 = 12_000;

/// The flags of the `tandem-no-resumption` pair.
const NO_RESUMPTION_FLAGS: [&str; 2] = ["--tls-resumption", "false"];

/// The flags of the `tandem-tunnel` pair: one tunnel, up to [`TUNNEL_STREAMS`] streams.
fn tunnel_flags() -> [String; 3] {
    [
        "--tunnel".into(),
        "--tunnel-max-streams".into(),
        TUNNEL_STREAMS.to_string(),
    ]
}

/// What the backend behind a pair speaks, so start-up knows how to check that the pair answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// [`crate::echo`]: a one-shot 1 kB echo.
    Echo,
    /// [`crate::http_backend`]: `GET /bench/1k` answered 200 with 1 kB.
    Http,
}

impl BackendKind {
    /// One request through `target` on a new connection.
    fn probe(self, target: SocketAddr) -> anyhow::Result<()> {
        match self {
            BackendKind::Echo => one_shot(target).map(drop),
            BackendKind::Http => {
                HttpConnection::connect(target)?.send_expecting_backend(&Request::bench())
            }
        }
    }
}

/// The target the container images are built for: their binaries are static (`FROM scratch`).
pub const IMAGE_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Release binaries of the other crates: the static ones the container images ship
/// (`docker/build-images.sh` builds them the same way), so what is measured is what runs in a
/// pod.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    /// `<target dir>/x86_64-unknown-linux-gnu/release`, next to the `release` directory this
    /// executable is in, after building the agent, proxy, injector and http-echo there (static,
    /// as for the images) unless `build` is false.
    pub fn locate(build: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the bench executable")?;
        // <target dir>/release/tandem-bench, or <target dir>/<triple>/release/tandem-bench
        // when the bench itself was built with --target.
        let mut target = exe
            .parent()
            .and_then(Path::parent)
            .context("bench executable is not in <target dir>/<profile>")?
            .to_path_buf();
        if target.file_name().is_some_and(|n| n == IMAGE_TARGET) {
            target.pop();
        }
        if build {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "--bins",
                    "--target",
                    IMAGE_TARGET,
                ])
                .args([
                    "-p",
                    "tandem-agent",
                    "-p",
                    "tandem-proxy",
                    "-p",
                    "tandem-injector",
                    // As docker/build-images.sh builds: one feature resolution, so the
                    // proxy's symbols are those its link order names (proxy/build.rs).
                    "-p",
                    "http-echo",
                ])
                // Into the same target directory this binary came from. --target keeps build
                // scripts and proc-macros dynamic; only the binaries get crt-static.
                .env("CARGO_TARGET_DIR", &target)
                .env("RUSTFLAGS", "-C target-feature=+crt-static");
            eprintln!("bench: building the static release binaries: {cmd:?}");
            let status = cmd.status().with_context(|| format!("running {cargo}"))?;
            if !status.success() {
                // Some crates may not have a binary yet; the subjects that need one say so.
                eprintln!("bench: `cargo build` of the other binaries failed ({status})");
            }
        }
        Ok(Self {
            dir: target.join(IMAGE_TARGET).join("release"),
        })
    }

    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(name);
        anyhow::ensure!(
            p.is_file(),
            "{} not found (build it with `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build \
             --release --target {IMAGE_TARGET} -p {name}`)",
            p.display()
        );
        Ok(p)
    }
}

/// A running agent + proxy pair.
pub struct TandemPair {
    // Fields drop in order: the proxies go before the agent they watch.
    pub client_side: ChildProcess,
    pub server_side: ChildProcess,
    pub agent: ChildProcess,
    pub agent_addr: SocketAddr,
    /// The server-side proxy's admin listener (`/metrics`).
    pub server_admin: SocketAddr,
    /// The client proxy's upstream listener for `echo`: where the load goes.
    pub listen: SocketAddr,
}

impl TandemPair {
    pub fn start(bins: &Binaries, backend: SocketAddr, log_dir: &Path) -> anyhow::Result<Self> {
        Self::start_wrapped(bins, backend, log_dir, &[])
    }

    /// A pair whose proxies both run with `--tls-resumption=false`.
    pub fn start_without_resumption(
        bins: &Binaries,
        backend: SocketAddr,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            bins,
            backend,
            BackendKind::Echo,
            log_dir,
            &[],
            &NO_RESUMPTION_FLAGS,
        )
    }

    /// A pair whose proxies both run with `--tunnel` (one tunnel, up to [`TUNNEL_STREAMS`]
    /// streams): every app connection is a stream of one mTLS connection.
    pub fn start_tunnel(
        bins: &Binaries,
        backend: SocketAddr,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let flags = tunnel_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Self::start_with(bins, backend, BackendKind::Echo, log_dir, &[], &flags)
    }

    /// The flags of the pair a subject name stands for (`tandem`, `tandem-tunnel`,
    /// `tandem-no-resumption`); `None` for a subject that is no Tandem pair.
    pub fn subject_flags(subject: &str) -> Option<Vec<String>> {
        let flags: Vec<String> = match subject {
            crate::report::TANDEM => Vec::new(),
            crate::report::TANDEM_TUNNEL => tunnel_flags().to_vec(),
            crate::report::TANDEM_NO_RESUMPTION => {
                NO_RESUMPTION_FLAGS.iter().map(|f| f.to_string()).collect()
            }
            _ => return None,
        };
        Some(flags)
    }

    /// A pair in front of an HTTP backend ([`crate::http_backend`]); the service's protocol is
    /// whatever the agent says (`tcp` until a `service-defaults` entry is written).
    pub fn start_http(
        bins: &Binaries,
        backend: SocketAddr,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(bins, backend, BackendKind::Http, log_dir, &[], &[])
    }

    /// Like [`TandemPair::start`], with each proxy run under `wrapper` (a command and its
    /// arguments, e.g. `valgrind --tool=massif`); empty = run the proxy directly.
    pub fn start_wrapped(
        bins: &Binaries,
        backend: SocketAddr,
        log_dir: &Path,
        wrapper: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_with(bins, backend, BackendKind::Echo, log_dir, wrapper, &[])
    }

    /// Like [`TandemPair::start_wrapped`], with `flags` added to both proxies' arguments.
    pub fn start_wrapped_with(
        bins: &Binaries,
        backend: SocketAddr,
        log_dir: &Path,
        wrapper: &[String],
        flags: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with(bins, backend, BackendKind::Echo, log_dir, wrapper, flags)
    }

    fn start_with(
        bins: &Binaries,
        backend: SocketAddr,
        kind: BackendKind,
        log_dir: &Path,
        wrapper: &[String],
        flags: &[&str],
    ) -> anyhow::Result<Self> {
        let agent_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut agent_cmd = Command::new(bins.path("tandem-agent")?);
        agent_cmd
            .arg("dev")
            .args(["--http-addr", &agent_addr.to_string()])
            .args(["--default-intention", "deny"]);
        logs_to(&mut agent_cmd, log_dir, "agent")?;
        let mut agent = ChildProcess::spawn("tandem-agent", agent_cmd)?;
        wait_listening(&mut agent, agent_addr, Duration::from_secs(15))?;
        set_intention(agent_addr, "allow")?;

        let url = format!("http://{agent_addr}");
        let proxy = bins.path("tandem-proxy")?;
        let server_public: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let server_admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = proxy_command(&proxy, wrapper);
        cmd.args(["--service", SERVER_SERVICE])
            .args(["--service-port", &backend.port().to_string()])
            .args(["--service-address", "127.0.0.1"])
            .args(["--public-listener", &server_public.to_string()])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--admin-listener", &server_admin.to_string()])
            .args(["--consul-http-addr", &url])
            .args(flags);
        logs_to(&mut cmd, log_dir, "proxy-server-side")?;
        let mut server_side = ChildProcess::spawn("tandem-proxy server side", cmd)?;

        let upstream: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let client_public: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let client_admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = proxy_command(&proxy, wrapper);
        cmd.args(["--service", CLIENT_SERVICE])
            .args([
                "--upstreams",
                &format!("{SERVER_SERVICE}:{}", upstream.port()),
            ])
            .args(["--public-listener", &client_public.to_string()])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--admin-listener", &client_admin.to_string()])
            .args(["--consul-http-addr", &url])
            .args(flags);
        logs_to(&mut cmd, log_dir, "proxy-client-side")?;
        let mut client_side = ChildProcess::spawn("tandem-proxy client side", cmd)?;

        wait_ready(&mut server_side, server_admin)?;
        wait_ready(&mut client_side, client_admin)?;
        // Ready means listening; the client side may still be learning the echo instances.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match kind.probe(upstream) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "no answer through the tandem pair at {upstream} within 60 s"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Ok(Self {
            agent,
            agent_addr,
            server_admin,
            server_side,
            client_side,
            listen: upstream,
        })
    }

    /// Stops both proxies with SIGTERM (their normal shutdown, so a wrapper such as valgrind
    /// writes its output) and waits for them.
    pub fn terminate_proxies(&mut self) -> anyhow::Result<()> {
        self.client_side.terminate(Duration::from_secs(60))?;
        self.server_side.terminate(Duration::from_secs(60))
    }

    /// The server-side proxy's `/metrics` text.
    pub fn server_metrics(&self) -> anyhow::Result<String> {
        let r = http::request(self.server_admin, "GET", "/metrics", None)?;
        anyhow::ensure!(
            r.status == 200,
            "GET http://{}/metrics answered {}",
            self.server_admin,
            r.status
        );
        Ok(r.body)
    }

    /// Allows or denies `bench-client -> echo`.
    pub fn set_intention(&self, action: &str) -> anyhow::Result<()> {
        set_intention(self.agent_addr, action)
    }
}

/// `PUT /v1/connect/intentions/exact` for `bench-client -> echo`.
pub fn set_intention(agent: SocketAddr, action: &str) -> anyhow::Result<()> {
    let path = format!(
        "/v1/connect/intentions/exact?source={CLIENT_SERVICE}&destination={SERVER_SERVICE}"
    );
    let body = format!(r#"{{"SourceType":"consul","Action":"{action}"}}"#);
    let r = http::request(agent, "PUT", &path, Some(&body))?;
    anyhow::ensure!(
        r.status == 200,
        "agent at {agent} answered {} to PUT {path}: {}",
        r.status,
        r.body.trim()
    );
    Ok(())
}

fn proxy_command(proxy: &Path, wrapper: &[String]) -> Command {
    match wrapper.split_first() {
        None => Command::new(proxy),
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(proxy);
            c
        }
    }
}

pub(crate) fn wait_ready(proxy: &mut ChildProcess, admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proxy.check_running()?;
        if let Ok(r) = http::request(admin, "GET", "/ready", None) {
            if r.status == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} not ready at http://{admin}/ready within 30 s",
                proxy.role
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn logs_to(cmd: &mut Command, dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.log"));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    Ok(())
}
