//! `tandem-bench`: Tandem side by side with direct TCP and an HAProxy pair doing the same mutual
//! TLS, on one machine in one run. `cargo run --release -p tandem-bench -- compare [--quick]`.
//!
//! - [`loadgen`]: the open-loop load generator (fixed rate, saturation, new connection per
//!   request, bulk, idle connections); [`stats`]: schedule and coordinated-omission correction.
//! - [`echo`]: the backend and its protocol.
//! - [`haproxy`], [`tandem`]: the two proxy pairs, and the relays without TLS ([`copy_relay`]);
//!   [`policy`], [`injector`]: scenarios 5 and 6.
//! - [`http_scenario`]: 1 kB HTTP answers direct, through a Tandem pair as `tcp` and as `http`
//!   with an L7 intention ([`l7`]), through the HAProxy pair and the two relay pairs;
//!   [`http_backend`] answers, [`http_load`] asks.
//! - [`report`]: results, the table, `docs/PERFORMANCE.md`; [`profile`]: one scenario under
//!   `perf record`; [`soak`]: a pair for N minutes under load, rotations, restarts and pauses.
//! - [`provider`]: rustls' ring provider against aws-lc-rs, handshakes and bulk, in memory.
//! - [`link_order`]: the functions the proxy runs under callgrind, for its link order.

// Its report and settings types have 190 fields, described in docs/PERFORMANCE.md but not
// yet one by one.
#![allow(missing_docs)]

pub mod compare;
pub mod copy_relay;
pub mod echo;
pub mod haproxy;
pub mod http;
pub mod http_backend;
pub mod http_load;
pub mod http_scenario;
pub mod injector;
pub mod l7;
pub mod link_order;
pub mod loadgen;
pub mod machine;
pub mod pki;
pub mod policy;
pub mod process;
pub mod procstat;
pub mod profile;
pub mod provider;
pub mod report;
pub mod soak;
pub mod stats;
pub mod tandem;
pub mod targets;
