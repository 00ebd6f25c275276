//! Per-process memory and CPU from `/proc`: `VmRSS` from `/proc/<pid>/status`, user + system
//! clock ticks from `/proc/<pid>/stat`, open descriptors from `/proc/<pid>/fd`.

use std::time::Duration;

use anyhow::Context as _;

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on every Linux build
/// this runs on, read once to be sure).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Resident set size of `pid` in kB.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// The anonymous part of `pid`'s resident set in kB (`RssAnon`): its own heap and stacks,
/// which no other process shares. The rest of `VmRSS` is mapped files (the executable's text,
/// shared with every process running the same file) and shared memory.
pub fn rss_anon_kb(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_kb(&status, "RssAnon:").with_context(|| format!("no RssAnon line in {path}"))
}

/// CPU time (user + system) `pid` has used so far.
pub fn cpu_time(pid: u32, ticks_per_sec: u64) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_cpu_ticks(&stat).with_context(|| format!("malformed {path}"))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_sec.max(1) as f64,
    ))
}

/// Open file descriptors of `pid`: the entries of `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/fd");
    let dir = std::fs::read_dir(&path).with_context(|| format!("reading {path}"))?;
    Ok(dir.count() as u64)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status_kb(status, "VmRSS:")
}

/// The kB figure of the `/proc/<pid>/status` line starting with `key`.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime: fields 14 and 15 of `/proc/<pid>/stat`, counted after the `(comm)` field,
/// which may itself contain spaces and parentheses.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\thaproxy\nVmPeak:\t  20000 kB\nVmRSS:\t    8124 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(8124));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let status = "VmRSS:\t    8124 kB\nRssAnon:\t    1460 kB\nRssFile:\t    6664 kB\n";
        assert_eq!(status_kb(status, "RssAnon:"), Some(1460));
    }

    #[test]
    fn parses_cpu_ticks_past_a_comm_with_spaces() {
        let stat = "4242 (tandem (proxy) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kb(pid).unwrap() > 0);
        cpu_time(pid, clock_ticks_per_sec()).unwrap();
        assert!(open_fds(pid).unwrap() >= 3);
    }
}
