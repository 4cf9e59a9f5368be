//! Check lines: a local check whose status changed, with its ID, its
//! service and the start of its output. Turning critical is a `WARN`,
//! warning a `WARN` too (something degraded), recovering to passing an
//! `INFO`.

use std::collections::HashMap;

use shoal_protocol::CheckStatus;
use tracing::Level;

use crate::snapshot::CheckDetail;

/// How much of a check's output a line carries.
pub const OUTPUT_EXCERPT: usize = 200;

/// One check line to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckEvent {
    pub check_id: String,
    pub service: String,
    pub from: CheckStatus,
    pub to: CheckStatus,
    pub output: String,
}

impl CheckEvent {
    pub fn level(&self) -> Level {
        match self.to {
            CheckStatus::Passing => Level::INFO,
            CheckStatus::Warning | CheckStatus::Critical => Level::WARN,
        }
    }
}

/// The local checks' statuses as last logged.
#[derive(Default)]
pub struct CheckDiff {
    known: HashMap<String, CheckStatus>,
}

impl CheckDiff {
    /// Status changes since the last call. A check seen for the first
    /// time has no line: it starts at its initial status (critical unless
    /// its definition says otherwise, as in Consul) and is logged once its
    /// status moves.
    pub fn observe(&mut self, checks: &[CheckDetail]) -> Vec<CheckEvent> {
        let mut events = Vec::new();
        let mut current = HashMap::with_capacity(checks.len());
        for check in checks {
            let id = &check.record.id;
            let to = check.record.status;
            if let Some(&from) = self.known.get(id)
                && from != to
            {
                events.push(CheckEvent {
                    check_id: id.clone(),
                    service: check.service_id.clone().unwrap_or_default(),
                    from,
                    to,
                    output: excerpt(&check.record.output),
                });
            }
            current.insert(id.clone(), to);
        }
        self.known = current;
        events
    }
}

/// The first [`OUTPUT_EXCERPT`] bytes of `output` (on a char boundary),
/// on one line.
fn excerpt(output: &str) -> String {
    let trimmed = output.trim();
    let mut end = trimmed.len().min(OUTPUT_EXCERPT);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let mut text = trimmed[..end].replace(['\n', '\r'], " ");
    if end < trimmed.len() {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::record::CheckRecord;

    fn check(id: &str, status: CheckStatus, output: &str) -> CheckDetail {
        CheckDetail {
            record: CheckRecord {
                id: id.into(),
                name: id.into(),
                kind: "http".into(),
                status,
                critical: true,
                notes: String::new(),
                output: output.into(),
            },
            service_id: Some("web".into()),
            service_name: "web".into(),
            service_tags: vec![],
            interval: None,
            timeout: None,
            last_run: None,
            last_duration: None,
        }
    }

    #[test]
    fn a_status_change_is_one_line_a_new_check_none() {
        let mut diff = CheckDiff::default();
        assert!(
            diff.observe(&[check("c", CheckStatus::Critical, "")])
                .is_empty()
        );
        assert!(
            diff.observe(&[check("c", CheckStatus::Critical, "other")])
                .is_empty()
        );
        let up = diff.observe(&[check("c", CheckStatus::Passing, "HTTP GET: 200 OK\nbody")]);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].level(), Level::INFO);
        assert_eq!(up[0].output, "HTTP GET: 200 OK body");
        let long = "x".repeat(1000);
        let down = diff.observe(&[check("c", CheckStatus::Critical, &long)]);
        assert_eq!(down[0].level(), Level::WARN);
        assert_eq!(down[0].from, CheckStatus::Passing);
        assert!(down[0].output.len() <= OUTPUT_EXCERPT + '…'.len_utf8());
    }
}
