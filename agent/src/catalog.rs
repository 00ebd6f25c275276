//! The single node's catalog: registered services, their checks, and the per-service indexes
//! that blocking queries on health and catalog endpoints wait on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::checks::{self, Check, CheckDefinition, CheckKind, OwnedTask, CRITICAL, PASSING};
use crate::service::{self, RegisterError, Registration, Service, SIDECAR_PORTS};
use crate::state::Txn;

pub const SERF_CHECK_ID: &str = "serfHealth";

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub service: Service,
    pub create_index: u64,
    pub modify_index: u64,
    /// Set on a sidecar registered through its parent's `Connect.SidecarService`.
    pub sidecar_of: Option<String>,
}

/// The node record every health/catalog entry carries.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub address: String,
    pub datacenter: String,
    pub create_index: u64,
    pub modify_index: u64,
}

pub struct Catalog {
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
pub struct NewChecks(pub Vec<(String, CheckKind)>);

impl Catalog {
    pub fn new(node: Node, tx: &mut Txn) -> Self {
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

    pub fn service(&self, id: &str) -> Option<&ServiceEntry> {
        self.services.get(id)
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// All checks, node checks (`serfHealth`) included, ordered by ID.
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values()
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.get(id)
    }

    pub fn node_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values().filter(|c| c.service_id.is_empty())
    }

    pub fn service_checks<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Check> {
        self.checks
            .values()
            .filter(move |c| c.service_id == service_id)
    }

    /// Instances named `name` (case-insensitive, as Consul's catalog indexes are).
    pub fn instances(&self, name: &str) -> Vec<&ServiceEntry> {
        self.services
            .values()
            .filter(|e| e.service.name.eq_ignore_ascii_case(name))
            .collect()
    }

    /// Mesh endpoints for `name`: its connect proxies and Connect-native instances.
    pub fn connect_instances(&self, name: &str) -> Vec<&ServiceEntry> {
        self.services
            .values()
            .filter(|e| {
                (e.service.is_proxy()
                    && e.service
                        .proxy
                        .destination_service_name
                        .eq_ignore_ascii_case(name))
                    || (e.service.native && e.service.name.eq_ignore_ascii_case(name))
            })
            .collect()
    }

    /// Index a blocking query on service `name` (or its mesh endpoints) waits past.
    pub fn service_index(&self, name: &str, connect: bool) -> u64 {
        let key = index_key(name, connect);
        self.name_index
            .get(&key)
            .copied()
            .unwrap_or(self.table_index)
    }

    pub fn table_index(&self) -> u64 {
        self.table_index
    }

    /// Registers a service (and its sidecar); returns the checks that need a runner.
    pub fn register(
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
            let name = if definition.name.is_empty() {
                format!("Service '{}' check", service.name)
            } else {
                definition.name.clone()
            };
            let kind = definition.kind();
            let (ttl_deadline, ttl_reset) = match kind {
                CheckKind::Ttl(ttl) => (Some(Instant::now() + ttl), Some(Arc::new(Notify::new()))),
                _ => (None, None),
            };
            let create = self.checks.get(&check_id).map_or(index, |c| c.create_index);
            self.runners.remove(&check_id);
            self.checks.insert(
                check_id.clone(),
                Check {
                    id: check_id.clone(),
                    name,
                    status: definition
                        .status
                        .clone()
                        .unwrap_or_else(|| CRITICAL.to_string()),
                    notes: definition.notes.clone(),
                    output: String::new(),
                    service_id: id.clone(),
                    service_name: service.name.clone(),
                    service_tags: service.tags.clone().unwrap_or_default(),
                    kind: kind.clone(),
                    create_index: create,
                    modify_index: index,
                    ttl_deadline,
                    ttl_reset,
                },
            );
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

    /// `PUT /v1/agent/check/register`: a check on the node or on a registered service.
    pub fn register_check(
        &mut self,
        definition: CheckDefinition,
        tx: &mut Txn,
    ) -> Result<NewChecks, RegisterError> {
        let service = if definition.service_id.is_empty() {
            None
        } else {
            match self.services.get(&definition.service_id) {
                Some(entry) => Some(entry.service.clone()),
                None => {
                    return Err(RegisterError {
                        status: 400,
                        message: format!("ServiceID {:?} does not exist", definition.service_id),
                    })
                }
            }
        };
        let index = tx.index();
        let check_id = if definition.id.is_empty() {
            definition.name.clone()
        } else {
            definition.id.clone()
        };
        let kind = definition.kind();
        let (ttl_deadline, ttl_reset) = match kind {
            CheckKind::Ttl(ttl) => (Some(Instant::now() + ttl), Some(Arc::new(Notify::new()))),
            _ => (None, None),
        };
        let create = self.checks.get(&check_id).map_or(index, |c| c.create_index);
        self.runners.remove(&check_id);
        self.checks.insert(
            check_id.clone(),
            Check {
                id: check_id.clone(),
                name: definition.name.clone(),
                status: definition
                    .status
                    .clone()
                    .unwrap_or_else(|| CRITICAL.to_string()),
                notes: definition.notes.clone(),
                output: String::new(),
                service_id: service.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
                service_name: service.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                service_tags: service
                    .as_ref()
                    .and_then(|s| s.tags.clone())
                    .unwrap_or_default(),
                kind: kind.clone(),
                create_index: create,
                modify_index: index,
                ttl_deadline,
                ttl_reset,
            },
        );
        match &service {
            Some(service) => self.touch(service, index),
            None => self.touch_all(index),
        }
        self.refresh_aliases(index);
        Ok(NewChecks(vec![(check_id, kind)]))
    }

    /// `PUT /v1/agent/check/deregister/:id`.
    pub fn deregister_check(&mut self, check_id: &str, tx: &mut Txn) -> Result<(), RegisterError> {
        let Some(check) = self
            .checks
            .get(check_id)
            .filter(|c| c.kind != CheckKind::Serf)
        else {
            return Err(RegisterError {
                status: 404,
                message: format!(
                    "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
                ),
            });
        };
        let service_id = check.service_id.clone();
        let index = tx.index();
        self.checks.remove(check_id);
        self.runners.remove(check_id);
        match self.services.get(&service_id).map(|e| e.service.clone()) {
            Some(service) => self.touch(&service, index),
            None => self.touch_all(index),
        }
        self.refresh_aliases(index);
        Ok(())
    }

    /// Hands the runner for `check_id` to the catalog (dropped, and so stopped, with the check).
    pub fn adopt_runner(&mut self, check_id: &str, task: OwnedTask) {
        if self.checks.contains_key(check_id) {
            self.runners.insert(check_id.to_string(), task);
        }
    }

    /// Removes a service, its checks and a sidecar registered with it.
    pub fn deregister(&mut self, id: &str, tx: &mut Txn) -> Result<(), RegisterError> {
        if !self.services.contains_key(id) {
            return Err(RegisterError {
                status: 404,
                message: format!(
                    "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                ),
            });
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
    pub fn clear(&mut self, tx: &mut Txn) {
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

    /// Records a probe result; the index moves only if status or output changed.
    pub fn set_check_result(&mut self, check_id: &str, status: &str, output: &str, tx: &mut Txn) {
        let Some(check) = self.checks.get(check_id) else {
            return;
        };
        if check.status == status && check.output == output {
            return;
        }
        let index = tx.index();
        self.update_check(check_id, status, output, index);
        self.refresh_aliases(index);
    }

    /// `PUT /v1/agent/check/{pass,warn,fail,update}/:id` on a TTL check.
    pub fn update_ttl(
        &mut self,
        check_id: &str,
        status: &str,
        output: &str,
        tx: &mut Txn,
    ) -> Result<(), RegisterError> {
        let Some(check) = self.checks.get_mut(check_id) else {
            return Err(RegisterError {
                status: 404,
                message: format!(
                    "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
                ),
            });
        };
        let CheckKind::Ttl(ttl) = check.kind else {
            return Err(RegisterError {
                status: 500,
                message: format!("CheckID {check_id:?} does not have associated TTL"),
            });
        };
        check.ttl_deadline = Some(Instant::now() + ttl);
        if let Some(reset) = &check.ttl_reset {
            reset.notify_one();
        }
        let output = checks::limit_output(output);
        if check.status != status || check.output != output {
            let index = tx.index();
            self.update_check(check_id, status, &output, index);
            self.refresh_aliases(index);
        }
        Ok(())
    }

    /// The TTL deadline and reset signal of a check, `None` once the check is gone.
    pub fn ttl_timer(&self, check_id: &str) -> Option<(Option<Instant>, Arc<Notify>)> {
        let check = self.checks.get(check_id)?;
        Some((check.ttl_deadline, check.ttl_reset.clone()?))
    }

    /// Turns a TTL check critical once its deadline has passed.
    pub fn expire_ttl(&mut self, check_id: &str, tx: &mut Txn) {
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        match check.ttl_deadline {
            Some(deadline) if deadline <= Instant::now() => {}
            _ => return,
        }
        check.ttl_deadline = None;
        let output = if check.output.is_empty() || check.status == CRITICAL {
            "TTL expired".to_string()
        } else {
            format!(
                "TTL expired (last output before timeout follows): {}",
                check.output
            )
        };
        if check.status != CRITICAL || check.output != output {
            let index = tx.index();
            self.update_check(check_id, CRITICAL, &output, index);
            self.refresh_aliases(index);
        }
    }

    fn update_check(&mut self, check_id: &str, status: &str, output: &str, index: u64) {
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        check.status = status.to_string();
        check.output = output.to_string();
        check.modify_index = index;
        let service_id = check.service_id.clone();
        if service_id.is_empty() {
            self.touch_all(index);
        } else if let Some(entry) = self.services.get(&service_id) {
            let service = entry.service.clone();
            self.touch(&service, index);
        }
    }

    /// Re-evaluates alias checks after any status change (Consul's alias checks watch state).
    fn refresh_aliases(&mut self, index: u64) {
        let aliases: Vec<(String, String)> = self
            .checks
            .values()
            .filter_map(|c| match &c.kind {
                CheckKind::Alias { service_id } => Some((c.id.clone(), service_id.clone())),
                _ => None,
            })
            .collect();
        for (check_id, target) in aliases {
            let (status, output) = self.alias_result(&target);
            let changed = self
                .checks
                .get(&check_id)
                .is_some_and(|c| c.status != status || c.output != output);
            if changed {
                self.update_check(&check_id, status, &output, index);
            }
        }
    }

    fn alias_result(&self, target: &str) -> (&'static str, String) {
        if !self.services.contains_key(target) {
            return (CRITICAL, format!("Service not found: {target}"));
        }
        let mut status = PASSING;
        let mut output = "No checks found.".to_string();
        for check in self
            .checks
            .values()
            .filter(|c| c.service_id.is_empty() || c.service_id == target)
        {
            if check.status == CRITICAL || check.status == checks::WARNING {
                status = if check.status == CRITICAL {
                    CRITICAL
                } else {
                    checks::WARNING
                };
                output = format!("Aliased check {:?} failing: {}", check.name, check.output);
                if status == CRITICAL {
                    break;
                }
            } else if status == PASSING {
                output = "All checks passing.".to_string();
            }
        }
        (status, output)
    }

    /// A node-level change shows in every service's health.
    fn touch_all(&mut self, index: u64) {
        self.table_index = index;
        for value in self.name_index.values_mut() {
            *value = index;
        }
    }

    fn touch(&mut self, service: &Service, index: u64) {
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
