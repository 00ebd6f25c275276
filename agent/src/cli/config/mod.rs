//! `tandem-agent config ...`: the words, output and exit codes of `consul config` (`write`,
//! `read`, `list`, `delete`), over Consul's public HTTP API only, so it works against a real
//! Consul agent as well. `write` takes JSON or the HCL of Consul's docs (`hcl`); `read`
//! prints the entry as `consul config read` does (the Go `api` struct's fields, indented).

mod hcl;

use std::io::{Read, Write};

use reqwest::Method;
use serde_json::{Map, Value};

use super::consul_client::ConsulClient;
use super::goflag::{parse_or_usage, Parsed};

const HELP: &str = "Usage: tandem-agent config <subcommand> [options] [args]

  Manage config entries (Consul's centralized configuration), like `consul config`.
  tandem-agent dev keeps the kinds service-defaults and proxy-defaults; against a
  real Consul agent every kind works.

  Write a config:

    $ tandem-agent config write web.service-defaults.hcl

  Read a config:

    $ tandem-agent config read -kind service-defaults -name web

  List all configs for a type:

    $ tandem-agent config list -kind service-defaults

  Delete a config:

    $ tandem-agent config delete -kind service-defaults -name web

Subcommands:
    delete    Delete a centralized config entry
    list      List centralized config entries of a given kind
    read      Read a centralized config entry
    write     Create or update a centralized config entry

HTTP API options (every subcommand):
  -http-addr=<address>  Agent address; also CONSUL_HTTP_ADDR (default 127.0.0.1:8500).
  -token=<value>        ACL token; also CONSUL_HTTP_TOKEN.
  -token-file=<path>    File with the ACL token; also CONSUL_HTTP_TOKEN_FILE.
";

const WRITE_USAGE: &str = "Usage: tandem-agent config write [options] <configuration>

  Request a config entry to be created or updated. The configuration
  argument is either a file path or '-' to indicate that the config
  should be read from stdin. The data should be either in HCL or
  JSON form (JSON when it starts with '{').

  Example (from file), web.hcl holding:

    Kind     = \"service-defaults\"
    Name     = \"web\"
    Protocol = \"http\"

    $ tandem-agent config write web.hcl

  Example (from stdin):

    $ tandem-agent config write -

Options:
  -cas                  Perform a Check-And-Set operation: write only if the entry's
                        ModifyIndex is -modify-index (0: only if it does not exist).
  -modify-index=<n>     The ModifyIndex for -cas (default 0).";

const READ_USAGE: &str =
    "Usage: tandem-agent config read [options] -kind <config kind> -name <config name>

  Reads the config entry specified by the given kind and name and outputs its
  JSON representation.

  Example:

    $ tandem-agent config read -kind proxy-defaults -name global";

const LIST_USAGE: &str = "Usage: tandem-agent config list [options] -kind <config kind>

  Lists all of the config entries for a given kind. The -kind parameter
  is required.

  Example:

    $ tandem-agent config list -kind service-defaults";

const DELETE_USAGE: &str =
    "Usage: tandem-agent config delete [options] -kind <config kind> -name <config name>

  Deletes the configuration entry specified by the kind and name.

  Example:

    $ tandem-agent config delete -kind service-defaults -name web";

/// The kinds the Go `api` package knows (`makeConfigEntry`); `read` refuses others locally.
const API_KINDS: &[&str] = &[
    "service-defaults",
    "proxy-defaults",
    "service-router",
    "service-splitter",
    "service-resolver",
    "ingress-gateway",
    "terminating-gateway",
    "service-intentions",
    "mesh",
];

/// Runs one `config` sub-command; returns the process exit code.
pub async fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((sub, rest)) = args.split_first() else {
        let _ = write!(err, "{HELP}");
        return 1;
    };
    match sub.as_str() {
        "write" => write_entry(rest, &mut std::io::stdin(), out, err).await,
        "read" => read(rest, out, err).await,
        "list" => list(rest, out, err).await,
        "delete" => delete(rest, out, err).await,
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

/// `config write FILE|-`: `Config entry written: KIND/NAME`, or why not.
async fn write_entry(
    args: &[String],
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let parsed = match parse_or_usage(args, &["cas"], &["modify-index"], WRITE_USAGE, 1, out, err) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let [source] = parsed.positional.as_slice() else {
        let _ = writeln!(
            err,
            "Must provide exactly one positional argument to specify the config entry to write"
        );
        return 1;
    };
    let modify_index = match parsed.value("modify-index").map(|v| v.parse::<u64>()) {
        None => 0,
        Some(Ok(index)) => index,
        Some(Err(_)) => {
            let value = parsed.value("modify-index").unwrap_or_default();
            let _ = writeln!(
                err,
                "invalid value {value:?} for flag -modify-index: parse error\n{WRITE_USAGE}"
            );
            return 1;
        }
    };
    let data = match load(source, stdin) {
        Ok(data) => data,
        Err(e) => {
            let _ = writeln!(err, "Failed to load data: {e}");
            return 1;
        }
    };
    let body = match parse_input(&data) {
        Ok(body) => body,
        Err(e) => {
            // Consul's words, prefix twice included.
            let _ = writeln!(
                err,
                "Failed to decode config entry input: Failed to decode config entry input: {e}"
            );
            return 1;
        }
    };
    let (kind, name) = match crate::config_entries::check_for_write(&body) {
        Ok(found) => found,
        Err(e) => {
            let _ = writeln!(err, "Failed to decode config entry input: {e}");
            return 1;
        }
    };
    let Some(client) = connect(&parsed, err) else {
        return 1;
    };
    let cas = modify_index.to_string();
    let query: Vec<(&str, &str)> = if parsed.flag("cas") {
        vec![("cas", cas.as_str())]
    } else {
        Vec::new()
    };
    let written = client
        .call(Method::PUT, "/v1/config", &query, Some(&body), false)
        .await;
    match written {
        Ok(Some(Value::Bool(true))) => {
            let _ = writeln!(out, "Config entry written: {kind}/{name}");
            0
        }
        Ok(_) => {
            let _ = writeln!(err, "Config entry not updated: {kind}/{name}");
            1
        }
        Err(e) => {
            let _ = writeln!(err, "Error writing config entry {kind}/{name}: {e}");
            1
        }
    }
}

/// `config read -kind K -name N`: the entry as indented JSON.
async fn read(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (parsed, kind, name) = match kind_and_name(args, READ_USAGE, true, out, err) {
        Ok(found) => found,
        Err(code) => return code,
    };
    if !API_KINDS.contains(&kind.as_str()) {
        let _ = writeln!(
            err,
            "Error reading config entry {kind}/{name}: invalid config entry kind: {kind}"
        );
        return 1;
    }
    let Some(client) = connect(&parsed, err) else {
        return 1;
    };
    let path = format!("/v1/config/{kind}/{name}");
    match client.call(Method::GET, &path, &[], None, false).await {
        Ok(entry) => {
            let entry = api_shape(entry.unwrap_or(Value::Null));
            let text = String::from_utf8_lossy(&crate::json::encode(&entry, false)).into_owned();
            let _ = writeln!(out, "{text}");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "Error reading config entry {kind}/{name}: {e}");
            1
        }
    }
}

/// `config list -kind K`: one name per line.
async fn list(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (parsed, kind, _) = match kind_and_name(args, LIST_USAGE, false, out, err) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let Some(client) = connect(&parsed, err) else {
        return 1;
    };
    let path = format!("/v1/config/{kind}");
    match client.call(Method::GET, &path, &[], None, false).await {
        Ok(entries) => {
            let entries = entries
                .and_then(|e| e.as_array().cloned())
                .unwrap_or_default();
            for entry in entries {
                let name = entry
                    .get("Name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let _ = writeln!(out, "{name}");
            }
            0
        }
        Err(e) => {
            let _ = writeln!(err, "Error listing config entries for kind {kind:?}: {e}");
            1
        }
    }
}

/// `config delete -kind K -name N`.
async fn delete(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (parsed, kind, name) = match kind_and_name(args, DELETE_USAGE, true, out, err) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let Some(client) = connect(&parsed, err) else {
        return 1;
    };
    let path = format!("/v1/config/{kind}/{name}");
    match client.call(Method::DELETE, &path, &[], None, false).await {
        Ok(_) => {
            let _ = writeln!(out, "Config entry deleted: {kind}/{name}");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "Error deleting config entry {kind}/{name}: {e}");
            1
        }
    }
}

/// The flags of `read`, `list` and `delete`: `-kind` (and `-name` when `with_name`), both
/// required, with the consul CLI's complaints. `Err` is the exit code (0 after `-help`).
fn kind_and_name(
    args: &[String],
    usage: &str,
    with_name: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(Parsed, String, String), i32> {
    let parsed = parse_or_usage(args, &[], &["kind", "name"], usage, 1, out, err)?;
    let kind = parsed.value("kind").unwrap_or_default();
    let name = parsed.value("name").unwrap_or_default();
    if kind.is_empty() {
        let _ = writeln!(err, "Must specify the -kind parameter");
        return Err(1);
    }
    if with_name && name.is_empty() {
        let _ = writeln!(err, "Must specify the -name parameter");
        return Err(1);
    }
    Ok((parsed, kind, name))
}

/// The agent client, or the consul CLI's complaint (its `config` commands say "connect").
fn connect(parsed: &Parsed, err: &mut dyn Write) -> Option<ConsulClient> {
    match parsed.client() {
        Ok(client) => Some(client),
        Err(e) => {
            let _ = writeln!(err, "Error connect to Consul agent: {e}");
            None
        }
    }
}

/// `helpers.LoadDataSourceNoRaw`: `-` is stdin, anything else a file.
fn load(source: &str, stdin: &mut dyn Read) -> Result<String, String> {
    if source.is_empty() {
        return Err("Failed to load data: must specify a file path or '-' for stdin".into());
    }
    if source == "-" {
        let mut data = String::new();
        stdin
            .read_to_string(&mut data)
            .map_err(|e| format!("Failed to read stdin: {e}"))?;
        return Ok(data);
    }
    std::fs::read_to_string(source).map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        format!("Failed to read file: open {source}: {cause}")
    })
}

/// JSON when the first non-blank character is `{` (as the consul CLI decides), else HCL.
fn parse_input(data: &str) -> Result<Value, String> {
    if data.trim_start().starts_with('{') {
        crate::json::parse_body(data.as_bytes()).map_err(|e| e.0)
    } else {
        hcl::parse(data)
    }
}

/// An entry as `consul config read` prints it: decoded into the Go `api` package's struct,
/// whose fields, order and `omitempty` differ from the agent's (`Protocol` and an empty
/// `Config` are left out, `TransparentProxy` moves before `Config`, `ExposePath` always has
/// `ParsedFromCheck`). Kinds other than service-defaults and proxy-defaults print as sent.
fn api_shape(entry: Value) -> Value {
    let Value::Object(fields) = entry else {
        return entry;
    };
    let order: &[&str] = match fields.get("Kind").and_then(Value::as_str) {
        Some("service-defaults") => &[
            "Kind",
            "Name",
            "Namespace",
            "Protocol",
            "Mode",
            "TransparentProxy",
            "MeshGateway",
            "Expose",
            "ExternalSNI",
            "UpstreamConfig",
            "Meta",
            "CreateIndex",
            "ModifyIndex",
        ],
        Some("proxy-defaults") => &[
            "Kind",
            "Name",
            "Namespace",
            "Mode",
            "TransparentProxy",
            "Config",
            "MeshGateway",
            "Expose",
            "Meta",
            "CreateIndex",
            "ModifyIndex",
        ],
        _ => return Value::Object(fields),
    };
    let mut shaped = Map::new();
    for key in order {
        let Some(value) = fields.get(*key) else {
            continue;
        };
        let value = match *key {
            "Expose" => api_expose(value),
            _ => value.clone(),
        };
        let keep = match *key {
            "Kind" | "Name" | "MeshGateway" | "Expose" | "CreateIndex" | "ModifyIndex" => true,
            // Pointers: only nil is left out, an empty struct prints as {}.
            "TransparentProxy" | "UpstreamConfig" => !value.is_null(),
            _ => !is_empty(&value),
        };
        if keep {
            shaped.insert((*key).to_string(), value);
        }
    }
    Value::Object(shaped)
}

/// `api.ExposeConfig`: `ParsedFromCheck` is printed even when false.
fn api_expose(expose: &Value) -> Value {
    let mut expose = expose.clone();
    if let Some(Value::Array(paths)) = expose.get_mut("Paths") {
        for path in paths.iter_mut().filter_map(Value::as_object_mut) {
            path.entry("ParsedFromCheck").or_insert(Value::Bool(false));
        }
    }
    expose
}

/// Go's `omitempty` for the strings and maps an `api` entry holds.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn read_prints_the_api_struct() {
        let entry = json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"},
            "TransparentProxy": {}, "MeshGateway": {}, "Expose": {"Paths": [{"Path": "/m"}]},
            "Meta": {"a": "b"}, "CreateIndex": 20, "ModifyIndex": 20});
        let keys: Vec<String> = api_shape(entry.clone())
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "Kind",
                "Name",
                "TransparentProxy",
                "Config",
                "MeshGateway",
                "Expose",
                "Meta",
                "CreateIndex",
                "ModifyIndex"
            ]
        );
        assert_eq!(
            api_shape(entry)["Expose"],
            json!({"Paths": [{"Path": "/m", "ParsedFromCheck": false}]})
        );
        let service = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "",
            "TransparentProxy": {"OutboundListenerPort": 15001}, "MeshGateway": {}, "Expose": {},
            "CreateIndex": 1, "ModifyIndex": 2});
        let keys: Vec<String> = api_shape(service)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "Kind",
                "Name",
                "TransparentProxy",
                "MeshGateway",
                "Expose",
                "CreateIndex",
                "ModifyIndex"
            ]
        );
    }

    #[test]
    fn input_is_json_or_hcl() {
        assert_eq!(
            parse_input(" {\"Kind\": \"service-defaults\"}").unwrap(),
            json!({"Kind": "service-defaults"})
        );
        assert_eq!(
            parse_input("Kind = \"service-defaults\"\nName = \"web\"\nProtocol = \"http\"\n")
                .unwrap(),
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
        );
        assert_eq!(parse_input("{").unwrap_err(), "unexpected EOF");
    }
}
