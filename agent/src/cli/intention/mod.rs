//! `tandem-agent intention ...`: the words, output and exit codes of `consul intention`, over
//! Consul's public HTTP API only (so it works against a real Consul agent as well).
//! `create` (with `-replace` and `-file`) lives in `create`, the read-only commands in `query`.

mod create;
mod query;

use std::io::Write;

use reqwest::Method;
use serde_json::Value;

use super::consul_client::{ClientError, ConsulClient};
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
    match delete_target(&client, &target).await {
        Ok(()) => {
            let _ = writeln!(out, "Intention deleted.");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "Error deleting the intention: {e}");
            1
        }
    }
}

/// `DELETE` by ID, or by name: `exact` where the agent has it, else (Consul 1.8) the ID
/// found in the list, as the consul 1.8 CLI does.
async fn delete_target(client: &ConsulClient, target: &Target) -> Result<(), String> {
    let (path, query) = target.endpoint();
    let error = match client
        .call(Method::DELETE, &path, &query, None, false)
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if !lacks_exact(&e) => return Err(e.to_string()),
        Err(e) => e,
    };
    let Target::Pair {
        source,
        destination,
    } = target
    else {
        return Err(error.to_string());
    };
    match find_in_list(client, source, destination).await? {
        Some(ixn) => {
            let path = format!("/v1/connect/intentions/{}", text(&ixn, "ID"));
            client
                .call(Method::DELETE, &path, &[], None, false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        None => Err(target.not_found()),
    }
}

/// One intention by source and destination: `GET .../exact`, or on an agent without it
/// (Consul 1.8) the matching entry of `GET /v1/connect/intentions`. `Ok(None)`: no such
/// intention.
pub(super) async fn find_pair(
    client: &ConsulClient,
    source: &str,
    destination: &str,
) -> Result<Option<Value>, String> {
    let query = [("source", source), ("destination", destination)];
    match client
        .call(
            Method::GET,
            "/v1/connect/intentions/exact",
            &query,
            None,
            true,
        )
        .await
    {
        Ok(found) => Ok(found),
        Err(e) if lacks_exact(&e) => find_in_list(client, source, destination).await,
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `error` is how Consul 1.8 answers `/v1/connect/intentions/exact`: it routes
/// `exact` as an intention ID and refuses it (GET 400, PUT/DELETE 500) with this text.
/// Deciding per call costs a 1.8 agent one extra request and needs no `agent:read` token
/// (which detecting the version through `/v1/agent/self` would).
pub(super) fn lacks_exact(error: &ClientError) -> bool {
    matches!(error, ClientError::Status { code: 400 | 500, body } if body.contains("UUID must be 36 characters"))
}

/// The consul 1.8 CLI's finder: the listed intention whose source and destination match.
async fn find_in_list(
    client: &ConsulClient,
    source: &str,
    destination: &str,
) -> Result<Option<Value>, String> {
    let list = client
        .call(Method::GET, "/v1/connect/intentions", &[], None, false)
        .await
        .map_err(|e| e.to_string())?;
    let found = list
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|ixn| {
            side(ixn, "SourceNS", "SourceName") == default_ns(source)
                && side(ixn, "DestinationNS", "DestinationName") == default_ns(destination)
        });
    Ok(found.cloned())
}

/// `default/web` and `web` name the same thing.
fn default_ns(name: &str) -> &str {
    name.strip_prefix("default/").unwrap_or(name)
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
