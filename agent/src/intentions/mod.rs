//! Service intentions: one per (source, destination) pair, Consul's precedence and ordering,
//! first match decides, and the default when nothing matches. A write's body and checks are
//! in `input`, L7 permissions in `permissions`.

mod input;
pub(crate) mod permissions;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use sha2::{Digest, Sha256};

pub(crate) use input::IntentionInput;
use permissions::Permission;

use crate::state::Txn;

pub(crate) const WILDCARD: &str = "*";
const DEFAULT_NS: &str = "default";

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Intention {
    /// Only intentions created through the legacy ID API have one.
    pub id: String,
    pub description: String,
    pub source_name: String,
    pub destination_name: String,
    pub source_type: String,
    /// `allow` / `deny`; empty for L7 intentions (which carry `permissions`).
    pub action: String,
    /// L7 permissions, in order; empty for an L4 intention.
    pub permissions: Vec<Permission>,
    pub meta: BTreeMap<String, String>,
    pub precedence: i64,
    pub hash: Option<String>,
    pub created_at: Option<SystemTime>,
    pub updated_at: Option<SystemTime>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Intention {
    /// `structs.Intention.String()` in CE form, used in authorize reasons and errors.
    pub(crate) fn describe(&self) -> String {
        let id = if self.id.is_empty() {
            String::new()
        } else {
            format!("ID: {}, ", self.id)
        };
        let detail = if self.is_l7() {
            format!("Permissions: {}", self.permissions.len())
        } else {
            format!("Action: {}", self.action.to_ascii_uppercase())
        };
        format!(
            "{DEFAULT_NS}/{} => {DEFAULT_NS}/{} ({id}Precedence: {}, {detail})",
            self.source_name, self.destination_name, self.precedence
        )
    }

    pub(crate) fn is_l7(&self) -> bool {
        !self.permissions.is_empty()
    }
}

/// Which side `/v1/connect/intentions/match` matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchBy {
    Source,
    Destination,
}

/// The outcome of evaluating intentions for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// An intention write refused: status code and Consul's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct IntentionError {
    pub status: u16,
    pub message: String,
}

impl IntentionError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        IntentionError {
            status,
            message: message.into(),
        }
    }
}

pub(crate) struct Intentions {
    entries: Vec<Intention>,
    table_index: u64,
}

impl Intentions {
    pub(crate) fn new(tx: &mut Txn) -> Self {
        Intentions {
            entries: Vec::new(),
            table_index: tx.index(),
        }
    }

    pub(crate) fn table_index(&self) -> u64 {
        self.table_index
    }

    /// Every intention in evaluation order.
    pub(crate) fn list(&self) -> Vec<Intention> {
        let mut all = self.entries.clone();
        all.sort_by(precedence_order);
        all
    }

    pub(crate) fn exact(&self, source: &str, destination: &str) -> Option<&Intention> {
        self.entries.iter().find(|i| {
            i.source_name.eq_ignore_ascii_case(source)
                && i.destination_name.eq_ignore_ascii_case(destination)
        })
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Intention> {
        self.entries
            .iter()
            .find(|i| !i.id.is_empty() && i.id.eq_ignore_ascii_case(id))
    }

    /// `PUT /v1/connect/intentions/exact`: create or replace the pair's intention. An L7
    /// intention needs an HTTP-like `protocol_of` its destination (service-defaults, else
    /// proxy-defaults, else `tcp`), as Consul's config entry graph check demands.
    pub(crate) fn upsert_exact(
        &mut self,
        source: &str,
        destination: &str,
        mut input: IntentionInput,
        protocol_of: impl Fn(&str) -> String,
        tx: &mut Txn,
    ) -> Result<(), IntentionError> {
        input.source_name = source.to_string();
        input.destination_name = destination.to_string();
        input.validate_by_name(self.source_position(source, destination))?;
        if !input.permissions.is_empty() && destination != WILDCARD {
            let protocol = protocol_of(destination);
            if !is_http_like(&protocol) {
                return Err(IntentionError::new(
                    500,
                    l7_protocol_error(destination, &protocol),
                ));
            }
        }
        let index = tx.index();
        let previous = self
            .entries
            .iter()
            .position(|i| same_pair(i, source, destination));
        let create_index = previous.map_or(index, |p| self.entries[p].create_index);
        let intention = build(input, String::new(), None, create_index, index);
        match previous {
            // Replaced in place: Consul keeps a source's place among its destination's sources.
            Some(p) => self.entries[p] = intention,
            None => self.entries.push(intention),
        }
        self.table_index = index;
        Ok(())
    }

    /// Where the source would sit among the destination's sources after an upsert: Consul's
    /// `service-intentions` entry keeps them in write order, stably sorted by precedence
    /// (highest first), and its checks name that index (`Sources[1].Action ...`).
    fn source_position(&self, source: &str, destination: &str) -> usize {
        let mut sources: Vec<(bool, i64)> = self
            .entries
            .iter()
            .filter(|i| i.destination_name.eq_ignore_ascii_case(destination))
            .map(|i| (same_pair(i, source, destination), i.precedence))
            .collect();
        let precedence = precedence(source, destination);
        match sources.iter_mut().find(|(this, _)| *this) {
            Some(entry) => entry.1 = precedence,
            None => sources.push((true, precedence)),
        }
        sources.sort_by_key(|(_, p)| std::cmp::Reverse(*p));
        sources.iter().position(|(this, _)| *this).unwrap_or(0)
    }

    /// The destinations that have an L7 intention (never `*`), sorted and once each: what a
    /// protocol change must keep HTTP-like.
    pub(crate) fn l7_destinations(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .iter()
            .filter(|i| i.is_l7() && i.destination_name != WILDCARD)
            .map(|i| i.destination_name.clone())
            .collect();
        names.sort_by_key(|n| n.to_ascii_lowercase());
        names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        names
    }

    /// `DELETE /v1/connect/intentions/exact`.
    pub(crate) fn delete_exact(&mut self, source: &str, destination: &str, tx: &mut Txn) {
        if self.exact(source, destination).is_some() {
            self.remove_pair(source, destination);
            self.table_index = tx.index();
        }
    }

    /// Legacy `POST /v1/connect/intentions`: refuses an existing pair; returns the new ID.
    pub(crate) fn create_legacy(
        &mut self,
        input: IntentionInput,
        tx: &mut Txn,
    ) -> Result<String, IntentionError> {
        input.validate_legacy()?;
        if let Some(existing) = self.exact(&input.source_name, &input.destination_name) {
            return Err(IntentionError::new(
                500,
                format!("duplicate intention found: {}", existing.describe()),
            ));
        }
        let index = tx.index();
        let id = uuid::Uuid::new_v4().to_string();
        let now = SystemTime::now();
        let intention = build(input, id.clone(), Some((now, now)), index, index);
        self.entries.push(intention);
        self.table_index = index;
        Ok(id)
    }

    /// Legacy `PUT /v1/connect/intentions/:id`.
    pub(crate) fn update_legacy(
        &mut self,
        id: &str,
        input: IntentionInput,
        tx: &mut Txn,
    ) -> Result<(), IntentionError> {
        let Some(existing) = self.by_id(id).cloned() else {
            return Err(IntentionError::new(
                500,
                "Cannot modify non-existent intention",
            ));
        };
        input.validate_legacy()?;
        if let Some(other) = self.exact(&input.source_name, &input.destination_name) {
            if other.id != existing.id {
                return Err(IntentionError::new(
                    500,
                    format!("duplicate intention found: {}", other.describe()),
                ));
            }
        }
        let index = tx.index();
        self.entries.retain(|i| i.id != existing.id);
        let created = existing.created_at.unwrap_or_else(SystemTime::now);
        let intention = build(
            input,
            existing.id.clone(),
            Some((created, SystemTime::now())),
            existing.create_index,
            index,
        );
        self.entries.push(intention);
        self.table_index = index;
        Ok(())
    }

    /// Legacy `DELETE /v1/connect/intentions/:id`.
    pub(crate) fn delete_legacy(&mut self, id: &str, tx: &mut Txn) -> Result<(), IntentionError> {
        let Some(existing) = self.by_id(id).cloned() else {
            return Err(IntentionError::new(
                500,
                "Cannot delete non-existent intention",
            ));
        };
        self.entries.retain(|i| i.id != existing.id);
        self.table_index = tx.index();
        Ok(())
    }

    /// Intentions that apply to `name` on the given side, in evaluation order.
    pub(crate) fn matching(&self, by: MatchBy, name: &str) -> Vec<Intention> {
        let mut found: Vec<Intention> = self
            .entries
            .iter()
            .filter(|i| {
                let side = match by {
                    MatchBy::Source => &i.source_name,
                    MatchBy::Destination => &i.destination_name,
                };
                side == WILDCARD || side.eq_ignore_ascii_case(name)
            })
            .cloned()
            .collect();
        found.sort_by(precedence_order);
        found
    }

    /// The first matching intention decides; otherwise the agent default.
    pub(crate) fn decide(&self, source: &str, destination: &str, default_allow: bool) -> Decision {
        let matched = self
            .matching(MatchBy::Destination, destination)
            .into_iter()
            .find(|i| i.source_name == WILDCARD || i.source_name.eq_ignore_ascii_case(source));
        match matched {
            Some(i) if i.is_l7() => Decision {
                allowed: false,
                reason: format!("Matched L7 intention: {}", i.describe()),
            },
            Some(i) => Decision {
                allowed: i.action == "allow",
                reason: format!("Matched L4 intention: {}", i.describe()),
            },
            None => default_decision(default_allow),
        }
    }

    fn remove_pair(&mut self, source: &str, destination: &str) {
        self.entries.retain(|i| !same_pair(i, source, destination));
    }
}

fn same_pair(intention: &Intention, source: &str, destination: &str) -> bool {
    intention.source_name.eq_ignore_ascii_case(source)
        && intention.destination_name.eq_ignore_ascii_case(destination)
}

/// `structs.IsProtocolHTTPLike`: the protocols L7 permissions can apply to.
pub(crate) fn is_http_like(protocol: &str) -> bool {
    matches!(protocol, "http" | "http2" | "grpc")
}

/// Consul's refusal of L7 permissions on a destination whose protocol is not HTTP-like.
pub(crate) fn l7_protocol_error(service: &str, protocol: &str) -> String {
    format!("service {service:?} has protocol {protocol:?}, which is incompatible with L7 intentions permissions")
}

/// The decision when no intention matches, in Consul 1.10's words: an allow default is a dev
/// agent with ACLs disabled; a deny default (`--default-intention deny`) is what 1.10 says
/// when its ACL system denies by default.
pub(crate) fn default_decision(default_allow: bool) -> Decision {
    if default_allow {
        Decision {
            allowed: true,
            reason: "ACLs disabled, access is allowed by default".to_string(),
        }
    } else {
        Decision {
            allowed: false,
            reason: "Default behavior configured by ACLs".to_string(),
        }
    }
}

/// Splits Consul's `[partition/][ns/]name` target form; only the default namespace exists here.
pub(crate) fn parse_target(input: &str) -> Result<String, IntentionError> {
    let parts: Vec<&str> = input.split('/').collect();
    match parts.as_slice() {
        [name] => Ok((*name).to_string()),
        [ns, name] | [_, ns, name] if *ns == DEFAULT_NS || *ns == WILDCARD => Ok((*name).to_string()),
        [_, _] | [_, _, _] => Err(IntentionError::new(
            400,
            format!("namespace in {input:?} is not supported: namespaces are a Consul Enterprise feature"),
        )),
        _ => Err(IntentionError::new(
            400,
            format!("invalid intention target {input:?}: input can contain at most two '/'"),
        )),
    }
}

/// Precedence per `structs.Intention.UpdatePrecedence` (CE: namespaces are always exact).
pub(crate) fn precedence(source: &str, destination: &str) -> i64 {
    let dest_exact = if destination == WILDCARD { 1 } else { 2 };
    let source_exact = if source == WILDCARD { 1 } else { 2 };
    let max = match dest_exact {
        2 => 9,
        1 => 6,
        _ => 3,
    };
    max - (2 - source_exact)
}

/// `IntentionPrecedenceSorter`: precedence descending, then names ascending.
pub(crate) fn precedence_order(a: &Intention, b: &Intention) -> Ordering {
    b.precedence
        .cmp(&a.precedence)
        .then_with(|| a.source_name.cmp(&b.source_name))
        .then_with(|| a.destination_name.cmp(&b.destination_name))
}

fn build(
    input: IntentionInput,
    id: String,
    times: Option<(SystemTime, SystemTime)>,
    create_index: u64,
    modify_index: u64,
) -> Intention {
    let precedence = precedence(&input.source_name, &input.destination_name);
    let hash = (!id.is_empty()).then(|| {
        let mut hasher = Sha256::new();
        for part in [
            &input.source_name,
            &input.destination_name,
            &input.action,
            &input.description,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
    });
    Intention {
        id,
        description: input.description,
        source_name: input.source_name,
        destination_name: input.destination_name,
        source_type: "consul".to_string(),
        action: input.action,
        permissions: input.permissions,
        meta: input.meta,
        precedence,
        hash,
        created_at: times.map(|t| t.0),
        updated_at: times.map(|t| t.1),
        create_index,
        modify_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No config entries: every service speaks `tcp`.
    fn tcp(_: &str) -> String {
        "tcp".to_string()
    }

    fn http(_: &str) -> String {
        "http".to_string()
    }

    fn l7(permissions: serde_json::Value) -> IntentionInput {
        let body = serde_json::json!({ "Permissions": permissions });
        IntentionInput::decode(&body).expect("a valid permissions body")
    }

    fn store() -> (Intentions, u64) {
        let mut tx = Txn::for_tests(1);
        (Intentions::new(&mut tx), 1)
    }

    fn put(store: &mut Intentions, src: &str, dst: &str, action: &str, index: u64) {
        let mut tx = Txn::for_tests(index);
        let input = IntentionInput {
            action: action.into(),
            ..Default::default()
        };
        store.upsert_exact(src, dst, input, tcp, &mut tx).unwrap();
    }

    #[test]
    fn precedence_table_matches_consul_ce() {
        assert_eq!(precedence("web", "db"), 9);
        assert_eq!(precedence("*", "db"), 8);
        assert_eq!(precedence("web", "*"), 6);
        assert_eq!(precedence("*", "*"), 5);
    }

    #[test]
    fn most_specific_intention_wins() {
        let (mut s, _) = store();
        put(&mut s, "*", "*", "deny", 2);
        put(&mut s, "*", "db", "allow", 3);
        put(&mut s, "web", "db", "deny", 4);
        let d = s.decide("web", "db", true);
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            "Matched L4 intention: default/web => default/db (Precedence: 9, Action: DENY)"
        );
        assert!(s.decide("api", "db", false).allowed);
        assert!(!s.decide("api", "cache", true).allowed);
    }

    #[test]
    fn defaults_apply_when_nothing_matches() {
        let (s, _) = store();
        let allow = s.decide("web", "db", true);
        assert!(allow.allowed);
        assert_eq!(allow.reason, "ACLs disabled, access is allowed by default");
        let deny = s.decide("web", "db", false);
        assert!(!deny.allowed);
        assert_eq!(deny.reason, "Default behavior configured by ACLs");
    }

    #[test]
    fn one_intention_per_pair() {
        let (mut s, _) = store();
        put(&mut s, "web", "db", "allow", 2);
        put(&mut s, "web", "db", "deny", 3);
        assert_eq!(s.list().len(), 1);
        assert_eq!(s.list()[0].action, "deny");
        assert_eq!(s.list()[0].create_index, 2);
        let mut tx = Txn::for_tests(4);
        let input = IntentionInput {
            source_name: "web".into(),
            destination_name: "db".into(),
            action: "allow".into(),
            ..Default::default()
        };
        let err = s.create_legacy(input, &mut tx).unwrap_err();
        assert!(err
            .message
            .starts_with("duplicate intention found: default/web => default/db"));
    }

    #[test]
    fn match_orders_by_precedence_then_name() {
        let (mut s, _) = store();
        put(&mut s, "web", "*", "allow", 2);
        put(&mut s, "*", "db", "allow", 3);
        put(&mut s, "api", "db", "allow", 4);
        put(&mut s, "web", "db", "deny", 5);
        let order: Vec<(String, String)> = s
            .matching(MatchBy::Destination, "db")
            .into_iter()
            .map(|i| (i.source_name, i.destination_name))
            .collect();
        assert_eq!(
            order,
            vec![
                ("api".to_string(), "db".to_string()),
                ("web".to_string(), "db".to_string()),
                ("*".to_string(), "db".to_string()),
                ("web".to_string(), "*".to_string()),
            ]
        );
        assert_eq!(s.matching(MatchBy::Source, "web").len(), 3);
    }

    #[test]
    fn l7_intentions_deny_in_decisions_and_need_permission_actions() {
        let (mut s, _) = store();
        let mut tx = Txn::for_tests(2);
        let bad = l7(serde_json::json!([{"HTTP": {"PathPrefix": "/"}}]));
        let err = s.upsert_exact("web", "db", bad, http, &mut tx).unwrap_err();
        assert_eq!(
            err.message,
            "Sources[0].Permissions[0].Action must be set to 'allow' or 'deny'"
        );
        let good = l7(serde_json::json!([{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]));
        s.upsert_exact("web", "db", good, http, &mut tx).unwrap();
        let d = s.decide("web", "db", true);
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            "Matched L7 intention: default/web => default/db (Precedence: 9, Permissions: 1)"
        );
        assert_eq!(s.l7_destinations(), ["db"]);
    }

    #[test]
    fn l7_intentions_need_an_http_like_destination() {
        let (mut s, _) = store();
        let mut tx = Txn::for_tests(2);
        let permissions = serde_json::json!([{"Action": "deny", "HTTP": {"PathPrefix": "/admin"}}]);
        let err = s
            .upsert_exact("web", "db", l7(permissions.clone()), tcp, &mut tx)
            .unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (
                500,
                "service \"db\" has protocol \"tcp\", which is incompatible with L7 intentions permissions"
            )
        );
        assert!(s.list().is_empty());
        for protocol in ["http", "http2", "grpc"] {
            let destination = format!("db-{protocol}");
            s.upsert_exact(
                "web",
                &destination,
                l7(permissions.clone()),
                |_| protocol.to_string(),
                &mut tx,
            )
            .unwrap();
        }
        assert_eq!(s.list().len(), 3);
        // An L4 intention needs no protocol.
        put(&mut s, "web", "cache", "allow", 3);
    }

    #[test]
    fn checks_name_the_place_among_the_destination_sources() {
        let (mut s, _) = store();
        put(&mut s, "*", "db", "allow", 2);
        put(&mut s, "api", "db", "deny", 3);
        let mut tx = Txn::for_tests(4);
        let bad = IntentionInput {
            action: "maybe".into(),
            ..Default::default()
        };
        // Sources of db by precedence: api (9), the new web (9, written after api), * (8).
        let err = s
            .upsert_exact("web", "db", bad.clone(), tcp, &mut tx)
            .unwrap_err();
        assert_eq!(
            err.message,
            "Sources[1].Action must be set to 'allow' or 'deny'"
        );
        let err = s.upsert_exact("*", "db", bad, tcp, &mut tx).unwrap_err();
        assert_eq!(
            err.message,
            "Sources[1].Action must be set to 'allow' or 'deny'"
        );
    }

    #[test]
    fn partial_wildcards_and_bad_actions_are_refused() {
        let (mut s, _) = store();
        let mut tx = Txn::for_tests(2);
        let input = IntentionInput {
            action: "allow".into(),
            ..Default::default()
        };
        assert!(s.upsert_exact("web*", "db", input, tcp, &mut tx).is_err());
        let input = IntentionInput {
            action: "maybe".into(),
            ..Default::default()
        };
        let err = s
            .upsert_exact("web", "db", input, tcp, &mut tx)
            .unwrap_err();
        assert_eq!(
            err.message,
            "Sources[0].Action must be set to 'allow' or 'deny'"
        );
        assert!(s.list().is_empty());
    }
}
