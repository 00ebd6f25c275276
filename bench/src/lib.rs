//! `tandem-bench`: Tandem side by side with direct TCP and an HAProxy pair doing the same mutual
//! TLS, on one machine in one run. `cargo run --release -p tandem-bench -- compare [--quick]`.
//!
//! - [`loadgen`]: the open-loop load generator (fixed rate, saturation, new connection per
//!   request, bulk, idle connections); [`stats`]: schedule and coordinated-omission correction.
//! - [`echo`]: the backend and its protocol.
//! - [`haproxy`], [`tandem`]: the two proxy pairs; [`policy`], [`injector`]: scenarios 5 and 6.
//! - [`report`]: results, the table, `docs/PERFORMANCE.md`; [`profile`]: one scenario under
//!   `perf record`; [`soak`]: a pair for N minutes under load, rotations, restarts and pauses.

pub mod compare;
pub mod echo;
pub mod haproxy;
pub mod http;
pub mod injector;
pub mod loadgen;
pub mod machine;
pub mod pki;
pub mod policy;
pub mod process;
pub mod procstat;
pub mod profile;
pub mod report;
pub mod soak;
pub mod stats;
pub mod tandem;
pub mod targets;
