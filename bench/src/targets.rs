//! The performance targets, checked against one run's report: met, missed by how much,
//! or not measured.

use crate::http_scenario::{COPY_PAIR_TCP, HAPROXY_TCP, RELAY_PAIR_TCP, TANDEM_HTTP, TANDEM_TCP};
use crate::loadgen::Direction;
use crate::report::{
    Report, SubjectReport, COPY_PAIR, DIRECT, HAPROXY, RELAY, RELAY_PAIR, TANDEM, TANDEM_TUNNEL,
};

/// One target and how the run did against it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// `None` when the run has no figure for it.
    pub met: Option<bool>,
}

impl TargetCheck {
    fn new(target: &str, measured: String, met: Option<bool>) -> Self {
        Self {
            target: target.into(),
            measured,
            met,
        }
    }

    fn not_measured(target: &str) -> Self {
        Self::new(target, "not measured in this run".into(), None)
    }
}

/// Every target of the issue, in its order.
pub fn check(r: &Report) -> Vec<TargetCheck> {
    let tandem = r.subject(TANDEM);
    let haproxy = r.subject(HAPROXY);
    let direct = r.subject(DIRECT);
    let mut out = Vec::new();

    let added_p99 = |s: Option<&SubjectReport>| -> Option<f64> {
        let at = |s: &SubjectReport| {
            s.rates
                .iter()
                .find(|x| x.target_rps == 1000.0)
                .map(|x| x.latency.p99_us)
        };
        Some(at(s?)? - at(direct?)?)
    };
    let t = "added p99 latency at 1,000 rps <= HAProxy pair's and < 200 µs";
    out.push(match (added_p99(tandem), added_p99(haproxy)) {
        // A pair cannot be faster than no proxy: a negative difference means the machine's
        // noise in this run is larger than what the pair adds.
        (Some(tn), Some(h)) if tn < 0.0 || h < 0.0 => TargetCheck::new(
            t,
            format!(
                "inconclusive: tandem {tn:+.0} µs, haproxy {h:+.0} µs (noise exceeds the difference)"
            ),
            None,
        ),
        (Some(tn), Some(h)) => TargetCheck::new(
            t,
            format!("tandem {tn:+.0} µs, haproxy {h:+.0} µs"),
            Some(tn <= h && tn < 200.0),
        ),
        (Some(tn), None) => {
            TargetCheck::new(t, format!("tandem +{tn:.0} µs, haproxy not measured"), None)
        }
        _ => TargetCheck::not_measured(t),
    });

    let t = "new connections/s through the pair >= HAProxy pair's";
    let cps = |s: Option<&SubjectReport>| s?.new_conn.as_ref().map(|n| n.conns_per_sec);
    out.push(match (cps(tandem), cps(haproxy)) {
        (Some(tn), Some(h)) => TargetCheck::new(
            t,
            format!("tandem {tn:.0}/s, haproxy {h:.0}/s ({:.2}x)", tn / h),
            Some(tn >= h),
        ),
        _ => TargetCheck::not_measured(t),
    });

    let t = "bulk throughput >= 0.9x HAProxy pair's (worst of 1/8 streams, each way)";
    let bulk = |s: &SubjectReport, d: Direction, n: usize| {
        s.bulk
            .iter()
            .find(|b| b.direction == d && b.streams == n)
            .map(|b| b.mb_per_sec)
    };
    let mut worst: Option<(f64, String)> = None;
    if let (Some(tn), Some(h)) = (tandem, haproxy) {
        for d in [Direction::Upload, Direction::Download] {
            for n in [1, 8] {
                if let (Some(a), Some(b)) = (bulk(tn, d, n), bulk(h, d, n)) {
                    let ratio = a / b;
                    if worst.as_ref().is_none_or(|(w, _)| ratio < *w) {
                        worst = Some((ratio, format!("{d:?} x{n}: {a:.0} vs {b:.0} MB/s")));
                    }
                }
            }
        }
    }
    out.push(match worst {
        Some((ratio, what)) => {
            TargetCheck::new(t, format!("worst {ratio:.2}x ({what})"), Some(ratio >= 0.9))
        }
        None => TargetCheck::not_measured(t),
    });

    let max_rss = |s: &SubjectReport, f: &dyn Fn(&crate::report::ProcessReport) -> Option<u64>| {
        s.processes.iter().filter_map(f).max()
    };
    let mb = |kb: u64| kb as f64 / 1024.0;
    let t = "idle RSS < 10 MB";
    out.push(
        match tandem.and_then(|s| max_rss(s, &|p| Some(p.idle_rss_kb))) {
            Some(kb) => TargetCheck::new(t, format!("{:.1} MB", mb(kb)), Some(mb(kb) < 10.0)),
            None => TargetCheck::not_measured(t),
        },
    );
    let t = "RSS < 50 MB with 1,000 open connections";
    let with_1k = |p: &crate::report::ProcessReport| {
        p.rss_with_connections_kb
            .iter()
            .find(|(n, _)| *n == 1000)
            .map(|(_, kb)| *kb)
    };
    out.push(match tandem.and_then(|s| max_rss(s, &with_1k)) {
        Some(kb) => TargetCheck::new(t, format!("{:.1} MB", mb(kb)), Some(mb(kb) < 50.0)),
        None => TargetCheck::not_measured(t),
    });

    let policy = r.policy.measured();
    let t = "deny propagation to new connections p99 < 100 ms";
    out.push(
        match policy.and_then(|p| Some((p.new_connections.p99_ms?, &p.new_connections))) {
            Some((p99, n)) => TargetCheck::new(
                t,
                format!("p99 {p99} ms ({} of {} tries)", n.took_effect, n.tries),
                Some(p99 < 100.0 && n.took_effect == n.tries),
            ),
            None if policy.is_some() => {
                TargetCheck::new(t, "deny never took effect".into(), Some(false))
            }
            None => TargetCheck::not_measured(t),
        },
    );
    let t = "deny propagation to open connections < 1 s";
    out.push(
        match policy.map(|p| (p.open_connections.p99_ms, &p.open_connections)) {
            Some((Some(p99), o)) => TargetCheck::new(
                t,
                format!("p99 {p99} ms ({} of {} tries)", o.took_effect, o.tries),
                Some(p99 < 1000.0 && o.took_effect == o.tries),
            ),
            Some((None, _)) => TargetCheck::new(
                t,
                "not supported: open connections stay open".into(),
                Some(false),
            ),
            None => TargetCheck::not_measured(t),
        },
    );

    let t = "injector >= 5,000 AdmissionReviews/s on 2 cores";
    out.push(match r.injector.measured() {
        Some(i) => TargetCheck::new(
            t,
            format!(
                "{:.0}/s, p99 {:.1} ms",
                i.reviews_per_sec,
                i.latency.p99_us / 1000.0
            ),
            Some(i.reviews_per_sec >= 5000.0),
        ),
        None => TargetCheck::not_measured(t),
    });

    out.extend(per_connection_cost(r));

    let http = r.http.measured();
    let t = "HTTP: L7 path (5 permissions) adds < 30 µs p50 over the L4 (tcp) Tandem path, serial";
    out.push(match http.and_then(|h| h.l7_over_l4_p50_us()) {
        Some(d) => TargetCheck::new(t, format!("{d:+.0} µs"), Some(d < 30.0)),
        None => TargetCheck::not_measured(t),
    });
    let t = "HTTP: Tandem pair with L7 ahead of the HAProxy pair in mode tcp (serial p50 and p99)";
    let serial = |name: &str| {
        let l = http?.subject(name)?.serial.as_ref()?;
        Some((l.latency.p50_us, l.latency.p99_us))
    };
    out.push(match (serial(TANDEM_HTTP), serial(HAPROXY_TCP)) {
        (Some((t50, t99)), Some((h50, h99))) => TargetCheck::new(
            t,
            format!("p50 {t50:.0} vs {h50:.0} µs, p99 {t99:.0} vs {h99:.0} µs"),
            Some(t50 < h50 && t99 < h99),
        ),
        _ => TargetCheck::not_measured(t),
    });
    // The issue's own wording of the latency goal: one connection, serial.
    let t = "HTTP: serial added p50 <= 0.6x HAProxy pair's added (tandem tcp, one kept-alive connection)";
    let added = |name: &str| Some(serial(name)?.0 - serial(DIRECT)?.0);
    let mut serial_goal = at_most_of_haproxy_added(t, 0.6, added(TANDEM_TCP), added(HAPROXY_TCP));
    for (pair, name) in [(RELAY_PAIR_TCP, RELAY_PAIR), (COPY_PAIR_TCP, COPY_PAIR)] {
        // A pair that came out faster than no proxy says only that the run was noisy.
        if let (Some(a), Some(h)) = (added(pair), added(HAPROXY_TCP)) {
            if a >= 0.0 {
                serial_goal.with_relay_pair(name, format!("{a:+.0} µs ({:.2}x)", a / h));
            }
        }
    }
    out.push(serial_goal);
    out
}

impl TargetCheck {
    /// Names what relay pair `pair` measured beside a goal that was measured: what two
    /// processes that only copy bytes, through the same hops, add or carry on the same machine.
    fn with_relay_pair(&mut self, pair: &str, figure: String) {
        if self.met.is_some() {
            let what = if pair == COPY_PAIR {
                "two relays on Tandem's runtime"
            } else {
                "two HAProxy relays"
            };
            self.measured += &format!("; {pair} ({what}, no TLS): {figure}");
        }
    }
}

/// Whether an added latency `a` is at most `share` of HAProxy's added `h`; inconclusive when
/// either is negative (a pair cannot be faster than no proxy: the machine's noise in that run
/// exceeds what the pair adds).
fn at_most_of_haproxy_added(t: &str, share: f64, a: Option<f64>, h: Option<f64>) -> TargetCheck {
    match (a, h) {
        (Some(a), Some(h)) if a >= 0.0 && h > 0.0 => TargetCheck::new(
            t,
            format!("{a:+.0} vs {h:+.0} µs ({:.2}x)", a / h),
            Some(a <= share * h),
        ),
        (Some(a), Some(h)) => TargetCheck::new(
            t,
            format!("inconclusive: {a:+.0} vs {h:+.0} µs (noise exceeds the difference)"),
            None,
        ),
        _ => TargetCheck::not_measured(t),
    }
}

/// The per-connection cost goals, each a ratio to the HAProxy pair of the same run: new
/// connections with per-connection mTLS (resumed handshakes) and through the tunnel,
/// keep-alive requests/s, the added p50 at 1,000 rps (the near-serial rate), idle RSS.
fn per_connection_cost(r: &Report) -> Vec<TargetCheck> {
    let (tandem, tunnel, haproxy) = (
        r.subject(TANDEM),
        r.subject(TANDEM_TUNNEL),
        r.subject(HAPROXY),
    );
    let mut out = Vec::new();
    let ratio = |t: &str,
                 min: f64,
                 f: &dyn Fn(&SubjectReport) -> Option<f64>,
                 of: Option<&SubjectReport>| {
        match (of.and_then(f), haproxy.and_then(f)) {
            (Some(a), Some(h)) if h > 0.0 => TargetCheck::new(
                t,
                format!("{a:.0} vs {h:.0} ({:.2}x)", a / h),
                Some(a / h >= min),
            ),
            _ => TargetCheck::not_measured(t),
        }
    };
    let cps = |s: &SubjectReport| s.new_conn.as_ref().map(|n| n.conns_per_sec);
    out.push(ratio(
        "new connections/s >= 3x HAProxy pair's, per-connection mTLS (resumption)",
        3.0,
        &cps,
        tandem,
    ));
    let mut through_tunnel = ratio(
        "new connections/s >= 10x HAProxy pair's, through the tunnel",
        10.0,
        &cps,
        tunnel,
    );
    // The ceiling on this machine: a relay that only makes the two TCP connections.
    if let (Some(relay), Some(h)) = (r.subject(RELAY).and_then(cps), haproxy.and_then(cps)) {
        if through_tunnel.met.is_some() && h > 0.0 {
            through_tunnel.measured += &format!(
                "; the plain TCP relay (no TLS, the ceiling for any proxy in the path): {relay:.0} ({:.2}x)",
                relay / h
            );
        }
    }
    out.push(through_tunnel);
    let keep_alive = |s: &SubjectReport| s.saturation.as_ref().map(|x| x.rps);
    let pairs = [RELAY_PAIR, COPY_PAIR].map(|p| (p, r.subject(p)));
    for (name, subject) in [(TANDEM, tandem), (TANDEM_TUNNEL, tunnel)] {
        let mut check = ratio(
            &format!("keep-alive requests/s >= 1.3x HAProxy pair's ({name})"),
            1.3,
            &keep_alive,
            subject,
        );
        for (pair, of) in pairs {
            if let (Some(rps), Some(h)) = (of.and_then(keep_alive), haproxy.and_then(keep_alive)) {
                check.with_relay_pair(pair, format!("{rps:.0} ({:.2}x)", rps / h));
            }
        }
        out.push(check);
    }
    let added_p50 = |s: Option<&SubjectReport>| -> Option<f64> {
        let at = |s: &SubjectReport| {
            s.rates
                .iter()
                .find(|x| x.target_rps == 1000.0)
                .map(|x| x.latency.p50_us)
        };
        Some(at(s?)? - at(r.subject(DIRECT)?)?)
    };
    for (name, subject) in [(TANDEM, tandem), (TANDEM_TUNNEL, tunnel)] {
        let t = format!("added p50 at 1,000 rps <= 0.6x HAProxy pair's added ({name})");
        let mut check = at_most_of_haproxy_added(&t, 0.6, added_p50(subject), added_p50(haproxy));
        for (pair, of) in pairs {
            if let (Some(a), Some(h)) = (added_p50(of), added_p50(haproxy)) {
                if a >= 0.0 {
                    check.with_relay_pair(pair, format!("{a:+.0} µs ({:.2}x)", a / h));
                }
            }
        }
        out.push(check);
    }
    for (name, subject) in [(TANDEM, tandem), (TANDEM_TUNNEL, tunnel)] {
        let t = format!("idle RSS < 8 MB per proxy ({name})");
        out.push(
            match subject.and_then(|s| s.processes.iter().map(|p| p.idle_rss_kb).max()) {
                Some(kb) => {
                    let mb = kb as f64 / 1024.0;
                    TargetCheck::new(&t, format!("{mb:.1} MB"), Some(mb < 8.0))
                }
                None => TargetCheck::not_measured(&t),
            },
        );
    }
    out
}

/// The checks as a Markdown table.
pub fn table(checks: &[TargetCheck]) -> String {
    let mut out = String::from("| target | measured | met |\n|---|---|---|\n");
    for c in checks {
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        out.push_str(&format!("| {} | {} | {met} |\n", c.target, c.measured));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn negative_added_latency_is_inconclusive_not_met() {
        let mut r = sample();
        // Make direct slower than both pairs, as a noisy run can.
        r.subjects[0].rates[0].latency.p99_us = 5000.0;
        let c = &check(&r)[0];
        assert_eq!(c.met, None);
        assert!(c.measured.starts_with("inconclusive"), "{c:?}");
        let ok = &check(&sample())[0];
        assert_eq!(ok.measured, "tandem +150 µs, haproxy +120 µs");
        assert_eq!(ok.met, Some(false));
    }

    #[test]
    fn http_targets_compare_l7_with_l4_and_haproxy() {
        let checks = check(&sample());
        let find = |prefix: &str| {
            checks
                .iter()
                .find(|c| c.target.starts_with(prefix))
                .unwrap_or_else(|| panic!("no target {prefix:?}"))
        };
        let l7 = find("HTTP: L7 path");
        assert_eq!((l7.measured.as_str(), l7.met), ("+20 µs", Some(true)));
        let vs = find("HTTP: Tandem pair with L7 ahead");
        assert_eq!(vs.measured, "p50 170 vs 200 µs, p99 280 vs 300 µs");
        assert_eq!(vs.met, Some(true));
        let serial = find("HTTP: serial added p50");
        assert_eq!(
            serial.measured,
            "+100 vs +150 µs (0.67x); relay-pair (two HAProxy relays, no TLS): +70 µs (0.47x)"
        );
        assert_eq!(serial.met, Some(false));

        let mut r = sample();
        r.http = crate::report::Outcome::NotRun {
            reason: "not selected".into(),
        };
        assert!(check(&r).iter().rev().take(3).all(|c| c.met.is_none()));
    }

    #[test]
    fn per_connection_cost_is_a_ratio_to_haproxy_of_the_same_run() {
        let mut r = sample();
        let new_conn = |conns_per_sec| crate::loadgen::NewConnResult {
            workers: 8,
            connections: 1000,
            errors: 0,
            conns_per_sec,
            ttfb: crate::report::tests::pct(500.0, 900.0),
        };
        let mut tunnel = r.subject(TANDEM).unwrap().clone();
        tunnel.name = TANDEM_TUNNEL.into();
        tunnel.new_conn = Some(new_conn(9600.0));
        r.subjects.push(tunnel);
        for s in &mut r.subjects {
            if s.name == HAPROXY {
                s.new_conn = Some(new_conn(800.0));
            }
        }
        let checks = check(&r);
        let find = |prefix: &str| {
            checks
                .iter()
                .find(|c| c.target.starts_with(prefix))
                .unwrap_or_else(|| panic!("no target {prefix:?}"))
        };
        let through = find("new connections/s >= 10x");
        assert_eq!(through.met, Some(true), "{through:?}");
        assert!(through.measured.ends_with("(12.00x)"), "{through:?}");
        // With the relay in the run, its rate is named beside the tunnel's as the ceiling.
        let mut relay = r.subject(TANDEM).unwrap().clone();
        relay.name = RELAY.into();
        relay.new_conn = Some(new_conn(12000.0));
        r.subjects.push(relay);
        let checks = check(&r);
        let through = checks
            .iter()
            .find(|c| c.target.starts_with("new connections/s >= 10x"))
            .unwrap();
        assert!(
            through
                .measured
                .starts_with("9600 vs 800 (12.00x); the plain TCP relay"),
            "{through:?}"
        );
        assert!(
            through.measured.ends_with(": 12000 (15.00x)"),
            "{through:?}"
        );
        let keep_alive = find("keep-alive requests/s >= 1.3x HAProxy pair's (tandem-tunnel)");
        assert_eq!(keep_alive.met, None, "the sample has no saturation run");
        // Without the tunnel subject, its goals are not measured rather than missed, and the
        // relay's rate is not named beside a figure that is not there.
        let mut r = sample();
        let mut relay = r.subject(TANDEM).unwrap().clone();
        relay.name = RELAY.into();
        relay.new_conn = Some(new_conn(12000.0));
        r.subjects.push(relay);
        for s in &mut r.subjects {
            if s.name == HAPROXY {
                s.new_conn = Some(new_conn(800.0));
            }
        }
        let checks = check(&r);
        let through = checks
            .iter()
            .find(|c| c.target.starts_with("new connections/s >= 10x"))
            .unwrap();
        assert_eq!(through.met, None);
        assert!(!through.measured.contains("relay"), "{through:?}");
    }

    #[test]
    fn the_relay_pair_is_named_beside_the_keep_alive_goal_it_bounds() {
        let mut r = sample();
        let saturation = |rps| crate::loadgen::SaturationResult {
            connections: 8,
            requests: 100_000,
            errors: 0,
            rps,
            latency: crate::report::tests::pct(100.0, 300.0),
        };
        let mut pair = r.subject(TANDEM).unwrap().clone();
        pair.name = RELAY_PAIR.into();
        pair.saturation = Some(saturation(26_000.0));
        r.subjects.push(pair.clone());
        // The copy pair: more requests/s, and (a noisy run) a p50 below direct's.
        pair.name = COPY_PAIR.into();
        pair.saturation = Some(saturation(27_000.0));
        for rate in &mut pair.rates {
            rate.latency.p50_us = 0.0;
        }
        r.subjects.push(pair);
        for s in &mut r.subjects {
            match s.name.as_str() {
                TANDEM => s.saturation = Some(saturation(24_000.0)),
                HAPROXY => s.saturation = Some(saturation(20_000.0)),
                _ => {}
            }
        }
        let checks = check(&r);
        let keep_alive = checks
            .iter()
            .find(|c| c.target == "keep-alive requests/s >= 1.3x HAProxy pair's (tandem)")
            .unwrap();
        assert_eq!(
            keep_alive.measured,
            "24000 vs 20000 (1.20x); relay-pair (two HAProxy relays, no TLS): 26000 (1.30x); \
             copy-pair (two relays on Tandem's runtime, no TLS): 27000 (1.35x)"
        );
        assert_eq!(keep_alive.met, Some(false));
        // A pair faster than no proxy is left out of a latency goal (the relay pair is named).
        let added = checks
            .iter()
            .find(|c| {
                c.target.starts_with("added p50 at 1,000 rps") && c.target.ends_with("(tandem)")
            })
            .unwrap();
        assert!(added.met.is_some(), "{added:?}");
        assert!(added.measured.contains("relay-pair ("), "{added:?}");
        assert!(!added.measured.contains("copy-pair"), "{added:?}");
        // Where the goal is not measured, the relay pairs are not named either.
        let tunnel = checks
            .iter()
            .find(|c| c.target.ends_with("(tandem-tunnel)") && c.target.starts_with("keep-alive"))
            .unwrap();
        assert_eq!(
            (tunnel.met, tunnel.measured.contains("relay")),
            (None, false)
        );
    }
}
