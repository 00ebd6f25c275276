//! The leaf + roots -> TLS state step of the proxy (`tandem_proxy::fuzzing::tls_state`): the
//! roots answer read into a trust set, the leaf answer into an identity, the leaf checked
//! against the service and the roots, and the rustls configs built from both.
//!
//! The input is a leaf answer, a roots answer and a service, as certificates and keys in DER
//! (the target writes the PEM the agent would send, so mutations land in the DER):
//!
//! ```text
//! service \n trust-domain \n chunk*
//! chunk = tag (1 byte) | length (2 bytes, big-endian) | bytes (cut short at the input's end)
//! ```
//!
//! | tag | bytes | goes to |
//! |---|---|---|
//! | `L` | certificate DER | appended to `CertPEM` (the first one is the leaf, later ones its chain) |
//! | `E`, `S`, `P` | key DER | appended to `PrivateKeyPEM` as `EC`, `RSA` or PKCS#8 `PRIVATE KEY` |
//! | `R` | certificate DER | a new entry of `Roots` |
//! | `c`, `k`, `r` | text | appended to `CertPEM` / `PrivateKeyPEM` as is; a new root with this `RootCert` |
//!
//! Other tags are skipped. The seeds are leaves of a test PKI (issued for ten years, so that they
//! get through the checks for as long as the root is valid) and the recorded agents' leaves and
//! roots, for the right service, another service and with the other CA's roots.
//!
//! Properties, beyond "never panics" (`tls_state` itself asserts that a built state presents
//! the service):
//! * a state builds only for a leaf that names the service (ASCII case aside) with a service
//!   SPIFFE ID in the roots' trust domain, and that is valid now.

#![no_main]

use std::time::{Duration, SystemTime};

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tandem_certs::{leaf_info, SpiffeId, TrustDomain};
use tandem_proxy::consul::{CaRoots, LeafCert};
use tandem_proxy::fuzzing::tls_state;

fuzz_target!(|data: &[u8]| {
    let input = Input::read(data);
    let Ok(leaf) = serde_json::from_value::<LeafCert>(json!({
        "SerialNumber": "01",
        "CertPEM": input.cert_pem,
        "PrivateKeyPEM": input.key_pem,
    })) else {
        return;
    };
    let roots: Vec<_> = input
        .roots
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            json!({
                "ID": format!("root-{i}"),
                "SigningKeyID": "",
                "RootCert": pem,
                "Active": i == 0,
            })
        })
        .collect();
    let Ok(roots) = serde_json::from_value::<CaRoots>(json!({
        "ActiveRootID": "root-0",
        "TrustDomain": input.trust_domain,
        "Roots": roots,
    })) else {
        return;
    };
    let before = SystemTime::now();
    if tls_state(&leaf, &roots, &input.service).is_ok() {
        let after = SystemTime::now();
        let info = leaf_info(leaf.cert_pem.as_bytes()).expect("a leaf that built reads");
        let SpiffeId::Service(id) = &info.spiffe else {
            panic!("a state built from a leaf for {:?}", info.spiffe);
        };
        assert!(
            id.service.eq_ignore_ascii_case(&input.service),
            "a state for {:?} built from a leaf for {id}",
            input.service
        );
        // As the proxy reads the roots' trust domain.
        let td = input
            .trust_domain
            .to_ascii_lowercase()
            .parse::<TrustDomain>();
        assert_eq!(
            td.as_ref(),
            Ok(&id.trust_domain),
            "a state for roots of {:?} built from a leaf for {id}",
            input.trust_domain
        );
        // webpki reads the time in whole seconds.
        let slack = Duration::from_secs(2);
        assert!(
            info.not_before <= after + slack && before <= info.not_after + slack,
            "a state built from a leaf valid from {:?} to {:?}",
            info.not_before,
            info.not_after
        );
    }
});

/// What the input describes: the answers' PEM text and the service.
#[derive(Default)]
struct Input {
    service: String,
    trust_domain: String,
    cert_pem: String,
    key_pem: String,
    roots: Vec<String>,
}

impl Input {
    fn read(data: &[u8]) -> Input {
        let mut input = Input::default();
        let (service, rest) = line(data);
        let (trust_domain, mut rest) = line(rest);
        input.service = service;
        input.trust_domain = trust_domain;
        while let [tag, rest_after_tag @ ..] = rest {
            let (len, body) = match rest_after_tag {
                [hi, lo, body @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), body),
                _ => (0, &[][..]),
            };
            let (chunk, next) = body.split_at(len.min(body.len()));
            rest = next;
            match tag {
                b'L' => input.cert_pem.push_str(&pem("CERTIFICATE", chunk)),
                b'E' => input.key_pem.push_str(&pem("EC PRIVATE KEY", chunk)),
                b'S' => input.key_pem.push_str(&pem("RSA PRIVATE KEY", chunk)),
                b'P' => input.key_pem.push_str(&pem("PRIVATE KEY", chunk)),
                b'R' => input.roots.push(pem("CERTIFICATE", chunk)),
                b'c' => input.cert_pem.push_str(&String::from_utf8_lossy(chunk)),
                b'k' => input.key_pem.push_str(&String::from_utf8_lossy(chunk)),
                b'r' => input
                    .roots
                    .push(String::from_utf8_lossy(chunk).into_owned()),
                _ => {}
            }
        }
        input
    }
}

/// The text up to the first `\n` (all of it if there is none), and what follows.
fn line(data: &[u8]) -> (String, &[u8]) {
    let (text, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    (String::from_utf8_lossy(text).into_owned(), rest)
}

/// PEM as Consul writes it: 64-column base64 between the armor lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
