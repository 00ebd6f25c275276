//! An intention body, written the legacy way (`POST /v1/connect/intentions`) and the exact way
//! (`PUT /v1/connect/intentions/exact`) into fresh stores, then listed, matched and authorized.
//!
//! Properties, beyond "never panics":
//! * a body accepted one way is accepted the other way for the same names, and lists the same
//!   (IDs, times, hashes and indexes aside), with the same authorization answers;
//! * an L4 intention decides by its action whatever the default, an L7 one denies;
//! * the intention as listed, sent back as a body, is accepted and lists the same (a client's
//!   read-modify-write leaves it unchanged).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tandem_agent::fuzzing::{write_intention, IntentionAnswer, IntentionWrite};

fuzz_target!(|body: &[u8]| {
    let Ok(legacy) = write_intention(body, IntentionWrite::Legacy) else {
        return;
    };
    let view = only(&legacy);
    let name = |key: &str| {
        view[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string: {view}"))
            .to_string()
    };
    let (source, destination) = (name("SourceName"), name("DestinationName"));
    let exact = write_intention(
        body,
        IntentionWrite::Exact {
            source: &source,
            destination: &destination,
        },
    )
    .unwrap_or_else(|e| panic!("accepted by the legacy API, refused by exact: {e}"));
    assert_eq!(
        comparable(only(&exact)),
        comparable(view),
        "legacy vs exact"
    );
    assert_eq!(
        decisions(&exact),
        decisions(&legacy),
        "legacy vs exact decisions"
    );

    assert!(
        legacy.matched,
        "an intention does not match its own destination"
    );
    let l7 = view.get("Permissions").is_some();
    let by_action = !l7 && view["Action"] == "allow";
    assert_eq!(
        decisions(&legacy),
        (by_action, by_action),
        "decisions of {view}"
    );

    let shown = serde_json::to_vec(view).expect("a Value serializes");
    let again = write_intention(&shown, IntentionWrite::Legacy)
        .unwrap_or_else(|e| panic!("the listed intention, sent back, is refused: {e}\n{view}"));
    assert_eq!(comparable(only(&again)), comparable(view), "sent back");
});

fn only(answer: &IntentionAnswer) -> &Value {
    match answer.listed.as_slice() {
        [one] => one,
        other => panic!(
            "one write into an empty store lists {} intentions",
            other.len()
        ),
    }
}

fn decisions(answer: &IntentionAnswer) -> (bool, bool) {
    (
        answer.allowed_by_default_allow,
        answer.allowed_by_default_deny,
    )
}

/// The listed intention without what differs between two writes of the same one.
fn comparable(view: &Value) -> Value {
    let mut view = view.clone();
    if let Some(map) = view.as_object_mut() {
        for key in [
            "ID",
            "CreatedAt",
            "UpdatedAt",
            "Hash",
            "CreateIndex",
            "ModifyIndex",
        ] {
            map.remove(key);
        }
    }
    view
}
