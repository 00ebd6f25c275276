//! Check state inside the catalog: TTL updates and expiry, probe results, alias evaluation,
//! and check registration on its own.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Catalog, NewChecks};
use crate::checks::{self, Check, CheckDefinition, CheckKind, CRITICAL, PASSING};
use crate::service::{RegisterError, Service};
use crate::state::Txn;

impl Catalog {
    /// `PUT /v1/agent/check/register`: a check on the node or on a registered service.
    pub(crate) fn register_check(
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
        let create = self.checks.get(&check_id).map_or(index, |c| c.create_index);
        self.runners.remove(&check_id);
        let mut check = new_check(
            check_id.clone(),
            &definition,
            service.as_ref(),
            create,
            index,
        );
        check.interval = crate::godur::format(definition.interval.unwrap_or_default());
        check.timeout = crate::godur::format(definition.timeout.unwrap_or_default());
        let kind = check.kind.clone();
        self.checks.insert(check_id.clone(), check);
        match &service {
            Some(service) => self.touch(service, index),
            None => self.touch_all(index),
        }
        self.refresh_aliases(index);
        Ok(NewChecks(vec![(check_id, kind)]))
    }

    /// `PUT /v1/agent/check/deregister/:id`.
    pub(crate) fn deregister_check(
        &mut self,
        check_id: &str,
        tx: &mut Txn,
    ) -> Result<(), RegisterError> {
        let Some(check) = self
            .checks
            .get(check_id)
            .filter(|c| c.kind != CheckKind::Serf)
        else {
            return Err(unknown_check(check_id));
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

    /// Records a probe result; the index moves only if status or output changed.
    pub(crate) fn set_check_result(
        &mut self,
        check_id: &str,
        status: &str,
        output: &str,
        tx: &mut Txn,
    ) {
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
    pub(crate) fn update_ttl(
        &mut self,
        check_id: &str,
        status: &str,
        output: &str,
        tx: &mut Txn,
    ) -> Result<(), RegisterError> {
        let Some(check) = self.checks.get_mut(check_id) else {
            return Err(unknown_check(check_id));
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
    pub(crate) fn ttl_timer(&self, check_id: &str) -> Option<(Option<Instant>, Arc<Notify>)> {
        let check = self.checks.get(check_id)?;
        Some((check.ttl_deadline, check.ttl_reset.clone()?))
    }

    /// Turns a TTL check critical once its deadline has passed.
    pub(crate) fn expire_ttl(&mut self, check_id: &str, tx: &mut Txn) {
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

    pub(super) fn update_check(&mut self, check_id: &str, status: &str, output: &str, index: u64) {
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
    pub(super) fn refresh_aliases(&mut self, index: u64) {
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
            // The agent's own checks: serfHealth lives in the catalog only, so a 1.10 alias
            // of a service without checks says "No checks found.".
            .filter(|c| !matches!(c.kind, CheckKind::Serf))
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
}

/// A check in its initial state (`Status` given, else critical; TTL timer started).
pub(super) fn new_check(
    id: String,
    definition: &CheckDefinition,
    service: Option<&Service>,
    create_index: u64,
    index: u64,
) -> Check {
    let kind = definition.kind();
    let (ttl_deadline, ttl_reset) = match kind {
        CheckKind::Ttl(ttl) => (Some(Instant::now() + ttl), Some(Arc::new(Notify::new()))),
        _ => (None, None),
    };
    let name = match (definition.name.is_empty(), service) {
        (true, Some(service)) => format!("Service '{}' check", service.name),
        _ => definition.name.clone(),
    };
    Check {
        id,
        name,
        status: definition
            .status
            .clone()
            .unwrap_or_else(|| CRITICAL.to_string()),
        notes: definition.notes.clone(),
        output: String::new(),
        service_id: service.map(|s| s.id.clone()).unwrap_or_default(),
        service_name: service.map(|s| s.name.clone()).unwrap_or_default(),
        service_tags: service.and_then(|s| s.tags.clone()).unwrap_or_default(),
        kind,
        interval: String::new(),
        timeout: String::new(),
        create_index,
        modify_index: index,
        ttl_deadline,
        ttl_reset,
    }
}

/// Consul's 404 for a check ID the agent does not know.
fn unknown_check(check_id: &str) -> RegisterError {
    RegisterError {
        status: 404,
        message: format!(
            "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
        ),
    }
}
