//! `link-order`: the functions the proxy runs, busiest first, for `proxy/link-order.txt`.
//!
//! The proxy's release build for the images' target asks the linker (lld) to lay those functions
//! out first, in that order (`proxy/build.rs`). A read fault on the executable maps the
//! page-cache pages around it 64 KiB at a time ("fault-around"), so in the default layout the few
//! thousand functions the proxy runs, scattered over its text, keep nearly all of it resident.
//! Laid out together, they take a few contiguous megabytes, and the rest of the text is never
//! mapped.
//!
//! This command runs a Tandem pair, then a tunnel pair, with each proxy under
//! `valgrind --tool=callgrind`: start-up, idle connections, requests at a fixed rate and new
//! connections. It sums the instructions each function ran in all the proxies and writes every
//! function that ran. Callgrind's CPU has no AVX-512, so the AVX-512 variants of the string and
//! AES-GCM routines a native run picks are not listed; they stay where the linker puts them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::echo::Backend;
use crate::loadgen;
use crate::tandem::{Binaries, TandemPair};

pub struct Options {
    /// The file written.
    pub out: PathBuf,
    /// Callgrind outputs and proxy logs.
    pub work_dir: PathBuf,
    /// Seconds of each load under callgrind.
    pub seconds: f64,
    /// Build the static release binaries first.
    pub build: bool,
}

/// Runs the workloads under callgrind, writes the order file and returns a summary.
pub fn run(opts: &Options) -> anyhow::Result<String> {
    let valgrind = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .context("running valgrind (install it: apt-get install valgrind)")?;
    anyhow::ensure!(valgrind.status.success(), "valgrind --version failed");
    let outputs = opts.work_dir.join("callgrind");
    // Outputs of an earlier run would be counted again.
    if outputs.exists() {
        std::fs::remove_dir_all(&outputs)
            .with_context(|| format!("removing {}", outputs.display()))?;
    }
    std::fs::create_dir_all(&outputs).with_context(|| format!("creating {}", outputs.display()))?;
    let bins = Binaries::locate(opts.build)?;
    let rt = tokio::runtime::Runtime::new()?;
    let backend = rt.block_on(Backend::start())?;
    let d = Duration::try_from_secs_f64(opts.seconds)
        .with_context(|| format!("invalid --seconds {}", opts.seconds))?;
    for (name, flags) in [("plain", &[][..]), ("tunnel", &["--tunnel"][..])] {
        let wrapper: Vec<String> = [
            "valgrind",
            "--tool=callgrind",
            "--demangle=no",
            &format!(
                "--callgrind-out-file={}/{name}.%p",
                outputs.to_string_lossy()
            ),
        ]
        .map(String::from)
        .to_vec();
        let mut pair =
            TandemPair::start_wrapped_with(&bins, backend.addr(), &opts.work_dir, &wrapper, flags)?;
        let held = loadgen::open_idle(pair.listen, 100)?;
        std::thread::sleep(Duration::from_secs(1));
        drop(held);
        loadgen::fixed_rate(pair.listen, 200.0, 4, d)?;
        loadgen::new_connection_per_request(pair.listen, 2, d)?;
        pair.terminate_proxies()?;
    }
    rt.block_on(backend.shutdown());

    let mut cost = HashMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&outputs)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let costs = self_cost(&text).with_context(|| format!("reading {}", path.display()))?;
        for (function, ir) in costs {
            *cost.entry(function).or_insert(0) += ir;
        }
        files += 1;
    }
    anyhow::ensure!(
        files == 4 && !cost.is_empty(),
        "expected callgrind output from 4 proxies in {}, found {files} files",
        outputs.display()
    );
    let functions = busiest_first(cost);
    let mut text = String::from(HEADER);
    for f in &functions {
        text.push_str(f);
        text.push('\n');
    }
    std::fs::write(&opts.out, text).with_context(|| format!("writing {}", opts.out.display()))?;
    Ok(format!(
        "{} functions ran in the 4 proxies; written to {}. Rebuild the static release binaries \
         (docker/build-images.sh, or any tandem-bench command without --no-build) for the new \
         layout.\n",
        functions.len(),
        opts.out.display()
    ))
}

/// How much of an order file a binary still has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Function names in the order file.
    pub named: usize,
    /// Of those, the ones the binary defines.
    pub found: usize,
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of the {} functions of the link order are in the binary",
            self.found, self.named
        )
    }
}

/// Which of the order file's names `binary` defines (from `nm`). A toolchain or dependency
/// update renames symbols; the build then ignores the stale names and the layout falls back to
/// the linker's default.
pub fn coverage(binary: &Path, order: &Path) -> anyhow::Result<Coverage> {
    let text =
        std::fs::read_to_string(order).with_context(|| format!("reading {}", order.display()))?;
    let out = std::process::Command::new("nm")
        .arg("--defined-only")
        .arg(binary)
        .output()
        .context("running nm")?;
    anyhow::ensure!(out.status.success(), "nm {} failed", binary.display());
    let symbols = String::from_utf8_lossy(&out.stdout);
    let defined: std::collections::HashSet<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let names: Vec<&str> = order_names(&text).collect();
    Ok(Coverage {
        named: names.len(),
        found: names.iter().filter(|n| defined.contains(*n)).count(),
    })
}

/// `proxy/link-order.txt` in this checkout.
pub fn default_out() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench).join("proxy/link-order.txt")
}

/// Instructions executed in each function itself (callees excluded), from a callgrind output
/// file with line positions and the one default event, `Ir`. Functions without a symbol
/// (`0x...`) and valgrind's own names (`(below main)`) are left out.
fn self_cost(text: &str) -> anyhow::Result<HashMap<String, u64>> {
    // Callgrind compresses names: `fn=(12) name` defines id 12, a later `fn=(12)` refers to it.
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut cost: HashMap<String, u64> = HashMap::new();
    let mut current: Option<&str> = None;
    // The cost line after `calls=` is the callee's inclusive cost, not the caller's own.
    let mut after_calls = false;
    for line in text.lines() {
        if let Some(spec) = line
            .strip_prefix("fn=")
            .or_else(|| line.strip_prefix("cfn="))
        {
            let name = match spec.split_once(' ') {
                Some((id, name)) if id.starts_with('(') => {
                    names.insert(id, name);
                    Some(name)
                }
                _ if spec.starts_with('(') => names.get(spec).copied(),
                // Written without compression.
                _ => Some(spec),
            };
            // A recursion level (`name'2`) is the same function.
            let name = name
                .map(|n| n.split('\'').next().unwrap_or(n))
                .filter(|n| !n.starts_with("0x") && !n.starts_with('('));
            if let Some(n) = name {
                cost.entry(n.to_string()).or_insert(0);
            }
            if line.starts_with("fn=") {
                current = name;
            }
        } else if let Some(positions) = line.strip_prefix("positions:") {
            anyhow::ensure!(
                positions.trim() == "line",
                "callgrind positions \"{}\": expected line only",
                positions.trim()
            );
        } else if let Some(events) = line.strip_prefix("events:") {
            anyhow::ensure!(
                events.trim() == "Ir",
                "callgrind events \"{}\": expected Ir only",
                events.trim()
            );
        } else if line.starts_with("calls=") {
            after_calls = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut after_calls) {
                continue;
            }
            let ir = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok());
            if let (Some(f), Some(ir)) = (current, ir) {
                *cost.entry(f.to_string()).or_insert(0) += ir;
            }
        }
    }
    Ok(cost)
}

/// Function names by cost, the highest first; equal costs by name, so a rerun on the same
/// counts writes the same file.
fn busiest_first(cost: HashMap<String, u64>) -> Vec<String> {
    let mut v: Vec<(String, u64)> = cost.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter().map(|(name, _)| name).collect()
}

/// The names in an order file: its lines, without `#` comments and blank lines (as lld reads
/// it).
fn order_names(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

const HEADER: &str = "\
# Functions of tandem-proxy the linker lays out first, in this order (proxy/build.rs passes the
# file to lld as --symbol-ordering-file). Written by `tandem-bench link-order`: every function
# the proxies ran under callgrind, the busiest first. A name that no longer exists is ignored;
# regenerate after a toolchain or dependency update, which renames every symbol.
";

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
version: 1
positions: line
events: Ir
fl=(1) src/main.rs
fn=(1) main
10 5
fi=(2) src/inlined.rs
+1 2
fe=(1)
cfn=(2) _ZN4work17h0123E
calls=3 20
* 300
fn=(2)
20 100
cfn=(3) 0x0000000000c69d20
calls=1 0
* 7
fn=(3)
0 7
fn=(4) rec'2
5 1
fn=(5) rec
5 2
fn=(6) (below main)
1 9
fn=plain
3 4
totals: 426
";

    #[test]
    fn counts_only_each_functions_own_instructions() {
        let cost = self_cost(OUTPUT).unwrap();
        assert_eq!(cost.get("main"), Some(&7), "the call's 300 is the callee's");
        assert_eq!(cost.get("_ZN4work17h0123E"), Some(&100));
        assert_eq!(
            cost.get("rec"),
            Some(&3),
            "recursion levels are one function"
        );
        assert_eq!(
            cost.get("plain"),
            Some(&4),
            "a name written without compression"
        );
        assert!(
            !cost
                .keys()
                .any(|k| k.starts_with("0x") || k.starts_with('(')),
            "{cost:?}"
        );
        assert_eq!(
            busiest_first(cost),
            ["_ZN4work17h0123E", "main", "plain", "rec"],
            "highest cost first"
        );
    }

    #[test]
    fn refuses_output_it_would_misread() {
        let err = self_cost("positions: instr line\nevents: Ir\n").unwrap_err();
        assert!(err.to_string().contains("positions"), "{err}");
        let err = self_cost("events: Ir Dr\n").unwrap_err();
        assert!(err.to_string().contains("events"), "{err}");
    }

    #[test]
    fn the_order_files_names_skip_comments_and_blank_lines() {
        let text = "# written by\n\n_ZN4main17hE\n  rol64 \n";
        assert_eq!(
            order_names(text).collect::<Vec<_>>(),
            ["_ZN4main17hE", "rol64"]
        );
        assert_eq!(order_names(HEADER).count(), 0, "the header is all comments");
    }

    #[test]
    fn equal_costs_are_ordered_by_name() {
        let cost = HashMap::from([("b".to_string(), 1), ("a".to_string(), 1), ("c".into(), 2)]);
        assert_eq!(busiest_first(cost), ["c", "a", "b"]);
    }
}
