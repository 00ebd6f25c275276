//! An answer from the Consul agent as the proxy reads it: `tandem_proxy::fuzzing::consul_answer`
//! decodes the body as every answer the proxy decodes (health and prepared-query endpoints,
//! intention matches with their L7 permissions compiled and run, config entries, CA roots, a
//! leaf) and reads the headers as it reads a blocking query's (`X-Consul-Index` and the next
//! index rule).
//!
//! The input is framed like an HTTP answer: header lines (`Name: value`, at most
//! [`MAX_HEADERS`] of them), an empty line, the body. An input that starts with an empty line
//! has no headers; one with no empty line at all is a body alone.
//!
//! Properties: never panics, whatever the headers and body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_proxy::fuzzing::consul_answer;

/// Header lines read before the rest is taken as the body.
const MAX_HEADERS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let (headers, body) = split(data);
    consul_answer(body, &headers);
});

/// (header pairs, body). The header block is what comes before the first `\n\n`, counting a
/// leading `\n` as the end of an empty block.
fn split(data: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    if let Some(body) = data.strip_prefix(b"\n") {
        return (Vec::new(), body);
    }
    let Some(end) = data.windows(2).position(|w| w == b"\n\n") else {
        return (Vec::new(), data);
    };
    let headers = String::from_utf8_lossy(&data[..end])
        .lines()
        .take(MAX_HEADERS)
        .map(|line| match line.split_once(':') {
            Some((name, value)) => (name.trim().to_string(), value.trim().to_string()),
            None => (line.trim().to_string(), String::new()),
        })
        .collect();
    (headers, &data[end + 2..])
}
