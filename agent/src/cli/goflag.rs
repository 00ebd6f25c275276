//! Go `flag` package semantics for the consul-compatible commands: `-flag` or `--flag`,
//! `-flag=value` or `-flag value`, booleans take `=false`, parsing stops at the first
//! non-flag or `--`, and the consul CLI's HTTP flags (`-http-addr`, `-token`, ...) everywhere.

use std::collections::HashMap;
use std::io::Write;

use super::consul_client::ConsulClient;

/// Go `flag` parsing: single or double dash, `-f=v` or `-f v`, stops at the first non-flag.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    bools: HashMap<String, bool>,
    pub values: HashMap<String, Vec<String>>,
    pub positional: Vec<String>,
    help: bool,
}

const CLIENT_FLAGS: &[&str] = &[
    "http-addr",
    "token",
    "token-file",
    "datacenter",
    "namespace",
    "partition",
    "ca-file",
    "ca-path",
    "client-cert",
    "client-key",
    "tls-server-name",
];

pub(crate) fn parse_flags(
    args: &[String],
    bools: &[&str],
    values: &[&str],
) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            parsed.help = true;
            i += 1;
            continue;
        }
        if bools.contains(&name) || name == "stale" {
            let value = match inline.as_deref() {
                None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
                Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
                Some(v) => {
                    return Err(format!(
                        "invalid boolean value {v:?} for -{name}: parse error"
                    ))
                }
            };
            parsed.bools.insert(name.to_string(), value);
        } else if values.contains(&name) || CLIENT_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| format!("flag needs an argument: -{name}"))?
                }
            };
            parsed
                .values
                .entry(name.to_string())
                .or_default()
                .push(value);
        } else {
            return Err(format!("flag provided but not defined: -{name}"));
        }
        i += 1;
    }
    parsed.positional = args[i..].to_vec();
    Ok(parsed)
}

impl Parsed {
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }

    pub(crate) fn value(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    pub(crate) fn client(&self) -> Result<ConsulClient, String> {
        ConsulClient::from_env(
            self.value("http-addr"),
            self.value("token"),
            self.value("token-file"),
        )
    }

    /// [`Parsed::client`], or the consul CLI's complaint on `err` and `Err(failure)` (the
    /// command's exit code).
    pub(crate) fn client_or_report(
        &self,
        failure: i32,
        err: &mut dyn Write,
    ) -> Result<ConsulClient, i32> {
        self.client().map_err(|e| {
            let _ = writeln!(err, "Error connecting to Consul agent: {e}");
            failure
        })
    }
}

/// Parses flags or prints Go's complaint and the usage; `Err(code)` ends the command.
pub(crate) fn parse_or_usage(
    args: &[String],
    bools: &[&str],
    values: &[&str],
    usage: &str,
    failure: i32,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Parsed, i32> {
    match parse_flags(args, bools, values) {
        Ok(parsed) if parsed.help => {
            let _ = writeln!(out, "{usage}");
            Err(0)
        }
        Ok(parsed) => Ok(parsed),
        Err(message) => {
            let _ = writeln!(err, "{message}\n{usage}");
            Err(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_flags_parse_single_and_double_dash() {
        let p = parse_flags(
            &strings(&["-deny", "--replace", "web", "db"]),
            &["deny", "replace"],
            &[],
        )
        .unwrap();
        assert!(p.flag("deny") && p.flag("replace"));
        assert_eq!(p.positional, strings(&["web", "db"]));
        let p = parse_flags(&strings(&["web", "-deny"]), &["deny"], &[]).unwrap();
        assert!(!p.flag("deny"));
        assert_eq!(p.positional, strings(&["web", "-deny"]));
        let e = parse_flags(&strings(&["-bogus"]), &[], &[]).unwrap_err();
        assert_eq!(e, "flag provided but not defined: -bogus");
        let p = parse_flags(&strings(&["-http-addr", "x:1", "a"]), &[], &[]).unwrap();
        assert_eq!(p.value("http-addr").as_deref(), Some("x:1"));
    }
}
