//! Local intention evaluation.
//!
//! The proxy keeps a live copy of `GET /v1/connect/intentions/match?by=destination&name=<svc>`
//! (a blocking query) and decides every inbound connection from it, without a round trip to the
//! agent. Consul returns the matching intentions in evaluation order (precedence descending,
//! then lexicographic); the first one whose source matches decides, exactly as Consul's
//! `IntentionDecision` and `/v1/agent/connect/authorize` do. A matched intention with L7
//! `Permissions` denies (an L4 proxy cannot enforce them; Consul's authorize endpoint answers
//! the same). Without a match the default applies: the agent's `X-Consul-Default-ACL-Policy`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::consul::{self, Blocking, ConsulClient, Intention};
use crate::metrics::Metrics;
use crate::watcher::{self, Watcher};

/// The caller of an inbound connection, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    pub partition: Option<&'a str>,
    pub namespace: &'a str,
    pub service: &'a str,
}

/// The outcome of evaluating intentions for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why, in Consul's words (`Matched L4 intention: ...`, `Default behavior ...`).
    pub reason: String,
}

/// The intentions that apply to this service as a destination, plus the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentionSet {
    intentions: Vec<Intention>,
    default_allow: bool,
}

impl IntentionSet {
    pub fn new(intentions: Vec<Intention>, default_allow: bool) -> Self {
        IntentionSet {
            intentions,
            default_allow,
        }
    }

    pub fn len(&self) -> usize {
        self.intentions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intentions.is_empty()
    }

    pub fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// First matching intention decides; otherwise the default.
    pub fn authorize(&self, source: &Source<'_>) -> Decision {
        for ixn in &self.intentions {
            if !source_matches(ixn, source) {
                continue;
            }
            let l7 = ixn.permissions.as_ref().is_some_and(|p| !p.is_empty());
            return if l7 {
                Decision {
                    allowed: false,
                    reason: format!("Matched L7 intention: {}", describe(ixn)),
                }
            } else {
                Decision {
                    allowed: ixn.action.eq_ignore_ascii_case("allow"),
                    reason: format!("Matched L4 intention: {}", describe(ixn)),
                }
            };
        }
        Decision {
            allowed: self.default_allow,
            reason: "Default behavior configured by ACLs".to_string(),
        }
    }
}

fn source_matches(ixn: &Intention, source: &Source<'_>) -> bool {
    // Peered and sameness-group sources never match a caller from our own cluster.
    if !ixn.source_peer.is_empty() || !ixn.source_sameness_group.is_empty() {
        return false;
    }
    let partition = source.partition.unwrap_or("default");
    let ixn_partition = if ixn.source_partition.is_empty() {
        "default"
    } else {
        &ixn.source_partition
    };
    let ixn_ns = if ixn.source_ns.is_empty() {
        "default"
    } else {
        &ixn.source_ns
    };
    (ixn_partition == "*" || ixn_partition.eq_ignore_ascii_case(partition))
        && (ixn_ns == "*" || ixn_ns.eq_ignore_ascii_case(source.namespace))
        && (ixn.source_name == "*" || ixn.source_name.eq_ignore_ascii_case(source.service))
}

/// Consul's `Intention.String()` for CE: `default/web => default/db (Precedence: 9, Action: ALLOW)`.
fn describe(ixn: &Intention) -> String {
    let ns = |s: &str| {
        if s.is_empty() {
            "default".to_string()
        } else {
            s.to_string()
        }
    };
    let tail = match &ixn.permissions {
        Some(p) if !p.is_empty() => format!("Permissions: {}", p.len()),
        _ => format!("Action: {}", ixn.action.to_ascii_uppercase()),
    };
    format!(
        "{}/{} => {}/{} (Precedence: {}, {})",
        ns(&ixn.source_ns),
        ixn.source_name,
        ns(&ixn.destination_ns),
        ixn.destination_name,
        ixn.precedence,
        tail
    )
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            if self.allowed { "allowed" } else { "denied" },
            self.reason
        )
    }
}

/// Keeps `tx` current with the intentions for `service` until `stop` fires, starting after
/// `index` (the index of the set already published at start-up). An empty answer from an agent
/// without a known leader never replaces a non-empty set.
#[allow(clippy::too_many_arguments)] // one watch's whole context; grouping it would only rename it
pub async fn watch(
    client: ConsulClient,
    service: String,
    tx: watch::Sender<Arc<IntentionSet>>,
    mut index: u64,
    default_override: Option<bool>,
    metrics: Arc<Metrics>,
    retry_max: Duration,
    stop: CancellationToken,
) {
    let mut w = Watcher::new("intentions", &metrics, retry_max, stop);
    loop {
        let query = |blocking| client.intentions_for_destination(&service, blocking);
        let Some(answer) = w.next_change(&mut index, query).await else {
            return;
        };
        let set = IntentionSet::new(
            answer.body,
            default_override
                .or(answer.meta.default_allow)
                .unwrap_or(true),
        );
        if set.is_empty() && answer.meta.known_leader == Some(false) && !tx.borrow().is_empty() {
            tracing::warn!(service = %service,
                "agent answered no intentions without a known leader: keeping the last good set");
            continue;
        }
        if **tx.borrow() != set {
            tracing::info!(service = %service, intentions = set.len(),
                default = if set.default_allow { "allow" } else { "deny" }, "intentions updated");
            metrics.intentions(set.len());
            tx.send_replace(Arc::new(set));
        }
    }
}

/// Fetches the intentions once (start-up), retrying with backoff until `stop` fires.
pub async fn first(
    client: &ConsulClient,
    service: &str,
    default_override: Option<bool>,
    metrics: &Metrics,
    retry_max: Duration,
    stop: &CancellationToken,
) -> Option<(IntentionSet, u64)> {
    let answer = watcher::retry("intentions", metrics, retry_max, stop, || {
        client.intentions_for_destination(service, Blocking::now())
    })
    .await?;
    let index = consul::next_index(0, answer.meta.index);
    let default_allow = default_override
        .or(answer.meta.default_allow)
        .unwrap_or(true);
    Some((IntentionSet::new(answer.body, default_allow), index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ixn(src: &str, dst: &str, action: &str, precedence: i64) -> Intention {
        Intention {
            id: String::new(),
            source_ns: "default".into(),
            source_name: src.into(),
            source_partition: String::new(),
            source_peer: String::new(),
            source_sameness_group: String::new(),
            destination_ns: "default".into(),
            destination_name: dst.into(),
            action: action.into(),
            permissions: None,
            precedence,
        }
    }

    fn web() -> Source<'static> {
        Source {
            partition: None,
            namespace: "default",
            service: "web",
        }
    }

    #[test]
    fn first_match_in_returned_order_decides() {
        // As the match endpoint returns them: exact source before wildcard.
        let set = IntentionSet::new(
            vec![ixn("web", "db", "allow", 9), ixn("*", "db", "deny", 8)],
            false,
        );
        let d = set.authorize(&web());
        assert!(d.allowed);
        assert_eq!(
            d.reason,
            "Matched L4 intention: default/web => default/db (Precedence: 9, Action: ALLOW)"
        );
        let other = Source {
            partition: None,
            namespace: "default",
            service: "api",
        };
        let d = set.authorize(&other);
        assert!(!d.allowed);
        assert!(d.reason.contains("default/* => default/db"), "{}", d.reason);
    }

    #[test]
    fn no_match_falls_back_to_the_default() {
        let set = IntentionSet::new(vec![ixn("api", "db", "deny", 9)], true);
        assert!(set.authorize(&web()).allowed);
        let set = IntentionSet::new(vec![ixn("api", "db", "allow", 9)], false);
        let d = set.authorize(&web());
        assert!(!d.allowed);
        assert!(d.reason.starts_with("Default"));
    }

    #[test]
    fn l7_intentions_deny_and_names_are_case_insensitive() {
        let mut l7 = ixn("WEB", "db", "", 9);
        l7.permissions = Some(vec![serde_json::json!({"Action": "allow"})]);
        let set = IntentionSet::new(vec![l7, ixn("*", "db", "allow", 8)], true);
        let d = set.authorize(&web());
        assert!(!d.allowed);
        assert!(d.reason.starts_with("Matched L7 intention"), "{}", d.reason);
    }

    #[test]
    fn peered_sources_and_other_namespaces_do_not_match() {
        let mut peered = ixn("web", "db", "deny", 9);
        peered.source_peer = "other-cluster".into();
        let mut other_ns = ixn("web", "db", "deny", 9);
        other_ns.source_ns = "team-b".into();
        let set = IntentionSet::new(vec![peered, other_ns], true);
        assert!(set.authorize(&web()).allowed);
    }

    #[test]
    fn documented_match_sample_evaluates_in_order() {
        let matched: std::collections::BTreeMap<String, Vec<Intention>> =
            serde_json::from_str(include_str!("../tests/data/connect-intentions-match.json"))
                .unwrap();
        let set = IntentionSet::new(matched["web"].clone(), true);
        // The sample lists web => db (deny) first.
        assert!(!set.authorize(&web()).allowed);
    }
}
