//! A `PUT /v1/agent/service/register` body: decoded, validated, registered into a fresh
//! catalog (sidecar expansion, default checks, tagged addresses) and rendered as
//! `/v1/agent/services` and `/v1/agent/checks` render it.
//!
//! Properties, beyond "never panics": registration is idempotent, as in Consul: a body the
//! agent accepted once it accepts again, and the services and checks it shows are the same
//! (their indexes aside).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tandem_agent::fuzzing::register_services;

fuzz_target!(|body: &[u8]| {
    let answers = register_services(&[body, body]);
    let [first, second] = answers.as_slice() else {
        panic!("two bodies, {} answers", answers.len());
    };
    let Ok(first) = first else {
        return;
    };
    let second = match second {
        Ok(second) => second,
        Err(e) => panic!("accepted once, then refused: {e}"),
    };
    assert_eq!(
        without_indexes(first),
        without_indexes(second),
        "registering the same body twice"
    );
});

/// `value` without its `CreateIndex` and `ModifyIndex` fields, at any depth.
fn without_indexes(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| *k != "CreateIndex" && *k != "ModifyIndex")
                .map(|(k, v)| (k.clone(), without_indexes(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_indexes).collect()),
        other => other.clone(),
    }
}
