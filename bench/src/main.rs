//! `tandem-bench compare [--quick]`: runs every scenario against direct TCP, a Tandem pair and an
//! HAProxy pair, prints one table, writes `bench/results/<date>.json` and refreshes the generated
//! section of `docs/PERFORMANCE.md`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tandem_bench::compare::{self, Options, HTTP_SCENARIO, TCP_SCENARIOS};
use tandem_bench::profile::{self, ProfileOptions, Scenario};
use tandem_bench::provider::{self as crypto_provider, Kx};
use tandem_bench::report::{
    splice_generated, COPY_PAIR, DIRECT, HAPROXY, RELAY, RELAY_PAIR, TANDEM, TANDEM_NO_RESUMPTION,
    TANDEM_TUNNEL,
};

#[derive(Parser)]
#[command(
    name = "tandem-bench",
    about = "Benchmarks Tandem side by side with direct TCP and an HAProxy pair"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario against every subject and report them side by side.
    ///
    /// Subjects: direct (client -> backend), relay (one haproxy process relaying plain TCP, no
    /// TLS: the ceiling on new connections/s for any proxy in the path; TCP scenarios only),
    /// relay-pair (two such relays in a row: what a pair of proxies without TLS adds to a
    /// request and carries; in the HTTP scenario too, as relay-pair-tcp), copy-pair (the same
    /// with two `tandem-bench copy-relay` processes, a current-thread tokio runtime, instead of
    /// HAProxy; copy-pair-tcp in the HTTP scenario; release builds only), tandem (tandem-agent dev +
    /// two tandem-proxy processes), tandem-tunnel (the same with --tunnel: app connections are
    /// streams of one mTLS connection; TCP scenarios only), haproxy (two haproxy processes doing
    /// the same mutual TLS). Scenarios: 1 kB
    /// request/response at 1,000 and 5,000 rps (open loop) and at saturation; a new connection
    /// per request; bulk 1 and 8 streams each way; RSS idle and with open idle connections; CPU
    /// per 10,000 requests; deny-intention propagation; injector AdmissionReviews/s. Then
    /// HTTP: 1 kB answers direct, through a Tandem pair as tcp and as http with a
    /// five-permission L7 intention, and through the HAProxy pair in mode tcp (serial latency,
    /// requests/s over 4 connections, CPU per 10,000 requests).
    Compare {
        /// Short runs (under 2 minutes, for CI smoke runs): results go to
        /// `bench/results/<date>-quick.json` and docs/PERFORMANCE.md is left alone.
        #[arg(long)]
        quick: bool,
        /// Subjects to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "direct,relay,relay-pair,copy-pair,tandem,tandem-tunnel,haproxy",
              value_parser = [DIRECT, RELAY, RELAY_PAIR, COPY_PAIR, TANDEM, TANDEM_TUNNEL, HAPROXY])]
        subjects: Vec<String>,
        /// Scenario groups to run, comma-separated: tcp (everything but HTTP) and http.
        /// docs/PERFORMANCE.md is refreshed only when both run.
        #[arg(long, value_delimiter = ',', default_value = "tcp,http",
              value_parser = [TCP_SCENARIOS, HTTP_SCENARIO])]
        scenarios: Vec<String>,
        /// Do not build the static release binaries of the agent, proxy and injector first
        /// (they are then expected in `<target dir>/x86_64-unknown-linux-gnu/release`).
        #[arg(long)]
        no_build: bool,
        /// Directory for results JSON.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
        results_dir: PathBuf,
        /// The performance document whose generated section is refreshed (full runs only).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PERFORMANCE.md"))]
        doc: PathBuf,
        /// Directory for process logs and HAProxy configuration.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("tandem-bench"))]
        work_dir: PathBuf,
        /// Run the bench and every process it starts at this nice level (e.g. -10: ahead of
        /// other work on a shared machine, so its scheduling noise does not swamp fractions of
        /// a millisecond). Every subject gets the same priority. Needs root for values below 0.
        #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
        nice: Option<i32>,
    },
    /// Run one scenario against one subject under `perf record` (attached to each proxy
    /// process) and write a flat profile per process.
    Profile {
        /// tandem, tandem-tunnel, tandem-no-resumption (--tls-resumption=false), haproxy or relay
        /// (one HAProxy process relaying plain TCP, no TLS).
        #[arg(long, default_value = TANDEM,
              value_parser = [TANDEM, TANDEM_TUNNEL, TANDEM_NO_RESUMPTION, HAPROXY, RELAY])]
        subject: String,
        #[arg(long, value_enum, default_value = "saturation")]
        scenario: Scenario,
        /// Seconds of load.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Where perf data, reports and logs go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("tandem-bench-profile"))]
        out_dir: PathBuf,
        /// Do not build the release binaries first.
        #[arg(long)]
        no_build: bool,
        /// Run each tandem proxy under this command instead of attaching perf, e.g.
        /// "valgrind --tool=massif --massif-out-file=/tmp/massif.%p" with `--scenario idle`;
        /// the proxies are stopped with SIGTERM at the end so the tool writes its output.
        #[arg(long)]
        wrap: Option<String>,
    },
    /// A Tandem pair for N minutes under steady load through CA rotations, intention flips,
    /// agent pauses and server restarts; exits non-zero unless the client proxy stays flat.
    Soak(tandem_bench::soak::SoakArgs),
    /// A plain TCP relay on Tandem's runtime (current-thread tokio, one task per connection
    /// copying both ways, no TLS): the processes of the copy-pair subject, started by
    /// `compare`.
    CopyRelay {
        /// Where to accept connections.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where to relay each one.
        #[arg(long)]
        forward_to: std::net::SocketAddr,
    },
    /// rustls' ring provider (the proxy's) against aws-lc-rs under the same suites and key
    /// exchange, in memory with Consul-shaped P-256 certificates: full mutual-TLS and resumed
    /// handshakes per second, bulk MB/s of 16 KiB AES-128-GCM records.
    Provider {
        /// Seconds per run of each figure.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Runs per figure and provider (the report gives the median).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Key-exchange groups for the handshakes, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "p256,x25519")]
        kx: Vec<Kx>,
    },
    /// Run a Tandem pair and a tunnel pair with each proxy under `valgrind --tool=callgrind`
    /// (start-up, idle connections, requests at a fixed rate, new connections) and write every
    /// function the proxies ran, the busiest first, to the proxy's link-order file. The proxy's
    /// static release build lays those functions out first (`proxy/build.rs`), so the few
    /// megabytes of text it runs are contiguous and an idle proxy maps little else.
    LinkOrder {
        /// The file written.
        #[arg(long, default_value_os_t = tandem_bench::link_order::default_out())]
        out: PathBuf,
        /// Seconds of each load (under callgrind, tens of times slower than native).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Where callgrind's outputs and the proxy logs go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("tandem-bench-link-order"))]
        work_dir: PathBuf,
        /// Do not build the release binaries first.
        #[arg(long)]
        no_build: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (opts, results_dir, doc) = match Cli::parse().command {
        Cmd::Compare {
            quick,
            subjects,
            scenarios,
            no_build,
            results_dir,
            doc,
            work_dir,
            nice,
        } => (
            Options {
                quick,
                build: !no_build,
                subjects,
                scenarios,
                work_dir,
                nice,
            },
            results_dir,
            doc,
        ),
        Cmd::Profile {
            subject,
            scenario,
            seconds,
            out_dir,
            no_build,
            wrap,
        } => {
            let summary = profile::run(&ProfileOptions {
                subject,
                scenario,
                seconds,
                out_dir,
                build: !no_build,
                wrap,
            })?;
            print!("{summary}");
            return Ok(());
        }
        Cmd::Provider { seconds, runs, kx } => {
            print!(
                "{}",
                crypto_provider::run(&crypto_provider::Options { seconds, runs, kx })?
            );
            return Ok(());
        }
        Cmd::LinkOrder {
            out,
            seconds,
            work_dir,
            no_build,
        } => {
            print!(
                "{}",
                tandem_bench::link_order::run(&tandem_bench::link_order::Options {
                    out,
                    work_dir,
                    seconds,
                    build: !no_build,
                })?
            );
            return Ok(());
        }
        Cmd::CopyRelay { listen, forward_to } => {
            return tandem_bench::copy_relay::run(listen, forward_to);
        }
        Cmd::Soak(args) => {
            if !tandem_bench::soak::main(args)? {
                std::process::exit(1);
            }
            return Ok(());
        }
    };
    let report = compare::run(&opts)?;
    let all = |group: &str| opts.scenarios.iter().any(|s| s == group);
    let every_scenario = all(TCP_SCENARIOS) && all(HTTP_SCENARIO);

    if all(TCP_SCENARIOS) {
        println!("{}", report.table());
    }
    if all(HTTP_SCENARIO) {
        println!("{}", report.http_section());
    }
    println!(
        "{}",
        tandem_bench::targets::table(&tandem_bench::targets::check(&report))
    );
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    let day = &report.date[..10];
    let only = if every_scenario {
        String::new()
    } else {
        format!("-{}", opts.scenarios.join("-"))
    };
    let quick = if opts.quick { "-quick" } else { "" };
    let file = results_dir.join(format!("{day}{only}{quick}.json"));
    std::fs::write(&file, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", file.display()))?;
    eprintln!("bench: wrote {}", file.display());
    if !opts.quick && every_scenario {
        let old = std::fs::read_to_string(&doc).unwrap_or_else(|_| "# Performance\n".into());
        std::fs::write(&doc, splice_generated(&old, &report.markdown()))
            .with_context(|| format!("writing {}", doc.display()))?;
        eprintln!("bench: refreshed {}", doc.display());
    }
    Ok(())
}
