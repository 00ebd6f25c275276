//! The generated section of `docs/PERFORMANCE.md`: machine, settings, the table, targets,
//! policy and injector results; and splicing it into the hand-written document.

use super::{format_rate, Outcome, Report, DIRECT};

impl Report {
    /// The part of `docs/PERFORMANCE.md` a run regenerates.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let v = &self.versions;
        let s = &self.settings;
        let mut out = String::new();
        out.push_str(&format!(
            "Run of {date}{quick}. Machine: {cpu}, {nproc} cores (`nproc`), {mem} MB RAM, \
             Linux {kernel}, open-files limit {nofile}; load average {la0} at the start, {la1} \
             at the end (other engineers' builds share the cores). Tandem {tv} (commit \
             `{commit}`), {haproxy}, {rustc}{link_order}.\n\n",
            date = self.date,
            quick = if self.quick { " (`--quick`)" } else { "" },
            cpu = m.cpu_model,
            nproc = m.nproc,
            mem = m.mem_total_mb,
            kernel = m.kernel,
            nofile = m.nofile_limit,
            la0 = m.load_average_start,
            la1 = m.load_average_end,
            tv = v.tandem,
            commit = v.git_commit,
            haproxy = v.haproxy,
            rustc = v.rustc,
            link_order = if v.link_order.is_empty() {
                String::new()
            } else {
                format!("; proxy: {}", v.link_order)
            },
        ));
        out.push_str(&format!(
            "Settings: fixed rates {rates} rps for {rs} s each ({rr} interleaved rounds) over {c} \
             persistent connections; \
             saturation {ss} s; new connection per request with {w} workers for {ns} s{tr}; bulk \
             {bs} s per run; idle connections {idle}; {pt} policy tries; injector {ic} \
             concurrent clients for {is} s; HTTP {hs} s serial and {hc} s over {hn} \
             connections per subject ({hr} interleaved rounds); nice level {nice} for the bench \
             and every process it started.\n\n",
            rates = s
                .rates
                .iter()
                .map(|r| format_rate(*r))
                .collect::<Vec<_>>()
                .join(" and "),
            rs = s.rate_seconds,
            rr = s.rate_rounds,
            c = s.connections,
            ss = s.saturation_seconds,
            w = s.new_conn_workers,
            ns = s.new_conn_seconds,
            tr = match s.throughput_rounds {
                0 => String::new(),
                n => format!(" (both in {n} interleaved rounds)"),
            },
            bs = s.bulk_seconds,
            idle = s
                .idle_connection_counts
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" and "),
            pt = s.policy_tries,
            ic = s.injector_concurrency,
            is = s.injector_seconds,
            hs = s.http_serial_seconds,
            hc = s.http_concurrent_seconds,
            hn = s.http_connections,
            hr = s.http_rounds,
            nice = s.nice,
        ));
        out.push_str(&self.table());
        out.push_str("\n**Targets** (from the issue):\n\n");
        out.push_str(&crate::targets::table(&crate::targets::check(self)));
        out.push('\n');
        for subj in &self.subjects {
            if let Some(e) = &subj.error {
                out.push_str(&format!("- **{}** did not run: {e}\n", subj.name));
            }
            for e in &subj.scenario_errors {
                out.push_str(&format!("- **{}**: {e}\n", subj.name));
            }
        }
        if let Some(sat) = self.subject(DIRECT).and_then(|d| d.rates.first()) {
            out.push_str(&format!(
                "- Generator wake-up lag at {} rps (in every subject's latency): p50 {} µs, \
                 p99 {} µs.\n",
                format_rate(sat.target_rps),
                sat.send_lag.p50_us,
                sat.send_lag.p99_us
            ));
        }
        out.push_str("\n**Policy propagation** (tandem pair): ");
        match &self.policy {
            Outcome::Measured { result: p } => {
                let show = |x: &crate::policy::Propagation| match (x.p50_ms, x.p99_ms) {
                    (Some(a), Some(b)) => format!(
                        "p50 {a} ms, p99 {b} ms ({} of {} tries took effect within {} ms)",
                        x.took_effect, x.tries, p.timeout_ms
                    ),
                    _ => format!("never within {} ms in {} tries", p.timeout_ms, x.tries),
                };
                out.push_str(&format!(
                    "deny to next new connection refused: {}; deny to open connection closed: {}.\n",
                    show(&p.new_connections),
                    p.open_connections_note
                        .clone()
                        .unwrap_or_else(|| show(&p.open_connections))
                ));
            }
            Outcome::NotRun { reason } => out.push_str(&format!("not run: {reason}.\n")),
        }
        out.push_str("\n**Injector** (`tandem-injector serve`, HTTPS): ");
        match &self.injector {
            Outcome::Measured { result: i } => out.push_str(&format!(
                "{:.0} AdmissionReviews/s with {} concurrent keep-alive clients, p50 {} µs, \
                 p99 {} µs, {} errors{}{}.\n",
                i.reviews_per_sec,
                i.concurrency,
                i.latency.p50_us,
                i.latency.p99_us,
                i.errors,
                i.rss_kb
                    .map(|kb| format!(", RSS {:.1} MB", kb as f64 / 1024.0))
                    .unwrap_or_default(),
                i.cpu_seconds
                    .map(|c| format!(", {c:.2} CPU s"))
                    .unwrap_or_default(),
            )),
            Outcome::NotRun { reason } => out.push_str(&format!("not run: {reason}.\n")),
        }
        out.push_str("\n**HTTP** (1 kB answers, L4 and L7): ");
        out.push_str(&self.http_section());
        out
    }
}

/// Replaces the text between the generated-section markers in `doc` (or appends the section).
pub fn splice_generated(doc: &str, generated: &str) -> String {
    const BEGIN: &str = "<!-- bench:begin (generated by `tandem-bench compare`) -->";
    const END: &str = "<!-- bench:end -->";
    let section = format!("{BEGIN}\n{generated}{END}");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &doc[..b], &doc[e + END.len()..])
        }
        _ => format!("{doc}\n{section}\n"),
    }
}
