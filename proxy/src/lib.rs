//! `tandem-proxy`: a Consul Connect sidecar.
//!
//! Library first so tests and the bench run it in-process: [`Config`] is the command line,
//! [`start`] builds and starts a [`Proxy`]. See `docs/ARCHITECTURE.md` for its tasks and how
//! state flows from the agent to a connection.

pub mod admin;
pub mod app;
pub mod config;
pub mod connections;
pub mod consul;
pub mod copy;
pub mod discovery;
pub mod identity;
pub mod inbound;
pub mod intentions;
pub mod metrics;
pub mod outbound;
pub mod registration;
mod watcher;

pub use app::{start, start_with, Proxy, StartError};
pub use config::{Config, ConfigErrors, Datacenter, ServiceName, Settings, Upstream, UpstreamList};
