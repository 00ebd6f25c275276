//! Service intentions: one per (source, destination) pair, Consul's precedence and ordering,
//! first match decides, and the default when nothing matches.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::json::{DecodeError, Fields};
use crate::state::Txn;

pub const WILDCARD: &str = "*";
const DEFAULT_NS: &str = "default";

#[derive(Clone, Debug, PartialEq)]
pub struct Intention {
    /// Only intentions created through the legacy ID API have one.
    pub id: String,
    pub description: String,
    pub source_name: String,
    pub destination_name: String,
    pub source_type: String,
    /// `allow` / `deny`; empty for L7 intentions (which carry `permissions`).
    pub action: String,
    pub permissions: Option<Value>,
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
    pub fn describe(&self) -> String {
        let id = if self.id.is_empty() {
            String::new()
        } else {
            format!("ID: {}, ", self.id)
        };
        let detail = match &self.permissions {
            Some(Value::Array(p)) if !p.is_empty() => format!("Permissions: {}", p.len()),
            _ => format!("Action: {}", self.action.to_ascii_uppercase()),
        };
        format!(
            "{DEFAULT_NS}/{} => {DEFAULT_NS}/{} ({id}Precedence: {}, {detail})",
            self.source_name, self.destination_name, self.precedence
        )
    }

    pub fn is_l7(&self) -> bool {
        matches!(&self.permissions, Some(Value::Array(p)) if !p.is_empty())
    }
}

/// Which side `/v1/connect/intentions/match` matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchBy {
    Source,
    Destination,
}

/// The outcome of evaluating intentions for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// An intention write refused: status code and Consul's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IntentionError {
    pub status: u16,
    pub message: String,
}

impl IntentionError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        IntentionError {
            status,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for IntentionError {
    fn from(e: DecodeError) -> Self {
        IntentionError::new(400, format!("Failed to decode request body: {e}"))
    }
}

/// The fields a write supplies (`PUT exact` body or legacy body).
#[derive(Clone, Debug, Default)]
pub struct IntentionInput {
    pub source_name: String,
    pub destination_name: String,
    pub source_type: String,
    pub action: String,
    pub permissions: Option<Value>,
    pub description: String,
    pub meta: BTreeMap<String, String>,
}

impl IntentionInput {
    pub fn decode(body: &Value) -> Result<Self, IntentionError> {
        let f = Fields::new(body, "Intention")?;
        let permissions = match f.raw("Permissions") {
            None => None,
            Some(v @ Value::Array(_)) => Some(crate::json::sorted(v)),
            Some(_) => {
                return Err(IntentionError::new(
                    400,
                    "Failed to decode request body: json: cannot unmarshal into Go struct field Intention.Permissions of type []*structs.IntentionPermission",
                ))
            }
        };
        Ok(IntentionInput {
            source_name: f.string_or_default("SourceName")?,
            destination_name: f.string_or_default("DestinationName")?,
            source_type: f.string_or_default("SourceType")?,
            action: f.string_or_default("Action")?,
            permissions,
            description: f.string_or_default("Description")?,
            meta: f.string_map("Meta")?.unwrap_or_default(),
        })
    }
}

pub struct Intentions {
    entries: Vec<Intention>,
    table_index: u64,
}

impl Intentions {
    pub fn new(tx: &mut Txn) -> Self {
        Intentions {
            entries: Vec::new(),
            table_index: tx.index(),
        }
    }

    pub fn table_index(&self) -> u64 {
        self.table_index
    }

    /// Every intention in evaluation order.
    pub fn list(&self) -> Vec<Intention> {
        let mut all = self.entries.clone();
        all.sort_by(precedence_order);
        all
    }

    pub fn exact(&self, source: &str, destination: &str) -> Option<&Intention> {
        self.entries.iter().find(|i| {
            i.source_name.eq_ignore_ascii_case(source)
                && i.destination_name.eq_ignore_ascii_case(destination)
        })
    }

    pub fn by_id(&self, id: &str) -> Option<&Intention> {
        self.entries
            .iter()
            .find(|i| !i.id.is_empty() && i.id.eq_ignore_ascii_case(id))
    }

    /// `PUT /v1/connect/intentions/exact`: create or replace the pair's intention.
    pub fn upsert_exact(
        &mut self,
        source: &str,
        destination: &str,
        mut input: IntentionInput,
        tx: &mut Txn,
    ) -> Result<(), IntentionError> {
        input.source_name = source.to_string();
        input.destination_name = destination.to_string();
        validate(&input)?;
        let index = tx.index();
        let create_index = self
            .exact(source, destination)
            .map_or(index, |i| i.create_index);
        self.remove_pair(source, destination);
        let intention = build(input, String::new(), None, create_index, index);
        self.entries.push(intention);
        self.table_index = index;
        Ok(())
    }

    /// `DELETE /v1/connect/intentions/exact`.
    pub fn delete_exact(&mut self, source: &str, destination: &str, tx: &mut Txn) {
        if self.exact(source, destination).is_some() {
            self.remove_pair(source, destination);
            self.table_index = tx.index();
        }
    }

    /// Legacy `POST /v1/connect/intentions`: refuses an existing pair; returns the new ID.
    pub fn create_legacy(
        &mut self,
        input: IntentionInput,
        tx: &mut Txn,
    ) -> Result<String, IntentionError> {
        validate(&input)?;
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
    pub fn update_legacy(
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
        validate(&input)?;
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
    pub fn delete_legacy(&mut self, id: &str, tx: &mut Txn) -> Result<(), IntentionError> {
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
    pub fn matching(&self, by: MatchBy, name: &str) -> Vec<Intention> {
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
    pub fn decide(&self, source: &str, destination: &str, default_allow: bool) -> Decision {
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
        self.entries.retain(|i| {
            !(i.source_name.eq_ignore_ascii_case(source)
                && i.destination_name.eq_ignore_ascii_case(destination))
        });
    }
}

/// The decision when no intention matches, in Consul 1.10's words: an allow default is a dev
/// agent with ACLs disabled; a deny default (`--default-intention deny`) is what 1.10 says
/// when its ACL system denies by default.
pub fn default_decision(default_allow: bool) -> Decision {
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
pub fn parse_target(input: &str) -> Result<String, IntentionError> {
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
pub fn precedence(source: &str, destination: &str) -> i64 {
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
pub fn precedence_order(a: &Intention, b: &Intention) -> Ordering {
    b.precedence
        .cmp(&a.precedence)
        .then_with(|| a.source_name.cmp(&b.source_name))
        .then_with(|| a.destination_name.cmp(&b.destination_name))
}

fn validate(input: &IntentionInput) -> Result<(), IntentionError> {
    let bad = |m: String| Err(IntentionError::new(500, m));
    if input.destination_name.is_empty() {
        return bad("Name is required".into());
    }
    if input.destination_name != WILDCARD && input.destination_name.contains('*') {
        return bad("Name: wildcard character '*' cannot be used with partial values".into());
    }
    if input.source_name.is_empty() {
        return bad("Sources[0].Name is required".into());
    }
    if input.source_name != WILDCARD && input.source_name.contains('*') {
        return bad(
            "Sources[0].Name: wildcard character '*' cannot be used with partial values".into(),
        );
    }
    if !input.source_type.is_empty() && input.source_type != "consul" {
        return bad("Sources[0].Type must be set to 'consul'".into());
    }
    let has_permissions = matches!(&input.permissions, Some(Value::Array(p)) if !p.is_empty());
    if has_permissions {
        if !input.action.is_empty() {
            return bad("Sources[0].Action must be omitted if Permissions are specified".into());
        }
        if let Some(Value::Array(permissions)) = &input.permissions {
            for (i, permission) in permissions.iter().enumerate() {
                let action = permission
                    .as_object()
                    .and_then(|p| p.iter().find(|(k, _)| k.eq_ignore_ascii_case("action")))
                    .and_then(|(_, v)| v.as_str());
                if !matches!(action, Some("allow" | "deny")) {
                    return bad(format!(
                        "Sources[0].Permissions[{i}].Action must be set to 'allow' or 'deny'"
                    ));
                }
            }
        }
    } else if input.action != "allow" && input.action != "deny" {
        return bad("Sources[0].Action must be set to 'allow' or 'deny'".into());
    }
    if input.description.len() > 512 {
        return bad("Sources[0].Description exceeds maximum length 512".into());
    }
    Ok(())
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
        permissions: input
            .permissions
            .filter(|p| matches!(p, Value::Array(a) if !a.is_empty())),
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
        store.upsert_exact(src, dst, input, &mut tx).unwrap();
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
        let bad = IntentionInput {
            permissions: Some(serde_json::json!([{"HTTP": {"PathPrefix": "/"}}])),
            ..Default::default()
        };
        let err = s.upsert_exact("web", "db", bad, &mut tx).unwrap_err();
        assert_eq!(
            err.message,
            "Sources[0].Permissions[0].Action must be set to 'allow' or 'deny'"
        );
        let good = IntentionInput {
            permissions: Some(
                serde_json::json!([{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]),
            ),
            ..Default::default()
        };
        s.upsert_exact("web", "db", good, &mut tx).unwrap();
        let d = s.decide("web", "db", true);
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            "Matched L7 intention: default/web => default/db (Precedence: 9, Permissions: 1)"
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
        assert!(s.upsert_exact("web*", "db", input, &mut tx).is_err());
        let input = IntentionInput {
            action: "maybe".into(),
            ..Default::default()
        };
        let err = s.upsert_exact("web", "db", input, &mut tx).unwrap_err();
        assert_eq!(
            err.message,
            "Sources[0].Action must be set to 'allow' or 'deny'"
        );
        assert!(s.list().is_empty());
    }
}
