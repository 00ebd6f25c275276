//! `tandem-bench copy-relay`: a plain TCP relay on the runtime Tandem's proxy runs on (a
//! current-thread tokio runtime, `TCP_NODELAY` both ways, one task per connection copying both
//! directions with `copy_bidirectional`), and nothing else: no TLS, no identity, no intentions.
//! Two of them in a row are the `copy-pair` subject: what a pair of such relays adds to a
//! request and carries. Its buffers (8 KiB each way per connection) and allocator (the
//! system's) are not Tandem's, so its memory and bulk figures say nothing of Tandem.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};

/// Relays every connection to `listen` to `forward_to` until the process is stopped.
pub fn run(listen: SocketAddr, forward_to: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let mut last_said: Option<Instant> = None;
        loop {
            let (mut inbound, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors, or a connection reset before it was accepted: go on,
                // saying so at most once a second.
                Err(e) => {
                    if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        eprintln!("copy-relay: accept failed: {e}");
                        last_said = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(forward_to).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    #[test]
    fn relays_both_ways_and_passes_the_end_on() {
        // A backend that answers "re:" and what it read, once the client has finished.
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = backend.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = backend.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"re:").unwrap();
            s.write_all(&got).unwrap();
        });
        let listen: std::net::SocketAddr =
            ([127, 0, 0, 1], crate::process::free_port().unwrap()).into();
        std::thread::spawn(move || super::run(listen, to));
        let mut client = (0..200)
            .find_map(|_| {
                std::net::TcpStream::connect(listen)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(10)))
                    .ok()
            })
            .expect("the relay listens");
        client.write_all(b"hello").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"re:hello");
    }
}
