//! A request's query string (without the `?`) through every reading the agent's handlers do:
//! `?index=`/`?wait=`/`?stale`/`?consistent`, boolean flags, the token, `?filter=`, intention
//! targets, `?limit=` and `?connect=`.
//!
//! Properties, beyond "never panics": an accepted `?wait=` is at most Go's duration limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_agent::fuzzing::read_query;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((_, Some(wait))) = read_query(query) {
        assert!(
            wait.as_nanos() <= i64::MAX as u128,
            "{query:?}: wait {wait:?}"
        );
    }
});
