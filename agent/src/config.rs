//! The in-process agent's configuration.

use std::net::SocketAddr;
use std::time::Duration;

/// How a dev agent is started (the `tandem-agent dev` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP API listens; port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// The datacenter the agent reports and puts in SPIFFE IDs (default `dc1`).
    pub datacenter: String,
    /// The one node's name (default: the host name, else `tandem-dev`).
    pub node_name: String,
    /// The intention default when nothing matches (`--default-intention allow|deny`).
    pub default_allow: bool,
    /// Lifetime of issued leaf certificates (Consul's `LeafCertTTL`).
    pub leaf_ttl: Duration,
    /// If set, every ACL-checked endpoint requires this token.
    pub require_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8500)),
            datacenter: "dc1".to_string(),
            node_name: default_node_name(),
            default_allow: true,
            leaf_ttl: Duration::from_secs(72 * 3600),
            require_token: None,
        }
    }
}

/// Consul names the node after the host; fall back to a fixed name.
pub(crate) fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tandem-dev".to_string())
}
