//! A real Consul client library against the real binary: `tests/py/consul_client.py` drives a
//! `tandem-agent dev` process with the `py-consul` package. CI installs it via `scripts/setup`;
//! without it this test fails and says how to install it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the agent process when the test ends, whatever way it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn py_consul_drives_the_dev_agent() {
    let probe = Command::new("python3")
        .args(["-c", "import consul"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Python package py-consul is required: run `pip install py-consul` \
             (scripts/setup installs it in CI). `python3 -c \"import consul\"` said: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 is required to run the py-consul test: {e}"),
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-agent"))
        .args([
            "dev",
            "--http-addr",
            "127.0.0.1:0",
            "--node-name",
            "py-node",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the tandem-agent binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let agent = Running(child);

    // The binary prints its bound URL on one stdout line.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split(" on ").nth(1) {
                let _ = tx.send(url.trim().to_string());
                return;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tandem-agent dev prints the URL it serves on");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/consul_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&url)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-consul script failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("py-consul: all checks passed"),
        "stdout: {stdout}"
    );
    drop(agent);
}
