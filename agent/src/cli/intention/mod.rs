//! `tandem-agent intention ...`: the words, output and exit codes of `consul intention`, over
//! Consul's public HTTP API only (so it works against a real Consul agent as well).
//! `create` (with `-replace` and `-file`) lives in `create`, the read-only commands in `query`.

mod create;
mod query;

use std::io::Write;

use reqwest::Method;
use serde_json::Value;

use super::consul_client::ConsulClient;
use super::goflag::parse_or_usage;

const HELP: &str = "Usage: tandem-agent intention <subcommand> [options] [args]

  Manage Connect service intentions, like `consul intention`.

Subcommands:
    check     Check whether a connection between two services is allowed.
    create    Create intentions for service connections.
    delete    Delete an intention.
    get       Show information about an intention.
    list      List connect intentions.
    match     Show intentions that match a source or destination.

HTTP API options (every subcommand):
  -http-addr=<address>  Agent address; also CONSUL_HTTP_ADDR (default 127.0.0.1:8500).
  -token=<value>        ACL token; also CONSUL_HTTP_TOKEN.
  -token-file=<path>    File with the ACL token; also CONSUL_HTTP_TOKEN_FILE.
";

/// Runs one `intention` sub-command; returns the process exit code.
pub async fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((sub, rest)) = args.split_first() else {
        let _ = write!(err, "{HELP}");
        return 1;
    };
    match sub.as_str() {
        "create" => create::create(rest, out, err).await,
        "delete" => delete(rest, out, err).await,
        "get" => query::get(rest, out, err).await,
        "list" => query::list(rest, out, err).await,
        "check" => query::check(rest, out, err).await,
        "match" => query::matches(rest, out, err).await,
        "-h" | "-help" | "--help" | "help" => {
            let _ = write!(out, "{HELP}");
            0
        }
        other => {
            let _ = writeln!(err, "Unknown subcommand {other:?}.\n\n{HELP}");
            1
        }
    }
}

const DELETE_USAGE: &str = "Usage: tandem-agent intention delete [options] SRC DST
Usage: tandem-agent intention delete [options] ID

  Delete an intention. This cannot be reversed.";

async fn delete(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (client, target) = match target_command(args, DELETE_USAGE, out, err) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let (path, query) = target.endpoint();
    match client
        .call(Method::DELETE, &path, &query, None, false)
        .await
    {
        Ok(_) => {
            let _ = writeln!(out, "Intention deleted.");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "Error deleting the intention: {e}");
            1
        }
    }
}

/// `get` and `delete`: their flags (or the usage), the client, then `ID` or `SRC DST`; `Err`
/// is the exit code after the complaint on `err`.
fn target_command(
    args: &[String],
    usage: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(ConsulClient, Target), i32> {
    let parsed = parse_or_usage(args, &[], &[], usage, 1, out, err)?;
    let client = parsed.client_or_report(1, err)?;
    let Some(target) = Target::from_args(parsed.positional) else {
        let _ = writeln!(err, "command requires exactly 1 or 2 arguments");
        return Err(1);
    };
    Ok((client, target))
}

/// What `get` and `delete` act on: one intention by its legacy ID, or by source and
/// destination.
enum Target {
    Id(String),
    Pair { source: String, destination: String },
}

impl Target {
    /// `ID` or `SRC DST`; `None` for any other number of arguments.
    fn from_args(positional: Vec<String>) -> Option<Self> {
        let mut args = positional.into_iter();
        match (args.next(), args.next(), args.next()) {
            (Some(id), None, None) => Some(Target::Id(id)),
            (Some(source), Some(destination), None) => Some(Target::Pair {
                source,
                destination,
            }),
            _ => None,
        }
    }

    /// The API path and query that address this intention.
    fn endpoint(&self) -> (String, Vec<(&'static str, &str)>) {
        match self {
            Target::Id(id) => (format!("/v1/connect/intentions/{id}"), Vec::new()),
            Target::Pair {
                source,
                destination,
            } => (
                "/v1/connect/intentions/exact".to_string(),
                vec![
                    ("source", source.as_str()),
                    ("destination", destination.as_str()),
                ],
            ),
        }
    }

    /// What `get` says when there is no such intention.
    fn not_found(&self) -> String {
        match self {
            Target::Id(id) => format!("Intention not found with ID {id:?}"),
            Target::Pair {
                source,
                destination,
            } => {
                format!(
                    "Intention not found with source {source:?} and destination {destination:?}"
                )
            }
        }
    }
}

/// A string field of an `api.Intention` JSON object (`""` when absent).
fn text<'v>(ixn: &'v Value, key: &str) -> &'v str {
    ixn.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// One side of an intention as the consul CLI prints it: the name, prefixed by `ns/` only when
/// the namespace is set and not `default`.
fn side(ixn: &Value, ns_key: &str, name_key: &str) -> String {
    let (ns, name) = (text(ixn, ns_key), text(ixn, name_key));
    if ns.is_empty() || ns == "default" {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// `api.Intention.String()`: `web => db (allow)`, namespace shown only when not default.
fn describe(ixn: &Value) -> String {
    let detail = match ixn
        .get("Permissions")
        .and_then(Value::as_array)
        .map(Vec::len)
    {
        Some(1) => "1 permission".to_string(),
        Some(n) if n > 1 => format!("{n} permissions"),
        _ => text(ixn, "Action").to_string(),
    };
    format!(
        "{} => {} ({detail})",
        side(ixn, "SourceNS", "SourceName"),
        side(ixn, "DestinationNS", "DestinationName")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn intention_strings_match_the_go_client() {
        let ixn = json!({"SourceName": "web", "DestinationName": "db", "Action": "allow"});
        assert_eq!(describe(&ixn), "web => db (allow)");
        let l7 = json!({"SourceName": "web", "DestinationName": "db", "Permissions": [{}, {}]});
        assert_eq!(describe(&l7), "web => db (2 permissions)");
    }
}
