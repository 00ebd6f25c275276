//! http-echo's command line, parsed the way Go's `flag` package parses it.
//!
//! The seed runs `hashicorp/http-echo` with `args: ["-text=\"hello world\"", "-listen=:8080"]`.
//! Go's `flag` accepts `-name=value`, `-name value` and the same with two dashes, stops at the
//! first argument that is not a flag (or after `--`), and treats `-version` as a boolean. The
//! value is taken verbatim: Kubernetes passes the quotes in `-text="hello world"` to the program
//! literally, and http-echo answers with them, which is why the seed prints `"hello world"`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Serve `text` on `listen`, answering with `status`.
    Serve(Options),
    /// `-version`: print the version and exit 0.
    Version,
    /// `-h`/`-help`: print usage and exit 0.
    Help,
}

/// The options of a server run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// `-text`, verbatim (quotes included).
    pub text: String,
    /// `-listen` as written (default `:5678`); see [`resolve_listen`].
    pub listen: String,
    /// `-status-code` (default 200).
    pub status: u16,
}

/// A command line http-echo refuses, with the exit code http-echo uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagError {
    /// What to print on stderr (with the usage text for a usage error).
    pub message: String,
    /// 2 for a usage error, 127 for a missing `-text` or stray arguments (as http-echo).
    pub exit_code: i32,
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FlagError {}

/// Go's `flag.PrintDefaults` output for http-echo's flags, as `-help` prints it.
pub(crate) const USAGE: &str = "\
Usage of http-echo:
  -listen string
        address and port to listen (default \":5678\")
  -status-code int
        http response code, e.g.: 200 (default 200)
  -text string
        text to put on the webpage
  -version
        display version information";

/// Parses the arguments after the program name.
pub(crate) fn parse<I, S>(args: I) -> Result<Command, FlagError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = args.into_iter().map(Into::into);
    let mut text = String::new();
    let mut listen = String::from(":5678");
    let mut status: u16 = 200;
    let mut version = false;
    let mut positional = Vec::new();

    while let Some(arg) = args.next() {
        if arg == "--" {
            positional.extend(args.by_ref());
            break;
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            positional.push(arg);
            positional.extend(args.by_ref());
            break;
        }
        let body = arg
            .strip_prefix("--")
            .unwrap_or_else(|| &arg[1..])
            .to_string();
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(usage_error(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (body, None),
        };
        match name.as_str() {
            "h" | "help" => return Ok(Command::Help),
            "version" => {
                version = match inline.as_deref() {
                    None => true,
                    Some(value) => parse_go_bool(value).ok_or_else(|| {
                        usage_error(format!(
                            "invalid boolean value {value:?} for -version: parse error"
                        ))
                    })?,
                }
            }
            "text" | "listen" | "status-code" => {
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .ok_or_else(|| usage_error(format!("flag needs an argument: -{name}")))?,
                };
                match name.as_str() {
                    "text" => text = value,
                    "listen" => listen = value,
                    _ => {
                        status = parse_status(&value).ok_or_else(|| {
                            usage_error(format!(
                                "invalid value {value:?} for flag -status-code: \
                                 expected an HTTP status code 100-599"
                            ))
                        })?
                    }
                }
            }
            _ => {
                return Err(usage_error(format!(
                    "flag provided but not defined: -{name}"
                )))
            }
        }
    }

    if version {
        return Ok(Command::Version);
    }
    if text.is_empty() {
        return Err(FlagError {
            message: "Missing -text option!".into(),
            exit_code: 127,
        });
    }
    if !positional.is_empty() {
        return Err(FlagError {
            message: format!("Too many arguments! (unexpected {positional:?})"),
            exit_code: 127,
        });
    }
    Ok(Command::Serve(Options {
        text,
        listen,
        status,
    }))
}

/// Resolves a Go listen address: `:8080` means every IPv4 address, `host:port` is looked up.
pub(crate) fn resolve_listen(listen: &str) -> Result<SocketAddr, String> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid -listen {listen:?}: expected [host]:port, e.g. :8080"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid -listen {listen:?}: port {port:?} is not 0-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("invalid -listen {listen:?}: cannot resolve {host:?}: {err}"))?
        .next()
        .ok_or_else(|| format!("invalid -listen {listen:?}: {host:?} has no address"))
}

fn usage_error(message: String) -> FlagError {
    FlagError {
        message: format!("{message}\n{USAGE}"),
        exit_code: 2,
    }
}

/// The spellings Go's `strconv.ParseBool` accepts.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_status(value: &str) -> Option<u16> {
    value
        .parse::<u16>()
        .ok()
        .filter(|code| (100..=599).contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Options {
        match parse(args.iter().copied()) {
            Ok(Command::Serve(options)) => options,
            other => panic!("{args:?} parsed to {other:?}, expected a server run"),
        }
    }

    fn error(args: &[&str]) -> FlagError {
        match parse(args.iter().copied()) {
            Err(err) => err,
            other => panic!("{args:?} parsed to {other:?}, expected an error"),
        }
    }

    #[test]
    fn seed_args_keep_the_quotes() {
        let options = serve(&["-text=\"hello world\"", "-listen=:8080"]);
        assert_eq!(options.text, "\"hello world\"");
        assert_eq!(options.listen, ":8080");
        assert_eq!(options.status, 200);
    }

    #[test]
    fn every_go_flag_spelling_is_accepted() {
        for args in [
            &["-text=hi", "-listen=:9000"][..],
            &["-text", "hi", "-listen", ":9000"],
            &["--text=hi", "--listen=:9000"],
            &["--text", "hi", "--listen", ":9000"],
        ] {
            let options = serve(args);
            assert_eq!(options.text, "hi", "{args:?}");
            assert_eq!(options.listen, ":9000", "{args:?}");
        }
    }

    #[test]
    fn values_are_verbatim() {
        assert_eq!(serve(&["-text=a=b"]).text, "a=b");
        assert_eq!(serve(&["-text", "-not-a-flag"]).text, "-not-a-flag");
        assert_eq!(serve(&["-text=  spaced  "]).text, "  spaced  ");
    }

    #[test]
    fn later_flags_win_and_listen_defaults_like_http_echo() {
        let options = serve(&["-text=one", "-text=two"]);
        assert_eq!(options.text, "two");
        assert_eq!(options.listen, ":5678");
    }

    #[test]
    fn status_code_is_parsed_and_checked() {
        assert_eq!(serve(&["-text=x", "-status-code=503"]).status, 503);
        let err = error(&["-text=x", "-status-code", "abc"]);
        assert_eq!(err.exit_code, 2);
        assert!(err.message.contains("\"abc\""), "{}", err.message);
        assert!(error(&["-text=x", "-status-code=99"])
            .message
            .contains("-status-code"));
    }

    #[test]
    fn missing_text_exits_127_like_http_echo() {
        let err = error(&["-listen=:8080"]);
        assert_eq!(err.exit_code, 127);
        assert_eq!(err.message, "Missing -text option!");
        assert_eq!(error(&["-text="]).exit_code, 127);
    }

    #[test]
    fn arguments_after_the_flags_are_refused() {
        let err = error(&["-text=x", "extra"]);
        assert_eq!(err.exit_code, 127);
        assert!(err.message.contains("extra"), "{}", err.message);
        // Go stops at the first non-flag: a flag after it is a positional argument too.
        assert_eq!(error(&["extra", "-text=x"]).exit_code, 127);
        assert_eq!(error(&["-text=x", "--", "-listen=:1"]).exit_code, 127);
    }

    #[test]
    fn bad_flags_name_themselves() {
        let err = error(&["-bogus=1"]);
        assert_eq!(err.exit_code, 2);
        assert!(err
            .message
            .starts_with("flag provided but not defined: -bogus"));
        assert!(error(&["-text"])
            .message
            .starts_with("flag needs an argument: -text"));
        assert!(error(&["---text=x"])
            .message
            .starts_with("bad flag syntax: ---text=x"));
        assert!(error(&["-=x"]).message.starts_with("bad flag syntax: -=x"));
    }

    #[test]
    fn version_and_help() {
        assert_eq!(parse(["-version"]), Ok(Command::Version));
        assert_eq!(parse(["--version=true"]), Ok(Command::Version));
        assert!(matches!(
            parse(["-version=false", "-text=x"]),
            Ok(Command::Serve(_))
        ));
        assert_eq!(error(&["-version=maybe"]).exit_code, 2);
        assert_eq!(parse(["-h"]), Ok(Command::Help));
        assert_eq!(parse(["--help"]), Ok(Command::Help));
    }

    #[test]
    fn listen_addresses_resolve_like_go() {
        assert_eq!(resolve_listen(":8080"), Ok("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(
            resolve_listen("127.0.0.1:0"),
            Ok("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(resolve_listen("[::1]:81"), Ok("[::1]:81".parse().unwrap()));
        assert!(resolve_listen("8080").unwrap_err().contains("\"8080\""));
        assert!(resolve_listen(":http").unwrap_err().contains("\"http\""));
        assert!(resolve_listen(":70000").is_err());
    }
}
