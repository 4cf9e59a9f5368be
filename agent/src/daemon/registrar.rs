//! The registrar: the core loop's side of the registry. It applies
//! requests, starts and stops check runners, and hands persistence to a
//! task of its own so the loop never waits on the disk.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::Value;
use shoal_protocol::record::{CheckRecord, ServiceRecord};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::checks::{self, CheckDefinition, CheckKind, CheckResult, DependencyLookup};
use crate::handle::{Answer, RegistrationError, RegistryRequest};
use crate::persist::{DataDirGuard, write_atomic};
use crate::registry::{Change, Registry, RegistryError, ServiceDefinition, Source};
use crate::snapshot::CheckDetail;

/// File in the data dir holding API registrations and maintenance.
pub const REGISTRATIONS_FILE: &str = "local.json";

type Reply = oneshot::Sender<Result<(), RegistrationError>>;

/// One write of the registry file, with the API request waiting on it.
pub struct PersistJob {
    content: Vec<u8>,
    reply: Option<Reply>,
}

/// The registry with what the loop needs to run it: where check results
/// go, and the tasks that run checks and persist registrations.
pub struct Registrar {
    registry: Registry,
    results_tx: mpsc::Sender<CheckResult>,
    dependency: DependencyLookup,
    runners: CancellationToken,
    persist_tx: mpsc::UnboundedSender<PersistJob>,
    /// Check runs by kind and status.
    pub counters: Arc<crate::checks::counters::CheckCounters>,
}

impl Registrar {
    pub fn new(
        results_tx: mpsc::Sender<CheckResult>,
        dependency: DependencyLookup,
        runners: CancellationToken,
        persist_tx: mpsc::UnboundedSender<PersistJob>,
    ) -> Self {
        Self {
            registry: Registry::default(),
            results_tx,
            dependency,
            runners,
            persist_tx,
            counters: Arc::default(),
        }
    }

    fn spawner(&self) -> impl FnMut(Arc<CheckDefinition>) -> Option<CancellationToken> + use<> {
        let results_tx = self.results_tx.clone();
        let dependency = self.dependency.clone();
        let runners = self.runners.clone();
        move |definition: Arc<CheckDefinition>| {
            if matches!(definition.kind, CheckKind::Ttl { .. }) {
                return None;
            }
            let token = runners.child_token();
            checks::spawn_check(
                definition,
                results_tx.clone(),
                dependency.clone(),
                token.clone(),
            );
            Some(token)
        }
    }

    /// Loads the services and checks of the configuration.
    pub fn load_config(
        &mut self,
        services: Vec<ServiceDefinition>,
        checks: Vec<CheckDefinition>,
    ) -> Result<(), RegistryError> {
        let mut spawn = self.spawner();
        self.registry
            .replace_config(services, checks, &mut spawn, Instant::now())
    }

    /// Restores API registrations saved in the data dir. A registration that
    /// no longer parses is skipped with a warning, not fatal. One with an
    /// exec check is refused (logged as an error) unless `allow_scripts`
    /// (`enable_script_checks`): the option may have been turned off since.
    pub fn restore(&mut self, saved: &Value, allow_scripts: bool) {
        let mut spawn = self.spawner();
        let now = Instant::now();
        let refused = |definition: &CheckDefinition, service: Option<&str>| {
            let refuse = !allow_scripts && definition.runs_a_program();
            if refuse {
                tracing::error!(
                    check = %definition.id,
                    service = service.unwrap_or_default(),
                    "refused a saved registration with an exec check: enable_script_checks is off; it stays unregistered"
                );
            }
            refuse
        };
        for raw in saved["services"].as_array().into_iter().flatten() {
            match ServiceDefinition::parse(raw, "") {
                Ok(definition)
                    if definition
                        .checks
                        .iter()
                        .any(|check| refused(check, Some(&definition.id))) => {}
                Ok(definition) => {
                    if let Err(error) = self.registry.register_service(
                        definition,
                        Source::Api,
                        Some(raw.clone()),
                        &mut spawn,
                        now,
                    ) {
                        tracing::warn!(%error, "skipped a saved service");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "skipped a saved service that no longer parses")
                }
            }
        }
        for raw in saved["checks"].as_array().into_iter().flatten() {
            let service_id = raw.get("serviceid").and_then(Value::as_str);
            let default_id = raw.get("name").and_then(Value::as_str).unwrap_or_default();
            match CheckDefinition::parse(raw, "", service_id, default_id) {
                Ok(definition) if refused(&definition, None) => {}
                Ok(definition) => {
                    if let Err(error) = self.registry.register_check(
                        definition,
                        Source::Api,
                        Some(raw.clone()),
                        &mut spawn,
                        now,
                    ) {
                        tracing::warn!(%error, "skipped a saved check");
                    }
                }
                Err(error) => tracing::warn!(%error, "skipped a saved check that no longer parses"),
            }
        }
        if let Some(reason) = saved["node_maintenance"].as_str() {
            self.registry.set_node_maintenance(Some(reason.to_string()));
        }
        for (id, reason) in saved["service_maintenance"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let _ = self
                .registry
                .set_service_maintenance(id, reason.as_str().map(str::to_string));
        }
    }

    /// Applies a request; returns the change and the answer, which the
    /// loop gives once the change is published ([`Registrar::answer`]):
    /// when it changes what is persisted, once it is durable too.
    pub(super) fn handle(&mut self, request: RegistryRequest, reply: Reply) -> (Change, Answer) {
        let now = Instant::now();
        let mut spawn = self.spawner();
        let persists = !matches!(request, RegistryRequest::TtlUpdate { .. });
        let result = match request {
            RegistryRequest::RegisterService { definition, raw } => self
                .registry
                .register_service(definition, Source::Api, raw, &mut spawn, now)
                .map(|()| Change::Status),
            RegistryRequest::DeregisterService { id } => self
                .registry
                .deregister_service(&id)
                .map(|()| Change::Status),
            RegistryRequest::RegisterCheck { definition, raw } => self
                .registry
                .register_check(definition, Source::Api, raw, &mut spawn, now)
                .map(|()| Change::Status),
            RegistryRequest::DeregisterCheck { id } => {
                self.registry.deregister_check(&id).map(|()| Change::Status)
            }
            RegistryRequest::TtlUpdate { id, status, output } => {
                self.registry.ttl_update(&id, status, output, now)
            }
            RegistryRequest::NodeMaintenance { reason } => {
                self.registry.set_node_maintenance(reason);
                Ok(Change::Status)
            }
            RegistryRequest::ServiceMaintenance { id, reason } => self
                .registry
                .set_service_maintenance(&id, reason)
                .map(|()| Change::Status),
        };
        match result {
            Ok(change) if persists => (change, Answer::Persist(reply)),
            Ok(change) => (change, Answer::send(reply, Ok(()))),
            Err(error) => (Change::None, Answer::send(reply, Err(error.into()))),
        }
    }

    /// Gives an answer held back by the loop (see [`Answer`]).
    pub(super) fn answer(&self, answer: Answer) {
        match answer {
            Answer::Send(send) => send(),
            Answer::Persist(reply) => self.persist(Some(reply)),
        }
    }

    pub fn apply_result(&mut self, result: CheckResult) -> Change {
        if let Some(check) = self
            .registry
            .checks()
            .find(|check| check.definition.id == result.check_id)
        {
            self.counters.run(
                &check.definition.kind,
                result.result.status,
                result.duration,
            );
        }
        self.registry.apply_result(result, Instant::now())
    }

    /// TTL expiry and deregister-after; removed services are persisted.
    pub fn housekeeping(&mut self) -> Change {
        let (change, removed) = self.registry.tick(Instant::now());
        if !removed.is_empty() {
            tracing::info!(services = ?removed, "deregistered services critical for longer than deregister_critical_service_after");
            self.persist(None);
        }
        change
    }

    pub fn records(&self) -> (Vec<ServiceRecord>, Vec<CheckRecord>) {
        self.registry.records()
    }

    /// Every check with its full output, for the agent's own API.
    pub fn check_details(&self) -> Vec<CheckDetail> {
        let services: std::collections::HashMap<&str, &ServiceDefinition> = self
            .registry
            .services()
            .map(|s| (s.id.as_str(), s))
            .collect();
        self.registry
            .checks()
            .map(|check| {
                let definition = &check.definition;
                let service = definition
                    .service_id
                    .as_deref()
                    .and_then(|id| services.get(id));
                let mut record = check.state.to_record();
                record.output = check.state.output().to_string();
                let has_runner = !matches!(definition.kind, CheckKind::Ttl { .. });
                CheckDetail {
                    record,
                    service_id: definition.service_id.clone(),
                    service_name: service.map(|s| s.name.clone()).unwrap_or_default(),
                    service_tags: service.map(|s| s.tags.clone()).unwrap_or_default(),
                    interval: has_runner.then_some(definition.interval),
                    timeout: has_runner.then_some(definition.timeout),
                    last_run: check.state.last_run().map(wall_time),
                    last_duration: check.state.last_duration(),
                }
            })
            .collect()
    }

    fn persist(&self, reply: Option<Reply>) {
        let content =
            serde_json::to_vec_pretty(&self.registry.persisted()).expect("JSON values serialize");
        if let Err(error) = self.persist_tx.send(PersistJob { content, reply })
            && let Some(reply) = error.0.reply
        {
            let _ = reply.send(Err(RegistrationError::Persist(
                "the agent is shutting down".into(),
            )));
        }
    }
}

/// Writes registry files in order, off the core loop, and answers the
/// requests waiting on them.
pub async fn persist_loop(
    mut jobs_rx: mpsc::UnboundedReceiver<PersistJob>,
    data_dir: Arc<DataDirGuard>,
) {
    while let Some(mut job) = jobs_rx.recv().await {
        // Coalesce: only the newest content matters, but every waiter is
        // answered.
        let mut replies: Vec<Reply> = job.reply.take().into_iter().collect();
        while let Ok(mut next) = jobs_rx.try_recv() {
            replies.extend(next.reply.take());
            job.content = next.content;
        }
        let dir = data_dir.clone();
        let content = job.content;
        let result = tokio::task::spawn_blocking(move || {
            write_atomic(dir.path(), REGISTRATIONS_FILE, &content)
        })
        .await
        .map_err(|error| error.to_string())
        .and_then(|written| written.map_err(|error| error.to_string()));
        if let Err(error) = &result {
            tracing::error!(%error, "could not persist the registrations");
        }
        for reply in replies {
            let _ = reply.send(result.clone().map_err(RegistrationError::Persist));
        }
    }
}

/// Reads the saved registrations, if any.
pub fn read_saved(data_dir: &DataDirGuard) -> Option<Value> {
    let path = data_dir.path().join(REGISTRATIONS_FILE);
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "saved registrations are unreadable; starting without them");
            None
        }
    }
}

/// Converts a monotonic instant of the past into wall-clock time.
pub fn wall_time(instant: Instant) -> SystemTime {
    SystemTime::now() - instant.elapsed()
}
