//! `intention create`: from `SRC DST` or `-file`, optionally replacing what exists.

use std::io::Write;

use reqwest::Method;
use serde_json::{json, Value};

use super::{describe, find_pair};
use crate::cli::consul_client::ConsulClient;
use crate::cli::goflag::{parse_or_usage, Parsed};

const CREATE_USAGE: &str = "Usage: tandem-agent intention create [options] SRC DST

  Create an intention. An \"allow\" intention is created by default; -deny creates a
  \"deny\" one. If an intention for the pair exists, creation fails unless -replace is given.

Command Options:
  -allow      Create an intention that allows when matched.
  -deny       Create an intention that denies when matched.
  -replace    Replace matching intentions.
  -file       Read intentions (api.Intention JSON) from the files given instead of SRC DST
              (\"-\" reads stdin).
  -meta=<key=value>  Metadata to set on the intention (repeatable).";

pub(super) async fn create(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let parsed = match parse_or_usage(
        args,
        &["allow", "deny", "replace", "file"],
        &["meta"],
        CREATE_USAGE,
        1,
        out,
        err,
    ) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Consul's FlagMapValue refuses a -meta without "=" while parsing flags.
    let mut metas = parsed.values.get("meta").into_iter().flatten();
    if let Some(bad) = metas.find(|pair| !pair.contains('=')) {
        let _ = writeln!(
            err,
            "invalid value {bad:?} for flag -meta: Missing \"=\" value in argument: {bad}\n{CREATE_USAGE}"
        );
        return 1;
    }
    if parsed.flag("allow") && parsed.flag("deny") {
        let _ = writeln!(err, "Only one of -allow or -deny may be specified.");
        return 1;
    }
    let intentions = if parsed.flag("file") {
        intentions_from_files(&parsed.positional)
    } else {
        intention_from_args(&parsed).map(|ixn| vec![ixn])
    };
    let intentions = match intentions {
        Ok(list) => list,
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            return 1;
        }
    };
    let client = match parsed.client_or_report(1, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for ixn in &intentions {
        if parsed.flag("replace") {
            match replace(&client, ixn).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(message) => {
                    let _ = writeln!(err, "{message}");
                    return 1;
                }
            }
        }
        let created = client
            .call(
                Method::POST,
                "/v1/connect/intentions",
                &[],
                Some(ixn),
                false,
            )
            .await;
        if let Err(e) = created {
            let _ = writeln!(err, "Error creating intention {:?}: {e}", describe(ixn));
            return 1;
        }
        let _ = writeln!(out, "Created: {}", describe(ixn));
    }
    0
}

/// The intention `create SRC DST` describes (`api.Intention` JSON, empty fields omitted).
fn intention_from_args(parsed: &Parsed) -> Result<Value, String> {
    let [source, destination] = parsed.positional.as_slice() else {
        return Err("Must specify two arguments: source and destination".to_string());
    };
    let (src_ns, src) =
        split_target(source).map_err(|e| format!("Invalid intention source: {e}"))?;
    let (dst_ns, dst) =
        split_target(destination).map_err(|e| format!("Invalid intention destination: {e}"))?;
    let mut ixn = serde_json::Map::new();
    if !src_ns.is_empty() {
        ixn.insert("SourceNS".into(), json!(src_ns));
    }
    ixn.insert("SourceName".into(), json!(src));
    if !dst_ns.is_empty() {
        ixn.insert("DestinationNS".into(), json!(dst_ns));
    }
    ixn.insert("DestinationName".into(), json!(dst));
    ixn.insert("SourceType".into(), json!("consul"));
    let action = if parsed.flag("deny") { "deny" } else { "allow" };
    ixn.insert("Action".into(), json!(action));
    let mut meta = serde_json::Map::new();
    // Every -meta holds a "=": create() refused the others.
    let pairs = parsed.values.get("meta").into_iter().flatten();
    for (k, v) in pairs.filter_map(|pair| pair.split_once('=')) {
        meta.insert(k.to_string(), Value::String(v.to_string()));
    }
    if !meta.is_empty() {
        ixn.insert("Meta".into(), Value::Object(meta));
    }
    Ok(Value::Object(ixn))
}

/// `create -file A.json B.json` (`-` reads stdin): one `api.Intention` JSON object per file.
fn intentions_from_files(paths: &[String]) -> Result<Vec<Value>, String> {
    paths
        .iter()
        .map(|path| {
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(path).map_err(|e| format!("open {path}: {e}"))?
            };
            let ixn: Value =
                serde_json::from_str(&text).map_err(|e| format!("{path}: invalid JSON: {e}"))?;
            if ixn.get("Permissions").and_then(Value::as_array).is_some_and(|p| !p.is_empty()) {
                return Err(format!(
                    "cannot create L7 intention from file {path:?} using this CLI; use 'consul config write' instead"
                ));
            }
            Ok(ixn)
        })
        .collect()
}

/// `-replace`: overwrite an existing intention for the pair. `Ok(true)` when one was replaced.
async fn replace(client: &ConsulClient, ixn: &Value) -> Result<bool, String> {
    let side = |ns: &str, name: &str| {
        let ns = ixn.get(ns).and_then(Value::as_str).unwrap_or_default();
        let name = ixn.get(name).and_then(Value::as_str).unwrap_or_default();
        if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        }
    };
    let (source, destination) = (
        side("SourceNS", "SourceName"),
        side("DestinationNS", "DestinationName"),
    );
    let query = [
        ("source", source.as_str()),
        ("destination", destination.as_str()),
    ];
    let old = find_pair(client, &source, &destination)
        .await
        .map_err(|e| {
            format!("Error looking up intention for replacement with source {source:?} and destination {destination:?}: {e}")
        })?;
    let Some(old) = old else { return Ok(false) };
    let id = old.get("ID").and_then(Value::as_str).unwrap_or_default();
    let result = if id.is_empty() {
        // Created by name (no legacy ID): replace by name.
        client
            .call(
                Method::PUT,
                "/v1/connect/intentions/exact",
                &query,
                Some(ixn),
                false,
            )
            .await
    } else {
        let mut with_id = ixn.clone();
        with_id["ID"] = json!(id);
        let path = format!("/v1/connect/intentions/{id}");
        client
            .call(Method::PUT, &path, &[], Some(&with_id), false)
            .await
    };
    result.map(|_| true).map_err(|e| {
        format!(
            "Error replacing intention with source {source:?} and destination {destination:?}: {e}"
        )
    })
}

fn split_target(input: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = input.split('/').collect();
    match parts.as_slice() {
        [name] => Ok((String::new(), (*name).to_string())),
        [ns, name] => Ok(((*ns).to_string(), (*name).to_string())),
        [_, ns, name] => Ok(((*ns).to_string(), (*name).to_string())),
        _ => Err("input can contain at most two '/'".to_string()),
    }
}
