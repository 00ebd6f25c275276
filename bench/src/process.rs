//! Child processes the bench starts (HAProxy, tandem-proxy): killed when dropped, so a failed run
//! leaves nothing behind.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A process the bench started, with a role name for the report.
pub struct ChildProcess {
    pub role: String,
    child: Child,
}

impl ChildProcess {
    pub fn spawn(role: &str, mut command: Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {role}: {command:?}"))?;
        Ok(Self {
            role: role.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop with SIGTERM and waits up to `timeout` for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "could not signal {}", self.role);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("{} did not exit within {timeout:?} of SIGTERM", self.role)
    }

    /// Fails if the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{} (pid {}) exited: {status}", self.role, self.child.id());
        }
        Ok(())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Only our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound then released; the window for a clash is small and the caller
/// fails clearly if it happens).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until `addr` accepts TCP connections, checking that `process` is still alive.
pub fn wait_listening(
    process: &mut ChildProcess,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        process.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} did not listen on {addr} within {timeout:?}",
                process.role
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
