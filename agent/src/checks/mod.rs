//! Health checks: what a check is, how its status moves, and the probes.
//!
//! - [`definition`]: [`CheckDefinition`], parsed from Consul-style JSON (the
//!   HTTP API) or TOML (config files), both normalized by
//!   [`crate::registry::keys::normalize`] first.
//! - [`state`]: [`CheckState`], the pure status state machine: flap damping,
//!   TTL expiry, deregister-after. No I/O; time is an argument.
//! - [`runner`]: [`spawn_check`], one task per check that probes on its
//!   interval and sends [`CheckResult`]s, never blocking.
//! - [`http`], [`tcp`], [`exec`], [`system`]: one probe per kind.
//!
//! The owner of the checks (the local registry task) keeps one
//! [`CheckState`] per check, feeds it the results from the runners, and
//! drives TTL expiry and deregistration on its own timer.

pub mod counters;
pub mod definition;
pub mod exec;
mod fields;
pub mod http;
mod kinds;
pub mod runner;
pub mod state;
pub mod system;
pub mod tcp;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

pub use shoal_protocol::record::CheckStatus;

pub use definition::{CheckDefinition, CheckKind, SystemCheck, Thresholds};
pub use runner::{probe, run_check, spawn_check};
pub use state::CheckState;

/// Longest output kept for one check run (Consul's default `OutputMaxSize`).
pub const OUTPUT_LIMIT: usize = 4096;

/// How many passing instances of a service the cluster has right now.
///
/// Dependency checks call it once per run, on the runner's task: it must be
/// cheap and must not block (read a published snapshot, never ask the
/// core loop and wait).
pub type DependencyLookup = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// The outcome of one probe, before flap damping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub status: CheckStatus,
    /// What the probe saw, at most [`OUTPUT_LIMIT`] bytes.
    pub output: String,
}

impl ProbeResult {
    /// A result with its output cut to [`OUTPUT_LIMIT`].
    pub fn new(status: CheckStatus, output: impl Into<String>) -> Self {
        let mut output = output.into();
        truncate(&mut output, OUTPUT_LIMIT);
        Self { status, output }
    }

    pub fn passing(output: impl Into<String>) -> Self {
        Self::new(CheckStatus::Passing, output)
    }

    pub fn warning(output: impl Into<String>) -> Self {
        Self::new(CheckStatus::Warning, output)
    }

    pub fn critical(output: impl Into<String>) -> Self {
        Self::new(CheckStatus::Critical, output)
    }
}

/// One run of one check, as a runner reports it to the owner of the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub check_id: String,
    pub result: ProbeResult,
    /// How long the probe took (up to the check's timeout).
    pub duration: Duration,
}

/// Cuts `text` to at most `max` bytes, on a char boundary.
pub(crate) fn truncate(text: &mut String, max: usize) {
    let end = prefix_len(text, max);
    text.truncate(end);
}

/// The longest prefix of `text` of at most `max` bytes ending on a char
/// boundary. (`str::floor_char_boundary` is newer than our rust-version.)
pub(crate) fn prefix_len(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// An error and its sources on one line: hyper's and io's top-level
/// messages alone ("client error (Connect)") do not say what went wrong.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_stays_on_char_boundaries() {
        let mut text = "héllo".to_string();
        truncate(&mut text, 2);
        assert_eq!(text, "h");
        let mut text = "héllo".to_string();
        truncate(&mut text, 3);
        assert_eq!(text, "hé");
        let mut text = "abc".to_string();
        truncate(&mut text, 10);
        assert_eq!(text, "abc");
    }

    #[test]
    fn probe_results_are_bounded() {
        let result = ProbeResult::passing("x".repeat(OUTPUT_LIMIT + 10));
        assert_eq!(result.output.len(), OUTPUT_LIMIT);
    }
}
