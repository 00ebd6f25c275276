//! The single node's catalog: registered services, their checks, and the per-service indexes
//! that blocking queries on health and catalog endpoints wait on.

mod health;

use std::collections::{BTreeMap, HashMap};

use crate::checks::{Check, CheckDefinition, CheckKind, OwnedTask, PASSING};
use crate::service::{self, RegisterError, Registration, Service, SIDECAR_PORTS};
use crate::state::Txn;

pub(crate) const SERF_CHECK_ID: &str = "serfHealth";

#[derive(Clone, Debug)]
pub(crate) struct ServiceEntry {
    pub service: Service,
    pub create_index: u64,
    pub modify_index: u64,
    /// Set on a sidecar registered through its parent's `Connect.SidecarService`.
    pub sidecar_of: Option<String>,
}

/// The node record every health/catalog entry carries.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub id: String,
    pub name: String,
    pub address: String,
    pub datacenter: String,
    pub create_index: u64,
    pub modify_index: u64,
}

pub(crate) struct Catalog {
    pub node: Node,
    services: BTreeMap<String, ServiceEntry>,
    checks: BTreeMap<String, Check>,
    runners: HashMap<String, OwnedTask>,
    name_index: HashMap<String, u64>,
    table_index: u64,
    sidecar_ports: HashMap<String, i64>,
}

/// What a registration changed, so the caller can start check runners outside the lock.
#[derive(Debug, Default)]
pub(crate) struct NewChecks(pub Vec<(String, CheckKind)>);

impl Catalog {
    pub(crate) fn new(node: Node, tx: &mut Txn) -> Self {
        let index = tx.index();
        let serf = Check {
            id: SERF_CHECK_ID.to_string(),
            name: "Serf Health Status".to_string(),
            status: PASSING.to_string(),
            notes: String::new(),
            output: "Agent alive and reachable".to_string(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            kind: CheckKind::Serf,
            interval: String::new(),
            timeout: String::new(),
            create_index: index,
            modify_index: index,
            ttl_deadline: None,
            ttl_reset: None,
        };
        let mut checks = BTreeMap::new();
        checks.insert(SERF_CHECK_ID.to_string(), serf);
        Catalog {
            node: Node {
                create_index: index,
                modify_index: index,
                ..node
            },
            services: BTreeMap::new(),
            checks,
            runners: HashMap::new(),
            name_index: HashMap::new(),
            table_index: index,
            sidecar_ports: HashMap::new(),
        }
    }

    pub(crate) fn service(&self, id: &str) -> Option<&ServiceEntry> {
        self.services.get(id)
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// All checks, node checks (`serfHealth`) included, ordered by ID.
    pub(crate) fn checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values()
    }

    pub(crate) fn check(&self, id: &str) -> Option<&Check> {
        self.checks.get(id)
    }

    pub(crate) fn node_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values().filter(|c| c.service_id.is_empty())
    }

    pub(crate) fn service_checks<'a>(
        &'a self,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a Check> {
        self.checks
            .values()
            .filter(move |c| c.service_id == service_id)
    }

    /// Instances named `name` (case-insensitive, as Consul's catalog indexes are) or, with
    /// `connect`, the mesh endpoints for `name`: its connect proxies and Connect-native
    /// instances.
    pub(crate) fn instances(&self, name: &str, connect: bool) -> Vec<&ServiceEntry> {
        self.services
            .values()
            .filter(|e| {
                let s = &e.service;
                if connect {
                    (s.is_proxy() && s.proxy.destination_service_name.eq_ignore_ascii_case(name))
                        || (s.native && s.name.eq_ignore_ascii_case(name))
                } else {
                    s.name.eq_ignore_ascii_case(name)
                }
            })
            .collect()
    }

    /// Index a blocking query on service `name` (or its mesh endpoints) waits past.
    pub(crate) fn service_index(&self, name: &str, connect: bool) -> u64 {
        let key = index_key(name, connect);
        self.name_index
            .get(&key)
            .copied()
            .unwrap_or(self.table_index)
    }

    pub(crate) fn table_index(&self) -> u64 {
        self.table_index
    }

    /// Registers a service (and its sidecar); returns the checks that need a runner.
    pub(crate) fn register(
        &mut self,
        registration: Registration,
        replace_existing_checks: bool,
        tx: &mut Txn,
    ) -> Result<NewChecks, RegisterError> {
        let Registration {
            mut service,
            checks,
            sidecar,
        } = registration;
        let sidecar = match sidecar {
            None => None,
            Some(request) => {
                let mut sidecar = request.service;
                if !request.port_given {
                    sidecar.port = self.sidecar_port(&sidecar.id)?;
                }
                let checks = if request.checks.is_empty() {
                    service::default_sidecar_checks(&sidecar, &service)
                } else {
                    request.checks
                };
                Some((sidecar, checks))
            }
        };
        let index = tx.index();
        let mut new_checks = NewChecks::default();
        service::add_default_tagged_addresses(&mut service);
        let parent_id = service.id.clone();
        self.put_service(
            service,
            checks,
            None,
            replace_existing_checks,
            index,
            &mut new_checks,
        );
        if let Some((mut sidecar, checks)) = sidecar {
            service::add_default_tagged_addresses(&mut sidecar);
            self.sidecar_ports.insert(sidecar.id.clone(), sidecar.port);
            self.put_service(
                sidecar,
                checks,
                Some(parent_id),
                replace_existing_checks,
                index,
                &mut new_checks,
            );
        }
        self.refresh_aliases(index);
        Ok(new_checks)
    }

    fn sidecar_port(&self, sidecar_id: &str) -> Result<i64, RegisterError> {
        if let Some(port) = self.sidecar_ports.get(sidecar_id) {
            return Ok(*port);
        }
        let used: Vec<i64> = self
            .services
            .values()
            .filter(|e| e.service.is_proxy())
            .map(|e| e.service.port)
            .chain(self.sidecar_ports.values().copied())
            .collect();
        SIDECAR_PORTS
            .map(i64::from)
            .find(|p| !used.contains(p))
            .ok_or_else(|| RegisterError {
                status: 400,
                message: "Invalid SidecarService: No sidecar ports available".into(),
            })
    }

    fn put_service(
        &mut self,
        service: Service,
        definitions: Vec<CheckDefinition>,
        sidecar_of: Option<String>,
        replace_existing_checks: bool,
        index: u64,
        new_checks: &mut NewChecks,
    ) {
        let id = service.id.clone();
        let create_index = match self.services.get(&id) {
            Some(old) => {
                let old = old.service.clone();
                self.touch(&old, index);
                self.services[&id].create_index
            }
            None => index,
        };
        if replace_existing_checks {
            let old: Vec<String> = self.service_checks(&id).map(|c| c.id.clone()).collect();
            for check_id in old {
                self.checks.remove(&check_id);
                self.runners.remove(&check_id);
            }
        }
        let total = definitions.len();
        for (n, definition) in definitions.into_iter().enumerate() {
            let check_id = if !definition.id.is_empty() {
                definition.id.clone()
            } else if total > 1 {
                format!("service:{id}:{}", n + 1)
            } else {
                format!("service:{id}")
            };
            let create = self.checks.get(&check_id).map_or(index, |c| c.create_index);
            self.runners.remove(&check_id);
            let check =
                health::new_check(check_id.clone(), &definition, Some(&service), create, index);
            let kind = check.kind.clone();
            self.checks.insert(check_id.clone(), check);
            new_checks.0.push((check_id, kind));
        }
        self.touch(&service, index);
        self.services.insert(
            id,
            ServiceEntry {
                service,
                create_index,
                modify_index: index,
                sidecar_of,
            },
        );
    }

    /// Hands the runner for `check_id` to the catalog (dropped, and so stopped, with the check).
    pub(crate) fn adopt_runner(&mut self, check_id: &str, task: OwnedTask) {
        if self.checks.contains_key(check_id) {
            self.runners.insert(check_id.to_string(), task);
        }
    }

    /// Removes a service, its checks and a sidecar registered with it.
    pub(crate) fn deregister(&mut self, id: &str, tx: &mut Txn) -> Result<(), RegisterError> {
        if !self.services.contains_key(id) {
            // Consul 1.10 logs "Service does not exist" and answers 200.
            return Ok(());
        }
        let index = tx.index();
        let sidecars: Vec<String> = self
            .services
            .values()
            .filter(|e| e.sidecar_of.as_deref() == Some(id))
            .map(|e| e.service.id.clone())
            .collect();
        for service_id in sidecars.iter().map(String::as_str).chain([id]) {
            if let Some(entry) = self.services.remove(service_id) {
                self.touch(&entry.service, index);
                self.sidecar_ports.remove(service_id);
            }
            let checks: Vec<String> = self
                .service_checks(service_id)
                .map(|c| c.id.clone())
                .collect();
            for check_id in checks {
                self.checks.remove(&check_id);
                self.runners.remove(&check_id);
            }
        }
        self.refresh_aliases(index);
        Ok(())
    }

    /// Drops every service and service check (an agent restart); the node stays.
    pub(crate) fn clear(&mut self, tx: &mut Txn) {
        let index = tx.index();
        let services: Vec<Service> = self.services.values().map(|e| e.service.clone()).collect();
        for service in &services {
            self.touch(service, index);
        }
        self.services.clear();
        self.checks.retain(|_, c| c.service_id.is_empty());
        self.runners.clear();
        self.sidecar_ports.clear();
        self.table_index = index;
    }

    /// A node-level change shows in every service's health.
    pub(super) fn touch_all(&mut self, index: u64) {
        self.table_index = index;
        for value in self.name_index.values_mut() {
            *value = index;
        }
    }

    pub(super) fn touch(&mut self, service: &Service, index: u64) {
        self.table_index = index;
        self.name_index
            .insert(index_key(&service.name, false), index);
        if service.is_proxy() {
            self.name_index.insert(
                index_key(&service.proxy.destination_service_name, true),
                index,
            );
        }
        if service.native {
            self.name_index
                .insert(index_key(&service.name, true), index);
        }
    }
}

fn index_key(name: &str, connect: bool) -> String {
    let name = name.to_ascii_lowercase();
    if connect {
        format!("connect:{name}")
    } else {
        format!("service:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::decode_registration;
    use serde_json::json;

    fn catalog() -> Catalog {
        let node = Node {
            id: "id".into(),
            name: "node".into(),
            address: "127.0.0.1".into(),
            datacenter: "dc1".into(),
            create_index: 0,
            modify_index: 0,
        };
        Catalog::new(node, &mut Txn::for_tests(1))
    }

    fn register(catalog: &mut Catalog, body: serde_json::Value, index: u64) {
        let reg = decode_registration(&body).unwrap();
        catalog
            .register(reg, false, &mut Txn::for_tests(index))
            .unwrap();
    }

    #[test]
    fn sidecar_ports_are_the_lowest_free_and_sticky() {
        let mut c = catalog();
        let sidecar =
            |name: &str| json!({"Name": name, "Port": 1, "Connect": {"SidecarService": {}}});
        register(&mut c, sidecar("a"), 2);
        register(&mut c, sidecar("b"), 3);
        assert_eq!(c.service("a-sidecar-proxy").unwrap().service.port, 21000);
        assert_eq!(c.service("b-sidecar-proxy").unwrap().service.port, 21001);
        register(&mut c, sidecar("a"), 4);
        assert_eq!(c.service("a-sidecar-proxy").unwrap().service.port, 21000);
        c.deregister("a", &mut Txn::for_tests(5)).unwrap();
        register(&mut c, sidecar("c"), 6);
        assert_eq!(c.service("c-sidecar-proxy").unwrap().service.port, 21000);
    }

    #[test]
    fn alias_follows_the_aliased_service() {
        let mut c = catalog();
        register(
            &mut c,
            json!({"Name": "web", "Port": 1, "Check": {"TTL": "1m"},
            "Connect": {"SidecarService": {}}}),
            2,
        );
        let alias = c.check("service:web-sidecar-proxy:2").unwrap();
        assert_eq!(alias.status, "critical");
        assert!(alias
            .output
            .starts_with("Aliased check \"Service 'web' check\" failing"));
        c.update_ttl("service:web", "passing", "", &mut Txn::for_tests(3))
            .unwrap();
        let alias = c.check("service:web-sidecar-proxy:2").unwrap();
        assert_eq!(
            (alias.status.as_str(), alias.output.as_str()),
            ("passing", "All checks passing.")
        );
        assert_eq!(alias.modify_index, 3);
    }

    #[test]
    fn health_index_moves_only_for_the_service_concerned() {
        let mut c = catalog();
        register(
            &mut c,
            json!({"Name": "web", "Port": 1, "Connect": {"SidecarService": {}}}),
            2,
        );
        register(&mut c, json!({"Name": "db", "Port": 2}), 3);
        assert_eq!(c.service_index("web", true), 2);
        assert_eq!(c.service_index("db", false), 3);
        c.set_check_result(
            "service:web-sidecar-proxy:1",
            "passing",
            "ok",
            &mut Txn::for_tests(4),
        );
        assert_eq!(c.service_index("web", true), 4);
        assert_eq!(c.service_index("db", false), 3);
        // The same result again changes nothing.
        let mut tx = Txn::for_tests(5);
        c.set_check_result("service:web-sidecar-proxy:1", "passing", "ok", &mut tx);
        assert_eq!(c.service_index("web", true), 4);
    }
}
