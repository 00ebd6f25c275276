//! `tandem-proxy`: a Consul Connect sidecar.
//!
//! Library first so tests and the bench run it in-process: [`Config`] is the command line,
//! [`start`] builds and starts a [`Proxy`]. See `docs/ARCHITECTURE.md` for its tasks and how
//! state flows from the agent to a connection.
//!
//! What is `pub` here is what the binary, the tests and the bench use: the command line and
//! settings, the Consul client, and the pieces a test assembles an inbound path from. Everything
//! else is the crate's own.

mod admin;
mod app;
pub mod config;
mod connections;
pub mod consul;
mod copy;
mod discovery;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod inbound;
mod intentions;
mod l7;
mod listener;
mod metrics;
mod outbound;
mod permissions;
mod protocol;
mod registration;
mod tunnel;
mod watcher;

pub use admin::check_ready;
pub use app::{start, start_with, Proxy, StartError};
pub use config::{
    Config, ConfigErrors, Datacenter, ServiceName, Settings, TunnelSettings, Upstream, UpstreamList,
};
pub use connections::{Connections, DataPath, End};
pub use identity::TlsState;
pub use inbound::Inbound;
pub use intentions::{Action, Decision, IntentionSet, Source};
pub use metrics::{Direction, Metrics};
pub use protocol::Protocol;
