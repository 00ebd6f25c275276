//! The read-only intention commands: `get`, `list`, `check` and `match`.

use std::io::Write;

use reqwest::Method;
use serde_json::Value;

use super::{describe, find_pair, side, target_command, text, Target};
use crate::cli::columnize;
use crate::cli::goflag::parse_or_usage;

const GET_USAGE: &str = "Usage: tandem-agent intention get [options] SRC DST
Usage: tandem-agent intention get [options] ID

  Read and show the details about an intention.";

pub(super) async fn get(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (client, target) = match target_command(args, GET_USAGE, out, err) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let found = match &target {
        Target::Pair {
            source,
            destination,
        } => find_pair(&client, source, destination).await,
        Target::Id(_) => {
            let (path, query) = target.endpoint();
            client
                .call(Method::GET, &path, &query, None, true)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let ixn = match found {
        Ok(Some(ixn)) => ixn,
        Ok(None) => {
            let _ = writeln!(err, "{}", target.not_found());
            return 1;
        }
        Err(e) => {
            let _ = writeln!(err, "Error reading the intention: {e}");
            return 1;
        }
    };
    let mut rows = vec![
        format!("Source:\x1f{}", side(&ixn, "SourceNS", "SourceName")),
        format!(
            "Destination:\x1f{}",
            side(&ixn, "DestinationNS", "DestinationName")
        ),
    ];
    for (key, label) in [
        ("Action", "Action"),
        ("ID", "ID"),
        ("Description", "Description"),
    ] {
        let value = text(&ixn, key);
        if !value.is_empty() {
            rows.push(format!("{label}:\x1f{value}"));
        }
    }
    if let Some(Value::Object(meta)) = ixn.get("Meta") {
        let mut keys: Vec<&String> = meta.keys().collect();
        keys.sort();
        for k in keys {
            rows.push(format!(
                "Meta[{k}]:\x1f{}",
                meta[k].as_str().unwrap_or_default()
            ));
        }
    }
    rows.push(format!(
        "Created At:\x1f{}",
        rfc850(text(&ixn, "CreatedAt"))
    ));
    let _ = writeln!(out, "{}", columnize::format(&rows, '\x1f'));
    if let Some(Value::Array(permissions)) = ixn.get("Permissions") {
        if !permissions.is_empty() {
            let pretty = serde_json::to_string_pretty(permissions).unwrap_or_default();
            let _ = writeln!(out, "Permissions:\n{pretty}");
        }
    }
    0
}

/// Go's `time.RFC850` in UTC (`Monday, 02-Jan-06 15:04:05 UTC`); the zero time when unset.
fn rfc850(rfc3339: &str) -> String {
    let parsed =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.to_offset(time::UtcOffset::UTC));
    let Some(t) = parsed else {
        return "Monday, 01-Jan-01 00:00:00 UTC".to_string();
    };
    let month = format!("{:?}", t.month());
    format!(
        "{:?}, {:02}-{}-{:02} {:02}:{:02}:{:02} UTC",
        t.weekday(),
        t.day(),
        &month[..3],
        t.year().rem_euclid(100),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub(super) async fn list(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let usage = "Usage: tandem-agent intention list\n\n  List all intentions.";
    let parsed = match parse_or_usage(args, &[], &[], usage, 1, out, err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let client = match parsed.client_or_report(1, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let list = match client
        .call(Method::GET, "/v1/connect/intentions", &[], None, false)
        .await
    {
        Ok(Some(Value::Array(list))) => list,
        Ok(_) => Vec::new(),
        Err(e) => {
            let _ = writeln!(err, "Failed to retrieve the intentions list: {e}");
            return 1;
        }
    };
    if list.is_empty() {
        let _ = writeln!(err, "There are no intentions.");
        return 2;
    }
    let mut rows = vec!["ID|Source|Action|Destination|Precedence".to_string()];
    for ixn in &list {
        let precedence = ixn.get("Precedence").and_then(Value::as_i64).unwrap_or(0);
        rows.push(format!(
            "{}|{}|{}|{}|{precedence}",
            text(ixn, "ID"),
            text(ixn, "SourceName"),
            text(ixn, "Action"),
            text(ixn, "DestinationName")
        ));
    }
    let _ = writeln!(out, "{}", columnize::format(&rows, '|'));
    0
}

const CHECK_USAGE: &str = "Usage: tandem-agent intention check [options] SRC DST

  Check whether a connection between SRC and DST would be allowed by Connect given the
  current intentions. Exit code 0: allowed, 1: denied, 2: error (as consul intention check).";

pub(super) async fn check(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let parsed = match parse_or_usage(args, &[], &["source-type"], CHECK_USAGE, 2, out, err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let [source, destination] = parsed.positional.as_slice() else {
        let _ = writeln!(
            err,
            "Error: command requires exactly two arguments: src and dst"
        );
        return 2;
    };
    let source_type = parsed
        .value("source-type")
        .unwrap_or_else(|| "consul".to_string());
    if source_type != "consul" {
        let _ = writeln!(
            err,
            "Error: -source-type must be \"consul\", got {source_type:?}"
        );
        return 2;
    }
    let client = match parsed.client_or_report(2, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let query = [
        ("source", source.as_str()),
        ("destination", destination.as_str()),
        ("source-type", source_type.as_str()),
    ];
    match client
        .call(
            Method::GET,
            "/v1/connect/intentions/check",
            &query,
            None,
            false,
        )
        .await
    {
        Ok(Some(body)) => {
            if body
                .get("Allowed")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                let _ = writeln!(out, "Allowed");
                0
            } else {
                let _ = writeln!(out, "Denied");
                1
            }
        }
        Ok(None) => 2,
        Err(e) => {
            let _ = writeln!(err, "Error checking the connection: {e}");
            2
        }
    }
}

pub(super) async fn matches(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let usage = "Usage: tandem-agent intention match [options] SRC_OR_DST\n\n  Show the intentions that match a source (-source) or destination (-destination, the default), in evaluation order.";
    let parsed = match parse_or_usage(args, &["source", "destination"], &[], usage, 1, out, err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if parsed.flag("source") && parsed.flag("destination") {
        let _ = writeln!(err, "Only one of -source or -destination may be specified.");
        return 1;
    }
    let [name] = parsed.positional.as_slice() else {
        let _ = writeln!(
            err,
            "Error: command requires exactly one argument: src or dst"
        );
        return 1;
    };
    let by = if parsed.flag("source") {
        "source"
    } else {
        "destination"
    };
    let client = match parsed.client_or_report(1, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let query = [("by", by), ("name", name.as_str())];
    match client
        .call(
            Method::GET,
            "/v1/connect/intentions/match",
            &query,
            None,
            false,
        )
        .await
    {
        Ok(Some(body)) => {
            for ixn in body
                .get(name.as_str())
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let _ = writeln!(out, "{}", describe(ixn));
            }
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(err, "Error matching the connection: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc850_like_go() {
        assert_eq!(rfc850(""), "Monday, 01-Jan-01 00:00:00 UTC");
        assert_eq!(
            rfc850("2018-05-21T16:41:27.977155457Z"),
            "Monday, 21-May-18 16:41:27 UTC"
        );
    }
}
