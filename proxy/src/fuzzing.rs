//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): what the proxy does with
//! an answer from the agent, without a socket. Not an API.

use crate::consul::{
    self, CaRoots, ConfigEntry, IntentionMatch, LeafCert, QueryExecution, ServiceEntry,
};
use crate::discovery;
use crate::identity;
use crate::intentions::{Action, IntentionSet, Source};
use crate::permissions::RequestView;

/// Decodes `body` as every Consul answer the proxy reads and runs what the proxy runs on each
/// one that decodes: endpoints from a health or query answer, an intention set (its L7
/// permissions compiled) deciding a connection and a request, a config entry's protocol, the
/// index rule on the headers. Never panics, whatever the body.
pub fn consul_answer(body: &[u8], headers: &[(String, String)]) {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    let meta = consul::query_meta(&map);
    let _ = consul::next_index(meta.index, meta.index / 2);

    if let Ok(entries) = serde_json::from_slice::<Vec<ServiceEntry>>(body) {
        for e in discovery::endpoints(&entries, "fuzz", "dc1") {
            let _ = e.address();
        }
    }
    if let Ok(q) = serde_json::from_slice::<QueryExecution>(body) {
        let _ = discovery::endpoints(&q.nodes, &q.service, &q.datacenter);
    }
    if let Ok(mut matched) = serde_json::from_slice::<IntentionMatch>(body) {
        let names: Vec<String> = matched.0.keys().cloned().collect();
        for name in names {
            let set = IntentionSet::new(matched.take(&name), Action::Deny);
            let source = Source {
                partition: None,
                namespace: "default",
                service: "web",
            };
            let _ = set.authorize(&source);
            let mut headers = http::HeaderMap::new();
            headers.insert("x-debug", http::HeaderValue::from_static("1"));
            let _ = set.authorize_request(&source, &RequestView::new("GET", "/admin/x", &headers));
        }
    }
    if let Ok(entry) = serde_json::from_slice::<ConfigEntry>(body) {
        let _ = crate::protocol::from_entry(&entry);
    }
    if let Ok(roots) = serde_json::from_slice::<CaRoots>(body) {
        let _ = identity::fuzz_roots(&roots);
    }
    if let Ok(leaf) = serde_json::from_slice::<LeafCert>(body) {
        let _ = consul::parse_time(leaf.valid_before.as_deref().unwrap_or_default());
    }
}

/// The leaf and roots → TLS state step: what the proxy would install from these answers for
/// `service`. `Ok` only for a leaf that names `service`, chains to the roots and whose key
/// matches; the error otherwise. Never panics.
pub fn tls_state(leaf: &LeafCert, roots: &CaRoots, service: &str) -> Result<(), String> {
    identity::fuzz_tls_state(leaf, roots, service)
}
