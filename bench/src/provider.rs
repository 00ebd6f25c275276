//! `tandem-bench provider`: rustls' ring provider (the one the proxy links, chosen in
//! `certs/src/tls.rs`) against aws-lc-rs, under the same policy, in memory.
//!
//! Both ends run in this thread: a `ClientConnection` and a `ServerConnection` exchange TLS
//! records through a buffer, no sockets, so a figure is the CPU cost of both sides of a
//! connection on one core. The certificates are what Consul's built-in CA issues (an EC P-256
//! root, P-256 ECDSA leaves with a SPIFFE URI SAN, from [`BenchPki`]); keys are loaded and chains
//! verified with the provider under test:
//!
//! - server side: rustls' `WebPkiClientVerifier`, client certificate mandatory;
//! - client side: webpki chain verification to the root with EKU serverAuth
//!   (`verify_server_cert_signed_by_trust_anchor`, what `WebPkiServerVerifier` runs before its
//!   name check): Connect leaves carry no DNS SAN, so, as the proxy does, no name is checked.
//!
//! The suites are the policy's own list (`tandem_certs::tls::crypto_provider()`, same order,
//! TLS 1.3 AES-128-GCM first), the key exchange one group of it ([`Kx`]), the protocol versions
//! the policy's. Session resumption is rustls' default, as in the proxy: a stateful server cache
//! and TLS 1.3 tickets.

mod pair;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::{aws_lc_rs, ring, CryptoProvider};
use rustls::NamedGroup;

use crate::pki::BenchPki;

pub use pair::{Budget, Measurement, Pair, BULK_WRITE};

/// The `CryptoProvider` implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Ring,
    AwsLcRs,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::Ring, Provider::AwsLcRs];
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Ring => "ring",
            Provider::AwsLcRs => "aws-lc-rs",
        })
    }
}

/// What `tandem-bench provider` measures, and how long.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds per run of each figure.
    pub seconds: f64,
    /// Runs per figure and provider; the report gives the median.
    pub runs: usize,
    /// Key-exchange groups to measure the handshakes with (bulk does not depend on it).
    pub kx: Vec<Kx>,
}

/// Runs every figure for both providers, interleaving their runs so that a change in the
/// machine's load hits both, and returns the report (progress goes to stderr).
pub fn run(opts: &Options) -> anyhow::Result<String> {
    anyhow::ensure!(opts.runs > 0, "--runs must be at least 1");
    let budget = Budget::Time(Duration::from_secs_f64(opts.seconds));
    let pki = BenchPki::generate()?;
    let load_start = crate::machine::load_average();
    let mut rows = Vec::new();
    for &kx in &opts.kx {
        rows.push(Row::measure(
            &pki,
            opts.runs,
            format!("full mTLS handshakes ({kx})"),
            "/s",
            kx,
            |p| Ok(p.full_handshakes(budget)?.per_second()),
        )?);
        rows.push(Row::measure(
            &pki,
            opts.runs,
            format!("resumed handshakes ({kx})"),
            "/s",
            kx,
            |p| Ok(p.resumed_handshakes(budget)?.per_second()),
        )?);
    }
    rows.push(Row::measure(
        &pki,
        opts.runs,
        "bulk, 16 KiB writes, AES-128-GCM".into(),
        "MB/s",
        Kx::P256,
        |p| Ok(p.bulk(budget)?.mb_per_second()),
    )?);

    let mut out = format!(
        "rustls providers, in memory, both ends on one core; median of {} runs of {} s\n\n",
        opts.runs, opts.seconds
    );
    out += "| figure | ring | aws-lc-rs | aws-lc-rs / ring |\n|---|---:|---:|---:|\n";
    for mut row in rows {
        let [ring, aws] = [0, 1].map(|i| median(&mut row.values[i]));
        out += &format!(
            "| {} | {ring:.0} {unit} | {aws:.0} {unit} | {:.2} |\n",
            row.name,
            aws / ring,
            unit = row.unit
        );
    }
    out += &format!(
        "\nload average (1, 5, 15 min): {load_start} at the start, {} at the end\n",
        crate::machine::load_average()
    );
    Ok(out)
}

/// One figure: its runs for each of [`Provider::ALL`], in that order.
struct Row {
    name: String,
    unit: &'static str,
    values: [Vec<f64>; 2],
}

impl Row {
    /// `runs` rounds of `measure`, each round running every provider once.
    fn measure(
        pki: &BenchPki,
        runs: usize,
        name: String,
        unit: &'static str,
        kx: Kx,
        measure: impl Fn(&Pair) -> anyhow::Result<f64>,
    ) -> anyhow::Result<Row> {
        let pairs = Provider::ALL
            .iter()
            .map(|&p| Pair::new(pki, p, kx))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut values = [Vec::new(), Vec::new()];
        for run in 1..=runs {
            for (i, pair) in pairs.iter().enumerate() {
                let value = measure(pair)?;
                eprintln!(
                    "bench: {name}, {}, run {run}/{runs}: {value:.1} {unit}",
                    Provider::ALL[i]
                );
                values[i].push(value);
            }
        }
        Ok(Row { name, unit, values })
    }
}

/// The one key-exchange group both ends offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kx {
    /// ECDHE on P-256 (secp256r1).
    P256,
    /// X25519: what the policy's list puts first, so what two Tandem proxies negotiate today.
    X25519,
}

impl Kx {
    pub(super) fn group(self) -> NamedGroup {
        match self {
            Kx::P256 => NamedGroup::secp256r1,
            Kx::X25519 => NamedGroup::X25519,
        }
    }
}

impl fmt::Display for Kx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kx::P256 => "P-256",
            Kx::X25519 => "X25519",
        })
    }
}

/// The policy's suites and key-exchange group `kx`, taken from `provider`'s implementations.
pub fn restricted(provider: Provider, kx: Kx) -> anyhow::Result<Arc<CryptoProvider>> {
    let base = match provider {
        Provider::Ring => ring::default_provider(),
        Provider::AwsLcRs => aws_lc_rs::default_provider(),
    };
    let policy = tandem_certs::tls::crypto_provider();
    let cipher_suites = policy
        .cipher_suites
        .iter()
        .map(|wanted| {
            base.cipher_suites
                .iter()
                .find(|s| s.suite() == wanted.suite())
                .copied()
                .with_context(|| format!("{provider} has no {:?}", wanted.suite()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        policy.kx_groups.iter().any(|g| g.name() == kx.group()),
        "{kx} is not in the policy's key-exchange groups"
    );
    let kx_groups = base
        .kx_groups
        .iter()
        .filter(|g| g.name() == kx.group())
        .copied()
        .collect::<Vec<_>>();
    anyhow::ensure!(!kx_groups.is_empty(), "{provider} has no {kx}");
    Ok(Arc::new(CryptoProvider {
        cipher_suites,
        kx_groups,
        ..base
    }))
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
