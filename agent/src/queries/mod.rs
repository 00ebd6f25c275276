//! Prepared queries (`/v1/query`): the store Consul keeps on its servers, lookups by ID or name
//! with Consul's texts, and which catalog instances an execution selects
//! (`agent/consul/prepared_query_endpoint.go`). Like intentions, queries survive an agent
//! restart ([`crate::DevAgent::resume`]). Templates are not supported.

mod definition;

use std::collections::BTreeMap;

use crate::catalog::{Catalog, ServiceEntry};
use crate::checks::{Check, CRITICAL, PASSING};
use crate::state::Txn;

pub(crate) use definition::{Definition, ServiceQuery};

/// A refused prepared-query request: status code and Consul's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct QueryError {
    pub status: u16,
    pub message: String,
}

impl QueryError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        QueryError {
            status,
            message: message.into(),
        }
    }

    /// What the HTTP layer answers when a lookup or execution finds no query.
    pub(crate) fn not_found() -> Self {
        QueryError::new(404, "Query not found")
    }
}

/// A stored query: its definition, the ID it was given and its raft indexes.
#[derive(Clone, Debug)]
pub(crate) struct StoredQuery {
    pub id: String,
    pub definition: Definition,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One selected instance: the service entry and its checks (node checks first).
pub(crate) struct Selected<'a> {
    pub entry: &'a ServiceEntry,
    pub checks: Vec<&'a Check>,
}

#[derive(Default)]
pub(crate) struct Queries {
    /// By ID (lowercase); Consul lists queries in ID order.
    by_id: BTreeMap<String, StoredQuery>,
    table_index: u64,
}

impl Queries {
    /// Every query, in ID order.
    pub(crate) fn list(&self) -> impl Iterator<Item = &StoredQuery> {
        self.by_id.values()
    }

    /// The index list and read queries block on: the last write to any query.
    pub(crate) fn table_index(&self) -> u64 {
        self.table_index
    }

    /// `GET /v1/query/:id`: by ID only; a malformed ID is the state store's index error.
    pub(crate) fn get(&self, id: &str) -> Result<&StoredQuery, QueryError> {
        if let Some(why) = uuid_index_error(id) {
            return Err(QueryError::new(
                500,
                format!("failed prepared query lookup: index error: {why}"),
            ));
        }
        self.by_id
            .get(&id.to_ascii_lowercase())
            .ok_or_else(QueryError::not_found)
    }

    /// What `execute` and `explain` run: the query with this ID if the text looks like one,
    /// else the query of this name (case-insensitive, as Consul's name index is).
    pub(crate) fn resolve(&self, id_or_name: &str) -> Option<&StoredQuery> {
        if looks_like_uuid(id_or_name) {
            if let Some(query) = self.by_id.get(&id_or_name.to_ascii_lowercase()) {
                return Some(query);
            }
        }
        self.by_name(id_or_name)
    }

    /// `POST /v1/query`: validates, stores under a new random ID and returns the ID.
    pub(crate) fn create(
        &mut self,
        definition: Definition,
        tx: &mut Txn,
    ) -> Result<String, QueryError> {
        definition.validate()?;
        self.check_store(None, &definition)?;
        let id = uuid::Uuid::new_v4().to_string();
        let index = tx.index();
        self.by_id.insert(
            id.clone(),
            StoredQuery {
                id: id.clone(),
                definition,
                create_index: index,
                modify_index: index,
            },
        );
        self.table_index = index;
        Ok(id)
    }

    /// `PUT /v1/query/:id`: replaces the definition of an existing query (the ID in the body,
    /// if any, is ignored, as Consul takes the one in the path).
    pub(crate) fn update(
        &mut self,
        id: &str,
        definition: Definition,
        tx: &mut Txn,
    ) -> Result<(), QueryError> {
        let key = self.existing(id)?;
        definition.validate()?;
        self.check_store(Some(&key), &definition)?;
        let index = tx.index();
        if let Some(query) = self.by_id.get_mut(&key) {
            query.definition = definition;
            query.modify_index = index;
        }
        self.table_index = index;
        Ok(())
    }

    /// `DELETE /v1/query/:id`.
    pub(crate) fn delete(&mut self, id: &str, tx: &mut Txn) -> Result<(), QueryError> {
        let key = self.existing(id)?;
        self.by_id.remove(&key);
        self.table_index = tx.index();
        Ok(())
    }

    fn by_name(&self, name: &str) -> Option<&StoredQuery> {
        self.by_id
            .values()
            .find(|q| !q.definition.name.is_empty() && q.definition.name.eq_ignore_ascii_case(name))
    }

    /// The lookup `Apply` makes before an update or delete: the key of the query with `id`.
    fn existing(&self, id: &str) -> Result<String, QueryError> {
        if let Some(why) = uuid_index_error(id) {
            return Err(QueryError::new(
                500,
                format!("Prepared Query lookup failed: failed prepared query lookup: index error: {why}"),
            ));
        }
        let key = id.to_ascii_lowercase();
        if !self.by_id.contains_key(&key) {
            return Err(QueryError::new(
                500,
                format!("Cannot modify non-existent prepared query: '{id}'"),
            ));
        }
        Ok(key)
    }

    /// The state store's checks on a write (`raft apply failed: ...`): the name is not another
    /// query's name or ID, the session exists (there are none), the template compiles.
    fn check_store(&self, own_id: Option<&str>, definition: &Definition) -> Result<(), QueryError> {
        let refused = |why: String| QueryError::new(500, format!("raft apply failed: {why}"));
        let name = &definition.name;
        if !name.is_empty() {
            if self
                .by_name(name)
                .is_some_and(|q| Some(q.id.as_str()) != own_id)
            {
                return Err(refused(format!(
                    "name '{name}' aliases an existing query name"
                )));
            }
            if looks_like_uuid(name) && self.by_id.contains_key(&name.to_ascii_lowercase()) {
                return Err(refused(format!(
                    "name '{name}' aliases an existing query id"
                )));
            }
        }
        let session = &definition.session;
        if !session.is_empty() {
            return Err(refused(match uuid_index_error(session) {
                Some(why) => format!("invalid session: index error: {why}"),
                None => format!("invalid session {session:?}"),
            }));
        }
        match definition.template.kind.as_str() {
            "" => Ok(()),
            "name_prefix_match" => Err(QueryError::new(
                400,
                "tandem-agent dev does not support prepared query templates",
            )),
            other => Err(refused(format!(
                "failed compiling template: Bad Template.Type '{other}'"
            ))),
        }
    }
}

impl ServiceQuery {
    /// The instances an execution returns before shuffling and `?limit`: the service's own
    /// instances or (`Connect`, or `?connect=true`) its mesh endpoints; without critical checks
    /// (with `OnlyPassing`, without any non-passing one), `IgnoreCheckIDs` not counted; then
    /// the node-meta, service-meta and tag filters (`!tag` excludes), tags case-insensitive.
    pub(crate) fn select<'a>(&self, catalog: &'a Catalog, connect: bool) -> Vec<Selected<'a>> {
        let ignored = self.ignore_check_ids.as_deref().unwrap_or_default();
        let node_meta = BTreeMap::from([("consul-network-segment".to_string(), String::new())]);
        catalog
            .instances(&self.service, self.connect || connect)
            .into_iter()
            .map(|entry| Selected {
                entry,
                checks: catalog
                    .node_checks()
                    .chain(catalog.service_checks(&entry.service.id))
                    .collect(),
            })
            .filter(|s| {
                s.checks
                    .iter()
                    .filter(|c| !ignored.contains(&c.id))
                    .all(|c| c.status != CRITICAL && (!self.only_passing || c.status == PASSING))
            })
            .filter(|_| satisfies(Some(&node_meta), self.node_meta.as_ref()))
            .filter(|s| satisfies(s.entry.service.meta.as_ref(), self.service_meta.as_ref()))
            .filter(|s| self.tags_match(s.entry))
            .collect()
    }

    /// Consul's `tagFilter`.
    fn tags_match(&self, entry: &ServiceEntry) -> bool {
        let have: Vec<String> = entry
            .service
            .tags
            .iter()
            .flatten()
            .map(|t| t.to_lowercase())
            .collect();
        self.tags.iter().flatten().all(|tag| {
            let tag = tag.to_lowercase();
            match tag.strip_prefix('!') {
                Some(excluded) => !have.iter().any(|t| t == excluded),
                None => have.contains(&tag),
            }
        })
    }
}

/// `structs.SatisfiesMetaFilters`: every filter pair is present with the same value.
fn satisfies(
    meta: Option<&BTreeMap<String, String>>,
    filters: Option<&BTreeMap<String, String>>,
) -> bool {
    filters
        .into_iter()
        .flatten()
        .all(|(k, v)| meta.and_then(|m| m.get(k)) == Some(v))
}

/// Consul's `isUUID`: the only shape it tries as an ID before a name.
fn looks_like_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The error go-memdb's UUID index gives for a lookup key it cannot parse, if any.
fn uuid_index_error(text: &str) -> Option<String> {
    if text.len() != 36 {
        return Some("UUID must be 36 characters".into());
    }
    let hyphens = text.matches('-').count();
    if hyphens > 4 {
        return Some(format!(
            "UUID should have maximum of 4 \"-\"; got {hyphens}"
        ));
    }
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if !hex.len().is_multiple_of(2) {
        return Some("Input (without hyphens) must be even length".into());
    }
    let bad = hex.chars().find(|c| !c.is_ascii_hexdigit())?;
    Some(format!(
        "Invalid UUID: encoding/hex: invalid byte: U+{:04X} '{bad}'",
        bad as u32
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(body: &str) -> Definition {
        Definition::decode(body.as_bytes()).unwrap()
    }

    #[test]
    fn names_are_unique_case_insensitively_and_resolve_after_ids() {
        let mut queries = Queries::default();
        let id = queries
            .create(
                definition(r#"{"Name":"db","Service":{"Service":"db"}}"#),
                &mut Txn::for_tests(5),
            )
            .unwrap();
        let again = queries.create(
            definition(r#"{"Name":"DB","Service":{"Service":"db"}}"#),
            &mut Txn::for_tests(6),
        );
        assert_eq!(
            again.unwrap_err().message,
            "raft apply failed: name 'DB' aliases an existing query name"
        );
        assert_eq!(queries.resolve("Db").unwrap().id, id);
        assert_eq!(queries.resolve(&id.to_uppercase()).unwrap().id, id);
        assert!(queries.resolve("nope").is_none());
        assert_eq!(queries.table_index(), 5);
    }

    #[test]
    fn lookups_by_malformed_ids_fail_like_the_state_store() {
        let queries = Queries::default();
        assert_eq!(
            queries.get("web").unwrap_err(),
            QueryError::new(
                500,
                "failed prepared query lookup: index error: UUID must be 36 characters"
            )
        );
        assert_eq!(
            queries
                .get("00000000-0000-0000-0000-000000000000")
                .unwrap_err(),
            QueryError::not_found()
        );
        assert_eq!(
            uuid_index_error("zzzzzzzz-0000-0000-0000-000000000000").as_deref(),
            Some("Invalid UUID: encoding/hex: invalid byte: U+007A 'z'")
        );
    }

    #[test]
    fn update_keeps_the_id_and_create_index() {
        let mut queries = Queries::default();
        let id = queries
            .create(
                definition(r#"{"Name":"db","Service":{"Service":"db"}}"#),
                &mut Txn::for_tests(5),
            )
            .unwrap();
        queries
            .update(
                &id,
                definition(r#"{"Name":"db","Service":{"Service":"db","Tags":["v2"]}}"#),
                &mut Txn::for_tests(7),
            )
            .unwrap();
        let stored = queries.get(&id).unwrap();
        assert_eq!((stored.create_index, stored.modify_index), (5, 7));
        assert_eq!(stored.definition.service.tags, Some(vec!["v2".to_string()]));
        queries.delete(&id, &mut Txn::for_tests(8)).unwrap();
        assert_eq!(
            queries
                .delete(&id, &mut Txn::for_tests(9))
                .unwrap_err()
                .message,
            format!("Cannot modify non-existent prepared query: '{id}'")
        );
    }
}
