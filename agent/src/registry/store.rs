//! The services and checks registered on this agent, with the state of
//! every check. Owned by the core loop; all methods are quick and do no
//! I/O: check runners are spawned through the caller's `spawn` function, and
//! persistence is left to the caller (see [`Registry::persisted`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use shoal_protocol::record::{CheckRecord, CheckStatus, ServiceRecord};
use tokio_util::sync::CancellationToken;

use super::service::ServiceDefinition;
use crate::checks::{CheckDefinition, CheckKind, CheckResult, CheckState};

/// Where a registration came from. Config ones are replaced on reload; API
/// ones are persisted in the data dir and survive restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Config,
    Api,
}

/// Starts a runner for a check and returns the token that stops it; `None`
/// for checks without a runner (TTL).
pub type Spawn<'a> = dyn FnMut(Arc<CheckDefinition>) -> Option<CancellationToken> + 'a;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("unknown service `{0}`")]
    UnknownService(String),
    #[error("unknown check `{0}`")]
    UnknownCheck(String),
    #[error("check `{0}` is not a TTL check")]
    NotTtl(String),
    #[error("check id `{0}` is already used by another service's check")]
    CheckIdTaken(String),
    #[error("this agent already has {0} services, the most a node may carry")]
    TooManyServices(usize),
    #[error(
        "with this service the node's gossiped record would be about {bytes} bytes; peers accept at most {max} (fewer or shorter tags, meta or checks)"
    )]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("this agent would have more than {0} checks, the most a node may carry")]
    TooManyChecks(usize),
}

/// What a call changed, so the caller knows whether to gossip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    None,
    /// Only output text: goes out with the next gossiped change.
    Output,
    /// Something the cluster must hear about now.
    Status,
}

struct RegisteredService {
    definition: ServiceDefinition,
    source: Source,
    /// The registration as received (normalized), for persistence.
    raw: Option<Value>,
}

/// A check with its state; public so the API can show details.
pub struct RegisteredCheck {
    pub definition: Arc<CheckDefinition>,
    pub state: CheckState,
    pub source: Source,
    raw: Option<Value>,
    runner: Option<CancellationToken>,
}

impl Drop for RegisteredCheck {
    fn drop(&mut self) {
        if let Some(runner) = &self.runner {
            runner.cancel();
        }
    }
}

#[derive(Default)]
pub struct Registry {
    services: BTreeMap<String, RegisteredService>,
    checks: BTreeMap<String, RegisteredCheck>,
    node_maintenance: Option<String>,
    service_maintenance: BTreeMap<String, String>,
}

/// Most bytes this node's services and checks may take in its gossiped
/// record: what peers accept ([`shoal_protocol::state::MAX_RECORD_BYTES`]),
/// less room for the node's name and tags.
pub const RECORD_BUDGET: usize = shoal_protocol::state::MAX_RECORD_BYTES - 32 * 1024;

/// Most checks this node may register: what peers accept, less room for
/// the maintenance checks Shoal adds itself (one for the node, one per
/// service in maintenance).
pub const MAX_CHECKS: usize =
    shoal_protocol::state::MAX_CHECKS - shoal_protocol::state::MAX_SERVICES - 1;

/// The gossiped size of a service about to be registered, its checks
/// counted with the longest output that is gossiped.
fn estimated_bytes(definition: &ServiceDefinition) -> usize {
    let record = ServiceRecord {
        id: definition.id.clone(),
        name: definition.name.clone(),
        address: definition.address.clone(),
        port: definition.port,
        tags: definition.tags.clone(),
        meta: definition.gossiped_meta(),
        checks: Vec::new(),
    };
    let checks: usize = definition
        .checks
        .iter()
        .map(|check| {
            check.id.len()
                + check.name.len()
                + check.notes.len()
                + shoal_protocol::record::GOSSIPED_OUTPUT
                + 32
        })
        .sum();
    shoal_protocol::codec::encoded_len(&record) + checks
}

impl Registry {
    /// Registers (or replaces) a service and its checks.
    pub fn register_service(
        &mut self,
        definition: ServiceDefinition,
        source: Source,
        raw: Option<Value>,
        spawn: &mut Spawn<'_>,
        now: Instant,
    ) -> Result<(), RegistryError> {
        let max = shoal_protocol::state::MAX_SERVICES;
        if !self.services.contains_key(&definition.id) && self.services.len() >= max {
            return Err(RegistryError::TooManyServices(max));
        }
        let kept = self
            .checks
            .values()
            .filter(|check| check.definition.service_id.as_deref() != Some(definition.id.as_str()))
            .count();
        if kept + definition.checks.len() > MAX_CHECKS {
            return Err(RegistryError::TooManyChecks(MAX_CHECKS));
        }
        let bytes = self.record_bytes_without(&definition.id) + estimated_bytes(&definition);
        if bytes > RECORD_BUDGET {
            return Err(RegistryError::RecordTooLarge {
                bytes,
                max: RECORD_BUDGET,
            });
        }
        for check in &definition.checks {
            if let Some(existing) = self.checks.get(&check.id)
                && existing.definition.service_id.as_deref() != Some(definition.id.as_str())
            {
                return Err(RegistryError::CheckIdTaken(check.id.clone()));
            }
        }
        self.remove_service_checks(&definition.id);
        for check in &definition.checks {
            self.insert_check(check.clone(), source, None, spawn, now);
        }
        if !super::service::served_by_dns(&definition.name) {
            // Consul's habit: accepted and served over HTTP, with a warning.
            tracing::warn!(
                service = %definition.name,
                id = %definition.id,
                "service `{}` has '_' in its name: it is served over HTTP but not over DNS (DNS names allow letters, digits and '-')",
                definition.name
            );
        }
        self.services.insert(
            definition.id.clone(),
            RegisteredService {
                definition,
                source,
                raw,
            },
        );
        Ok(())
    }

    pub fn deregister_service(&mut self, id: &str) -> Result<(), RegistryError> {
        self.services
            .remove(id)
            .ok_or_else(|| RegistryError::UnknownService(id.to_string()))?;
        self.remove_service_checks(id);
        self.service_maintenance.remove(id);
        Ok(())
    }

    /// Registers a check on its own (a node check, or one attached to an
    /// existing service through `service_id`).
    pub fn register_check(
        &mut self,
        definition: CheckDefinition,
        source: Source,
        raw: Option<Value>,
        spawn: &mut Spawn<'_>,
        now: Instant,
    ) -> Result<(), RegistryError> {
        if let Some(service) = &definition.service_id
            && !self.services.contains_key(service)
        {
            return Err(RegistryError::UnknownService(service.clone()));
        }
        if !self.checks.contains_key(&definition.id) && self.checks.len() >= MAX_CHECKS {
            return Err(RegistryError::TooManyChecks(MAX_CHECKS));
        }
        self.insert_check(definition, source, raw, spawn, now);
        Ok(())
    }

    pub fn deregister_check(&mut self, id: &str) -> Result<(), RegistryError> {
        self.checks
            .remove(id)
            .map(drop)
            .ok_or_else(|| RegistryError::UnknownCheck(id.to_string()))
    }

    /// Replaces everything that came from configuration with `services` and
    /// `checks`; API registrations stay.
    pub fn replace_config(
        &mut self,
        services: Vec<ServiceDefinition>,
        checks: Vec<CheckDefinition>,
        spawn: &mut Spawn<'_>,
        now: Instant,
    ) -> Result<(), RegistryError> {
        // What a reload leaves unchanged keeps its check state, runners and
        // maintenance: re-registering would reset passing checks to their
        // initial status and flap the service across the cluster.
        let stale: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.source == Source::Config && !services.contains(&s.definition))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.deregister_service(&id)?;
        }
        self.checks.retain(|_, check| {
            !(check.source == Source::Config
                && check.definition.service_id.is_none()
                && !checks.contains(&check.definition))
        });
        for service in services {
            let unchanged = self
                .services
                .get(&service.id)
                .is_some_and(|s| s.source == Source::Config && s.definition == service);
            if !unchanged {
                self.register_service(service, Source::Config, None, spawn, now)?;
            }
        }
        for check in checks {
            let unchanged = self
                .checks
                .get(&check.id)
                .is_some_and(|c| c.source == Source::Config && *c.definition == check);
            if !unchanged {
                self.register_check(check, Source::Config, None, spawn, now)?;
            }
        }
        Ok(())
    }

    /// A runner's result.
    pub fn apply_result(&mut self, result: CheckResult, now: Instant) -> Change {
        match self.checks.get_mut(&result.check_id) {
            Some(check) => {
                let same_output = check.state.output() == result.result.output;
                let status_changed = check.state.record(result.result, result.duration, now);
                if !status_changed && same_output {
                    Change::None
                } else {
                    status_or_output(status_changed)
                }
            }
            None => Change::None,
        }
    }

    /// `PUT /v1/agent/check/pass|warn|fail|update/:id`.
    pub fn ttl_update(
        &mut self,
        id: &str,
        status: CheckStatus,
        note: Option<String>,
        now: Instant,
    ) -> Result<Change, RegistryError> {
        let check = self
            .checks
            .get_mut(id)
            .ok_or_else(|| RegistryError::UnknownCheck(id.to_string()))?;
        if !matches!(check.definition.kind, CheckKind::Ttl { .. }) {
            return Err(RegistryError::NotTtl(id.to_string()));
        }
        Ok(status_or_output(check.state.ttl_update(status, note, now)))
    }

    /// Expires TTLs and deregisters services whose checks stayed critical
    /// past `deregister_critical_service_after`. Returns what changed and
    /// the services removed.
    pub fn tick(&mut self, now: Instant) -> (Change, Vec<String>) {
        let mut change = Change::None;
        for check in self.checks.values_mut() {
            if check.state.expire_ttl(now) {
                change = Change::Status;
            }
        }
        let doomed: Vec<String> = self
            .checks
            .values()
            .filter(|check| check.state.should_deregister(now))
            .filter_map(|check| check.definition.service_id.clone())
            .collect();
        let mut removed = Vec::new();
        for service in doomed {
            if self.deregister_service(&service).is_ok() {
                removed.push(service);
                change = Change::Status;
            }
        }
        (change, removed)
    }

    pub fn set_node_maintenance(&mut self, reason: Option<String>) {
        self.node_maintenance = reason;
    }

    pub fn set_service_maintenance(
        &mut self,
        id: &str,
        reason: Option<String>,
    ) -> Result<(), RegistryError> {
        if !self.services.contains_key(id) {
            return Err(RegistryError::UnknownService(id.to_string()));
        }
        match reason {
            Some(reason) => self.service_maintenance.insert(id.to_string(), reason),
            None => self.service_maintenance.remove(id),
        };
        Ok(())
    }

    /// The gossiped form: services with their checks, and node checks.
    /// Maintenance shows as a critical check, as in Consul.
    pub fn records(&self) -> (Vec<ServiceRecord>, Vec<CheckRecord>) {
        let services = self
            .services
            .values()
            .map(|service| {
                let definition = &service.definition;
                let mut checks: Vec<CheckRecord> = self
                    .checks
                    .values()
                    .filter(|check| {
                        check.definition.service_id.as_deref() == Some(definition.id.as_str())
                    })
                    .map(|check| check.state.to_record())
                    .collect();
                if let Some(reason) = self.service_maintenance.get(&definition.id) {
                    checks.push(maintenance_check(
                        format!("_service_maintenance:{}", definition.id),
                        reason,
                    ));
                }
                ServiceRecord {
                    id: definition.id.clone(),
                    name: definition.name.clone(),
                    address: definition.address.clone(),
                    port: definition.port,
                    tags: definition.tags.clone(),
                    meta: definition.gossiped_meta(),
                    checks,
                }
            })
            .collect();
        let mut node_checks: Vec<CheckRecord> = self
            .checks
            .values()
            .filter(|check| check.definition.service_id.is_none())
            .map(|check| check.state.to_record())
            .collect();
        if let Some(reason) = &self.node_maintenance {
            node_checks.push(maintenance_check("_node_maintenance".into(), reason));
        }
        (services, node_checks)
    }

    /// Encoded size of the gossiped services and checks, leaving out the
    /// service `id` (about to be replaced).
    fn record_bytes_without(&self, id: &str) -> usize {
        let (mut services, checks) = self.records();
        services.retain(|service| service.id != id);
        shoal_protocol::codec::encoded_len(&services) + shoal_protocol::codec::encoded_len(&checks)
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceDefinition> {
        self.services.values().map(|s| &s.definition)
    }

    pub fn checks(&self) -> impl Iterator<Item = &RegisteredCheck> {
        self.checks.values()
    }

    /// API registrations and maintenance, as JSON for the data dir.
    pub fn persisted(&self) -> Value {
        let services: Vec<&Value> = self
            .services
            .values()
            .filter_map(|s| s.raw.as_ref())
            .collect();
        let checks: Vec<&Value> = self
            .checks
            .values()
            .filter_map(|c| c.raw.as_ref())
            .collect();
        json!({
            "services": services,
            "checks": checks,
            "node_maintenance": self.node_maintenance,
            "service_maintenance": self.service_maintenance,
        })
    }

    fn insert_check(
        &mut self,
        definition: CheckDefinition,
        source: Source,
        raw: Option<Value>,
        spawn: &mut Spawn<'_>,
        now: Instant,
    ) {
        let definition = Arc::new(definition);
        let runner = spawn(definition.clone());
        let state = CheckState::new(definition.clone(), now);
        // Replacing an entry drops the old one, which stops its runner.
        self.checks.insert(
            definition.id.clone(),
            RegisteredCheck {
                definition,
                state,
                source,
                raw,
                runner,
            },
        );
    }

    fn remove_service_checks(&mut self, service: &str) {
        self.checks
            .retain(|_, check| check.definition.service_id.as_deref() != Some(service));
    }
}

fn status_or_output(status_changed: bool) -> Change {
    if status_changed {
        Change::Status
    } else {
        Change::Output
    }
}

fn maintenance_check(id: String, reason: &str) -> CheckRecord {
    CheckRecord {
        id,
        name: "Maintenance Mode".into(),
        kind: "maintenance".into(),
        status: CheckStatus::Critical,
        critical: true,
        notes: reason.to_string(),
        output: String::new(),
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn service(id: usize, tags: usize) -> ServiceDefinition {
        let value = serde_json::json!({
            "id": format!("s{id}"),
            "name": "web",
            "tags": (0..tags).map(|i| format!("{i:0>250}")).collect::<Vec<_>>(),
        });
        ServiceDefinition::parse(&value, "service").unwrap()
    }

    #[test]
    fn a_registration_that_peers_would_refuse_is_refused_here() {
        let mut registry = Registry::default();
        let mut spawn = |_: Arc<CheckDefinition>| None;
        let now = Instant::now();
        let mut registered = 0;
        let error = loop {
            match registry.register_service(
                service(registered, 64),
                Source::Api,
                None,
                &mut spawn,
                now,
            ) {
                Ok(()) => registered += 1,
                Err(error) => break error,
            }
        };
        assert!(
            matches!(error, RegistryError::RecordTooLarge { .. }),
            "{error}"
        );
        assert!(registered > 0 && registered < MAX_SERVICES_FOR_TEST);
        // Replacing a registered service with itself still fits.
        registry
            .register_service(service(0, 64), Source::Api, None, &mut spawn, now)
            .unwrap();
        let (services, checks) = registry.records();
        let bytes = shoal_protocol::codec::encoded_len(&services)
            + shoal_protocol::codec::encoded_len(&checks);
        assert!(bytes <= RECORD_BUDGET);
    }

    const MAX_SERVICES_FOR_TEST: usize = shoal_protocol::state::MAX_SERVICES;
}
