//! Go durations (`wait=`, check intervals and TTLs): `tandem_agent::parse_duration` and the
//! agent's `Duration.String()` form.
//!
//! Properties, beyond "never panics":
//! * what parses is at most Go's limit (`i64::MAX` nanoseconds);
//! * a parsed duration, formatted, parses back to the same duration;
//! * any duration up to the limit (the input's first 8 bytes as nanoseconds), formatted,
//!   parses back to itself.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tandem_agent::fuzzing::format_duration;
use tandem_agent::parse_duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(parsed) = parse_duration(text) {
            assert!(
                parsed.as_nanos() <= i64::MAX as u128,
                "{text:?} is {parsed:?}"
            );
            round_trip(parsed);
        }
    }
    let mut raw = [0u8; 8];
    let n = data.len().min(8);
    raw[..n].copy_from_slice(&data[..n]);
    let nanos = u64::from_le_bytes(raw) & (i64::MAX as u64);
    round_trip(Duration::from_nanos(nanos));
});

fn round_trip(duration: Duration) {
    let shown = format_duration(duration);
    assert_eq!(
        parse_duration(&shown),
        Ok(duration),
        "{duration:?} formats as {shown:?}"
    );
}
