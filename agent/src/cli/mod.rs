//! Command line: `tandem-agent dev` flags and the `consul intention` and `consul config`
//! work-alikes.

mod columnize;
pub mod config;
mod consul_client;
mod goflag;
pub mod intention;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::Config;

/// The whole command line (`tandem-agent <COMMAND>`).
#[derive(Debug, Parser)]
#[command(
    name = "tandem-agent",
    version,
    about = "A Consul-compatible Connect control plane for local runs and tests",
    long_about = "tandem-agent serves the Connect subset of Consul's HTTP API from memory, the way \
`consul agent -dev` does (service catalog and health, built-in CA with roots and leaf \
certificates, intentions, service-defaults and proxy-defaults config entries, blocking queries), \
and manages intentions and config entries like `consul intention` and `consul config` against \
any Consul-compatible agent."
)]
pub struct Cli {
    /// Which command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `dev`, `intention` or `config`, with their arguments.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an in-memory, single-node agent serving Consul's HTTP API until SIGINT/SIGTERM.
    Dev(DevArgs),
    /// Manage intentions: create [-allow|-deny] [-replace] SRC DST | delete SRC DST |
    /// get SRC DST | list | check SRC DST | match [-source|-destination] NAME.
    /// Uses CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN like the consul CLI.
    #[command(disable_help_flag = true)]
    Intention {
        /// The `consul intention` sub-command and its arguments (Go-style single-dash flags).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Manage config entries: write FILE|- (JSON or HCL) [-cas -modify-index N] |
    /// read -kind K -name N | list -kind K | delete -kind K -name N.
    /// Uses CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN like the consul CLI.
    #[command(disable_help_flag = true)]
    Config {
        /// The `consul config` sub-command and its arguments (Go-style single-dash flags).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `--default-intention`: whether a connection no intention matches is allowed (`allow`,
/// Consul's default with ACLs off) or denied (`deny`).
// Variant doc comments would become per-value text in `dev --help`.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DefaultIntention {
    Allow,
    Deny,
}

/// The `dev` flags.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "TANDEM_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    pub http_addr: SocketAddr,
    /// Datacenter name reported by the agent and used in SPIFFE IDs.
    #[arg(long, env = "TANDEM_DATACENTER", default_value = "dc1")]
    pub datacenter: String,
    /// Node name (default: the host name).
    #[arg(long, env = "TANDEM_NODE_NAME")]
    pub node_name: Option<String>,
    /// What happens to a connection no intention matches.
    #[arg(
        long,
        env = "TANDEM_DEFAULT_INTENTION",
        value_enum,
        default_value = "allow"
    )]
    pub default_intention: DefaultIntention,
    /// Lifetime of issued leaf certificates, as a Go duration (72h, 30m, 90s).
    #[arg(long, env = "TANDEM_LEAF_TTL", default_value = "72h", value_parser = parse_leaf_ttl)]
    pub leaf_ttl: Duration,
    /// Require this ACL token (X-Consul-Token or Authorization: Bearer) on ACL-checked endpoints.
    #[arg(long, env = "TANDEM_REQUIRE_TOKEN")]
    pub require_token: Option<String>,
}

fn parse_leaf_ttl(text: &str) -> Result<Duration, String> {
    let ttl = crate::godur::parse(text)
        .map_err(|e| format!("{e}: expected a Go duration such as 72h, 30m or 90s"))?;
    if ttl < Duration::from_secs(1) {
        return Err(format!(
            "{text:?} is too short: a leaf must live at least 1s"
        ));
    }
    Ok(ttl)
}

impl DevArgs {
    /// The agent's [`Config`]; an empty `--require-token` means none.
    pub fn into_config(self) -> Config {
        Config {
            http_addr: self.http_addr,
            datacenter: self.datacenter,
            node_name: self
                .node_name
                .unwrap_or_else(crate::config::default_node_name),
            default_allow: self.default_intention == DefaultIntention::Allow,
            leaf_ttl: self.leaf_ttl,
            require_token: self.require_token.filter(|t| !t.is_empty()),
        }
    }
}
