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

use tokio::sync::watch;

use crate::consul::{self, Blocking, Intention};
use crate::permissions::{Permission, RequestView};
use crate::watcher::{self, WatchContext, Watched, Watcher};

/// The caller of an inbound connection, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    /// The admin partition (Enterprise); `None` means `default`.
    pub partition: Option<&'a str>,
    /// The namespace.
    pub namespace: &'a str,
    /// The service name.
    pub service: &'a str,
}

/// What an intention, or the default policy, does with a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The caller may connect.
    Allow,
    /// The caller's connection is closed.
    Deny,
}

impl Action {
    /// Consul's word for it: `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// `allow` (any case) allows; anything else denies, as Consul's evaluation does.
    fn from_consul(action: &str) -> Self {
        if action.eq_ignore_ascii_case("allow") {
            Action::Allow
        } else {
            Action::Deny
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            _ => Err("allow or deny".to_string()),
        }
    }
}

/// The outcome of evaluating intentions for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What happens to the caller.
    pub action: Action,
    /// Why, in Consul's words (`Matched L4 intention: ...`, `Default behavior ...`).
    pub reason: String,
}

impl Decision {
    /// Whether the caller may connect.
    pub fn is_allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// How one HTTP request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestDecision {
    pub(crate) action: Action,
    pub(crate) by: DecidedBy,
}

/// What decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecidedBy {
    /// An L4 intention's action.
    Intention,
    /// An L7 intention's permission.
    Permission,
    /// The default policy: no intention matched, or no permission of the matched one fit.
    Default,
}

impl DecidedBy {
    /// The `reason` label of a denied request.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Intention => "intention",
            DecidedBy::Permission => "permission",
            DecidedBy::Default => "default",
        }
    }
}

/// The intentions that apply to this service as a destination, plus the default.
#[derive(Debug, Clone)]
pub struct IntentionSet {
    intentions: Vec<Intention>,
    /// Each intention's L7 permissions, compiled once (empty for an L4 intention).
    permissions: Vec<Vec<Permission>>,
    default: Action,
}

impl PartialEq for IntentionSet {
    fn eq(&self, other: &Self) -> bool {
        // The compiled permissions follow from the intentions.
        self.intentions == other.intentions && self.default == other.default
    }
}

impl IntentionSet {
    /// `intentions` in the order the agent's match endpoint returns them; `default` applies
    /// when none matches. L7 permissions are compiled here; one that cannot be (a regex this
    /// proxy cannot compile) denies every request it is asked about, and is logged.
    pub fn new(intentions: Vec<Intention>, default: Action) -> Self {
        let permissions = intentions
            .iter()
            .map(|ixn| {
                let list = ixn.permissions.as_deref().unwrap_or_default();
                list.iter()
                    .map(|json| {
                        let (permission, error) = Permission::compile(json);
                        if let Some(e) = error {
                            tracing::warn!(intention = %describe(ixn), error = %e,
                                "an L7 permission cannot be used: it denies every request");
                        }
                        permission
                    })
                    .collect()
            })
            .collect();
        IntentionSet {
            intentions,
            permissions,
            default,
        }
    }

    /// How an HTTP request from `source` is decided (a service whose protocol is `http`,
    /// `http2` or `grpc`): the first intention whose source matches decides; an L4 intention by
    /// its action, an L7 one by its first permission that fits the request, and a request no
    /// permission fits, like a caller no intention matches, by the default.
    pub(crate) fn authorize_request(
        &self,
        source: &Source<'_>,
        request: &RequestView<'_>,
    ) -> RequestDecision {
        let matched = self
            .intentions
            .iter()
            .zip(&self.permissions)
            .find(|(ixn, _)| source_matches(ixn, source));
        match matched {
            Some((ixn, permissions)) if permissions.is_empty() => RequestDecision {
                action: Action::from_consul(&ixn.action),
                by: DecidedBy::Intention,
            },
            Some((_, permissions)) => match permissions.iter().find(|p| p.matches(request)) {
                Some(p) => RequestDecision {
                    action: p.action,
                    by: DecidedBy::Permission,
                },
                None => RequestDecision {
                    action: self.default,
                    by: DecidedBy::Default,
                },
            },
            None => RequestDecision {
                action: self.default,
                by: DecidedBy::Default,
            },
        }
    }

    /// The number of intentions (the default not counted).
    pub fn len(&self) -> usize {
        self.intentions.len()
    }

    /// Whether no intention applies (only the default).
    pub fn is_empty(&self) -> bool {
        self.intentions.is_empty()
    }

    /// The decision when no intention matches.
    pub fn default_action(&self) -> Action {
        self.default
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
                    action: Action::Deny,
                    reason: format!("Matched L7 intention: {}", describe(ixn)),
                }
            } else {
                Decision {
                    action: Action::from_consul(&ixn.action),
                    reason: format!("Matched L4 intention: {}", describe(ixn)),
                }
            };
        }
        Decision {
            action: self.default,
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

/// Consul's `Intention.String()` for CE: `default/web => default/db (Precedence: 9, Action: ALLOW)`,
/// with `ID: <id>, ` before the precedence for an intention that has one (the legacy API's).
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
    let id = if ixn.id.is_empty() {
        String::new()
    } else {
        format!("ID: {}, ", ixn.id)
    };
    format!(
        "{}/{} => {}/{} ({id}Precedence: {}, {})",
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
            if self.is_allowed() {
                "allowed"
            } else {
                "denied"
            },
            self.reason
        )
    }
}

/// Fetches the intentions for `service` (retrying while the agent fails) and returns them with
/// the task that keeps them current. `default` overrides the agent's default policy. An empty
/// answer from an agent without a known leader never replaces a non-empty set.
pub(crate) async fn start(
    ctx: &WatchContext,
    service: &str,
    default: Option<Action>,
) -> Option<Watched<IntentionSet>> {
    let answer = watcher::retry("intentions", ctx, || {
        ctx.client
            .intentions_for_destination(service, Blocking::now())
    })
    .await?;
    let mut index = consul::next_index(0, answer.meta.index);
    let policy = move |agent: Option<bool>| {
        default.unwrap_or(match agent {
            Some(false) => Action::Deny,
            _ => Action::Allow,
        })
    };
    let first = IntentionSet::new(answer.body, policy(answer.meta.default_allow));
    ctx.metrics.intentions(first.len());
    let (tx, state) = watch::channel(Arc::new(first));
    let (ctx, service) = (ctx.clone(), service.to_string());
    let task = Box::pin(async move {
        let mut w = Watcher::new("intentions", &ctx);
        loop {
            let query = |blocking| ctx.client.intentions_for_destination(&service, blocking);
            let Some(answer) = w.next_change(&mut index, query).await else {
                return;
            };
            let set = IntentionSet::new(answer.body, policy(answer.meta.default_allow));
            if set.is_empty() && answer.meta.known_leader == Some(false) && !tx.borrow().is_empty()
            {
                tracing::warn!(service = %service,
                    "agent answered no intentions without a known leader: keeping the last good set");
                continue;
            }
            if **tx.borrow() != set {
                tracing::info!(service = %service, intentions = set.len(),
                    default = set.default.as_str(), "intentions updated");
                ctx.metrics.intentions(set.len());
                tx.send_replace(Arc::new(set));
            }
        }
    });
    Some(Watched { state, task })
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
            Action::Deny,
        );
        let d = set.authorize(&web());
        assert!(d.is_allowed());
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
        assert!(!d.is_allowed());
        assert!(d.reason.contains("default/* => default/db"), "{}", d.reason);
    }

    #[test]
    fn no_match_falls_back_to_the_default() {
        let set = IntentionSet::new(vec![ixn("api", "db", "deny", 9)], Action::Allow);
        assert!(set.authorize(&web()).is_allowed());
        let set = IntentionSet::new(vec![ixn("api", "db", "allow", 9)], Action::Deny);
        let d = set.authorize(&web());
        assert!(!d.is_allowed());
        assert!(d.reason.starts_with("Default"));
    }

    #[test]
    fn l7_intentions_deny_and_names_are_case_insensitive() {
        let mut l7 = ixn("WEB", "db", "", 9);
        l7.permissions = Some(vec![serde_json::json!({"Action": "allow"})]);
        let set = IntentionSet::new(vec![l7, ixn("*", "db", "allow", 8)], Action::Allow);
        let d = set.authorize(&web());
        assert!(!d.is_allowed());
        assert!(d.reason.starts_with("Matched L7 intention"), "{}", d.reason);
    }

    #[test]
    fn peered_sources_and_other_namespaces_do_not_match() {
        let mut peered = ixn("web", "db", "deny", 9);
        peered.source_peer = "other-cluster".into();
        let mut other_ns = ixn("web", "db", "deny", 9);
        other_ns.source_ns = "team-b".into();
        let set = IntentionSet::new(vec![peered, other_ns], Action::Allow);
        assert!(set.authorize(&web()).is_allowed());
    }

    #[test]
    fn documented_match_sample_evaluates_in_order() {
        let matched: std::collections::BTreeMap<String, Vec<Intention>> =
            serde_json::from_str(include_str!("../tests/data/connect-intentions-match.json"))
                .unwrap();
        let set = IntentionSet::new(matched["web"].clone(), Action::Allow);
        // The sample lists web => db (deny) first.
        assert!(!set.authorize(&web()).is_allowed());
    }

    #[test]
    fn requests_are_decided_by_the_first_fitting_permission_then_the_default() {
        let mut l7 = ixn("web", "db", "", 9);
        l7.permissions = Some(vec![
            serde_json::json!({"Action": "deny", "HTTP": {"PathPrefix": "/admin"}}),
            serde_json::json!({"Action": "allow", "HTTP": {"PathPrefix": "/", "Methods": ["GET"]}}),
        ]);
        let set = IntentionSet::new(vec![l7, ixn("*", "db", "allow", 8)], Action::Deny);
        let headers = http::HeaderMap::new();
        let req = |method, path| RequestView::new(method, path, &headers);
        let decide = |method, path| set.authorize_request(&web(), &req(method, path));
        assert_eq!(decide("GET", "/admin").action, Action::Deny);
        assert_eq!(decide("GET", "/admin").by, DecidedBy::Permission);
        assert_eq!(decide("GET", "/").action, Action::Allow);
        // No permission fits a POST: the default decides, not the wildcard intention below.
        assert_eq!(
            decide("POST", "/"),
            RequestDecision {
                action: Action::Deny,
                by: DecidedBy::Default
            }
        );
        // Another caller matches the L4 wildcard: its action decides every request.
        let api = Source {
            partition: None,
            namespace: "default",
            service: "api",
        };
        let d = set.authorize_request(&api, &req("POST", "/admin"));
        assert_eq!((d.action, d.by), (Action::Allow, DecidedBy::Intention));
    }
}
