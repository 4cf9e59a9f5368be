//! [`CheckState`]: how one check's status moves. Pure: no I/O, and time is
//! always an argument (`tokio::time::Instant::now().into_std()` works too,
//! so tests with a paused tokio clock stay deterministic).

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_protocol::record::{CheckRecord, CheckStatus, GOSSIPED_OUTPUT};

use super::definition::{CheckDefinition, CheckKind};
use super::{OUTPUT_LIMIT, ProbeResult, prefix_len, truncate};

/// The live state of one check on this agent.
#[derive(Clone, Debug)]
pub struct CheckState {
    definition: Arc<CheckDefinition>,
    status: CheckStatus,
    output: String,
    /// Consecutive passing-or-warning results (Consul counts warning as a
    /// success for damping).
    successes: u32,
    /// Consecutive critical results.
    failures: u32,
    last_run: Option<Instant>,
    last_duration: Option<Duration>,
    critical_since: Option<Instant>,
    /// TTL checks: when the status expires unless refreshed. `None` once
    /// expired, so expiry is applied (and reported) once.
    ttl_deadline: Option<Instant>,
}

impl CheckState {
    /// A check just registered at `now`, in its initial status. A TTL
    /// check's first TTL starts now.
    pub fn new(definition: Arc<CheckDefinition>, now: Instant) -> Self {
        let status = definition.initial_status;
        let ttl_deadline = match definition.kind {
            CheckKind::Ttl { ttl } => Some(now + ttl),
            _ => None,
        };
        Self {
            definition,
            status,
            output: String::new(),
            successes: 0,
            failures: 0,
            last_run: None,
            last_duration: None,
            critical_since: (status == CheckStatus::Critical).then_some(now),
            ttl_deadline,
        }
    }

    pub fn definition(&self) -> &Arc<CheckDefinition> {
        &self.definition
    }

    /// The damped status: what the cluster sees.
    pub fn status(&self) -> CheckStatus {
        self.status
    }

    /// Output of the last run (or TTL note), at most 4 KiB.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// When the last result was recorded.
    pub fn last_run(&self) -> Option<Instant> {
        self.last_run
    }

    /// How long the last probe took.
    pub fn last_duration(&self) -> Option<Duration> {
        self.last_duration
    }

    /// Since when the status has been critical without a break.
    pub fn critical_since(&self) -> Option<Instant> {
        self.critical_since
    }

    /// Records one probe result that took `duration`, finished at `now`.
    ///
    /// Returns true when the *status* changed (gossip it); a new output
    /// alone returns false. The output is always kept, even while damping
    /// holds the status, so `/health/detailed` shows what the probe saw.
    pub fn record(&mut self, result: ProbeResult, duration: Duration, now: Instant) -> bool {
        self.last_run = Some(now);
        self.last_duration = Some(duration);
        self.apply(result, now)
    }

    /// A TTL check's report (`/v1/agent/check/pass|warn|fail|update`):
    /// restarts the TTL and applies `status` with the same damping as a
    /// probe result. The note becomes the output; no note clears it, as in
    /// Consul. Returns true when the status changed.
    pub fn ttl_update(&mut self, status: CheckStatus, note: Option<String>, now: Instant) -> bool {
        if let CheckKind::Ttl { ttl } = self.definition.kind {
            self.ttl_deadline = Some(now + ttl);
        }
        self.last_run = Some(now);
        self.apply(ProbeResult::new(status, note.unwrap_or_default()), now)
    }

    /// When the TTL runs out if no report comes; `None` for other kinds and
    /// once expired.
    pub fn ttl_deadline(&self) -> Option<Instant> {
        self.ttl_deadline
    }

    /// Whether the TTL has run out and the expiry is not yet applied.
    pub fn ttl_expired(&self, now: Instant) -> bool {
        self.ttl_deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Applies an expired TTL: critical at once (no damping: the service
    /// stopped reporting, as in Consul), output "TTL expired". Does nothing
    /// unless [`Self::ttl_expired`]. Returns true when the status changed.
    pub fn expire_ttl(&mut self, now: Instant) -> bool {
        if !self.ttl_expired(now) {
            return false;
        }
        self.ttl_deadline = None;
        self.output = if self.output.is_empty() {
            "TTL expired".to_string()
        } else {
            format!(
                "TTL expired (last output before timeout follows): {}",
                self.output
            )
        };
        truncate(&mut self.output, OUTPUT_LIMIT);
        self.successes = 0;
        self.set_status(CheckStatus::Critical, now)
    }

    /// Whether the check has been critical, without a break, for longer
    /// than its `deregister_critical_service_after`.
    pub fn should_deregister(&self, now: Instant) -> bool {
        match (
            self.definition.deregister_critical_service_after,
            self.critical_since,
        ) {
            (Some(after), Some(since)) => now.saturating_duration_since(since) > after,
            _ => false,
        }
    }

    /// The check as gossiped: output cut to [`GOSSIPED_OUTPUT`] bytes.
    pub fn to_record(&self) -> CheckRecord {
        let definition = &self.definition;
        CheckRecord {
            id: definition.id.clone(),
            name: definition.name.clone(),
            kind: definition.kind_name().to_string(),
            status: self.status,
            critical: definition.critical,
            notes: definition.notes.clone(),
            output: self.output[..prefix_len(&self.output, GOSSIPED_OUTPUT)].to_string(),
        }
    }

    /// Consul's flap damping (its `StatusHandler`): a status only takes
    /// effect after enough consecutive results agree.
    fn apply(&mut self, result: ProbeResult, now: Instant) -> bool {
        self.output = result.output;
        truncate(&mut self.output, OUTPUT_LIMIT);
        let definition = &self.definition;
        let target = match result.status {
            CheckStatus::Passing | CheckStatus::Warning => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes >= definition.success_before_passing).then_some(result.status)
            }
            CheckStatus::Critical => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures >= definition.failures_before_critical {
                    Some(CheckStatus::Critical)
                } else if self.failures >= definition.failures_before_warning {
                    // Unlike Consul, a failure never improves the status:
                    // critical stays critical until successes lift it.
                    Some(self.status.max(CheckStatus::Warning))
                } else {
                    None
                }
            }
        };
        match target {
            Some(status) => self.set_status(status, now),
            None => false,
        }
    }

    fn set_status(&mut self, status: CheckStatus, now: Instant) -> bool {
        if status == self.status {
            return false;
        }
        self.status = status;
        self.critical_since = (status == CheckStatus::Critical).then_some(now);
        true
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
