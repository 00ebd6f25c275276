//! SPIFFE ID parsing (`FromStr` of `SpiffeId`, `ServiceId` and `TrustDomain`).
//!
//! Properties, beyond "never panics":
//! * a parsed ID displays as a string that parses back to the same ID (and displays the same);
//! * `ServiceId` parses exactly the service form of `SpiffeId`;
//! * a service ID matches its own path, and its SNI and TLS server name can be built;
//! * percent-decoding is no more lenient than Go's `url.PathUnescape`, which Consul uses: in an
//!   accepted ID every `%` starts `%XX` with two hex digits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_certs::{server_name, ServiceId, SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(td) = text.parse::<TrustDomain>() {
        assert_eq!(td.to_string().parse::<TrustDomain>(), Ok(td.clone()));
        let _ = TrustDomain::from_cluster_id(text);
    }
    let parsed = text.parse::<SpiffeId>();
    match (&parsed, text.parse::<ServiceId>()) {
        (Ok(SpiffeId::Service(a)), Ok(b)) => assert_eq!(a, &b),
        (Ok(SpiffeId::Service(_)), Err(e)) => panic!("a service SpiffeId, not a ServiceId: {e}"),
        (_, Ok(b)) => panic!("a ServiceId {b} that is not a service SpiffeId: {parsed:?}"),
        _ => {}
    }
    let Ok(id) = parsed else {
        return;
    };
    let shown = id.to_string();
    assert_eq!(
        shown.parse::<SpiffeId>().as_ref(),
        Ok(&id),
        "{text:?} displays as {shown:?}"
    );
    assert_eq!(
        shown.parse::<SpiffeId>().map(|again| again.to_string()),
        Ok(shown.clone())
    );
    assert!(percent_escapes_are_go_like(text), "{text:?} was accepted");
    if let SpiffeId::Service(service) = &id {
        assert!(service.matches_path(service));
        let _ = service.sni();
        let _ = server_name(service);
    }
});

/// Go's `url.PathUnescape` accepts `%` only as the start of `%` + two hex digits.
fn percent_escapes_are_go_like(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}
