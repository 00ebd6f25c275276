//! `tandem-agent`: an in-memory, single-node agent that speaks the Connect subset of Consul's
//! HTTP API the way `consul agent -dev` does (JSON shapes, status codes, plain-text errors,
//! blocking queries, a built-in CA, intentions, `service-defaults`/`proxy-defaults` config
//! entries and prepared queries), plus the `consul intention` and `consul config` CLIs.
//!
//! In-process use (tests, benchmarks):
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let agent = tandem_agent::start(tandem_agent::Config {
//!     http_addr: "127.0.0.1:0".parse()?,
//!     ..Default::default()
//! })
//! .await?;
//! println!("{}", agent.url());
//! agent.shutdown().await;
//! # Ok(()) }
//! ```

mod blocking;
mod ca;
mod catalog;
mod checks;
pub mod cli;
mod config;
mod config_entries;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod godur;
mod goerr;
mod http;
mod intentions;
mod json;
mod queries;
mod server;
mod service;
mod state;

pub use config::Config;
pub use server::{start, DevAgent};

/// Parses a Go duration (`72h`, `10s`, `1m30s`), as the `--leaf-ttl` flag takes it.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    godur::parse(text)
}
