use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_protocol::record::{CheckStatus, GOSSIPED_OUTPUT};

use super::CheckState;
use crate::checks::{CheckDefinition, OUTPUT_LIMIT, ProbeResult};

use CheckStatus::{Critical, Passing, Warning};

fn definition(extra: serde_json::Value) -> Arc<CheckDefinition> {
    let mut value = json!({"interval": "1s"});
    let object = value.as_object_mut().unwrap();
    object.extend(extra.as_object().unwrap().clone());
    if !object.contains_key("ttl") {
        object.insert("tcp".into(), json!("a:1"));
    }
    Arc::new(CheckDefinition::parse(&value, "Check", Some("web"), "service:web").unwrap())
}

fn result(status: CheckStatus) -> ProbeResult {
    ProbeResult::new(status, status.as_str())
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn starts_critical_and_follows_results_without_damping() {
    let start = Instant::now();
    let mut state = CheckState::new(definition(json!({})), start);
    assert_eq!(state.status(), Critical);
    assert_eq!(state.critical_since(), Some(start));
    assert!(state.record(result(Passing), MS, start));
    assert_eq!(state.status(), Passing);
    assert_eq!(state.critical_since(), None);
    assert!(state.record(result(Warning), MS, start));
    assert!(state.record(result(Critical), MS, start));
    assert_eq!(state.last_duration(), Some(MS));
    assert_eq!(state.last_run(), Some(start));
}

#[test]
fn success_before_passing_damps_recovery() {
    let now = Instant::now();
    let mut state = CheckState::new(definition(json!({"successbeforepassing": 3})), now);
    assert!(!state.record(result(Passing), MS, now));
    assert!(!state.record(result(Passing), MS, now));
    assert_eq!(state.status(), Critical);
    assert_eq!(state.output(), "passing", "output is kept while damped");
    assert!(state.record(result(Passing), MS, now));
    assert_eq!(state.status(), Passing);

    // A failure resets the streak.
    let mut state = CheckState::new(definition(json!({"successbeforepassing": 2})), now);
    state.record(result(Passing), MS, now);
    state.record(result(Critical), MS, now);
    assert!(!state.record(result(Passing), MS, now));
    assert!(state.record(result(Passing), MS, now));
}

#[test]
fn failures_before_warning_then_critical() {
    let now = Instant::now();
    let definition = definition(json!({
        "status": "passing", "failuresbeforewarning": 1, "failuresbeforecritical": 3
    }));
    let mut state = CheckState::new(definition, now);
    assert!(state.record(result(Critical), MS, now));
    assert_eq!(state.status(), Warning);
    assert!(!state.record(result(Critical), MS, now));
    assert_eq!(state.status(), Warning);
    assert!(state.record(result(Critical), MS, now));
    assert_eq!(state.status(), Critical);
    // Further failures keep it critical.
    assert!(!state.record(result(Critical), MS, now));
    // One success ends the streak and (no success_before_passing) recovers.
    assert!(state.record(result(Passing), MS, now));
    assert!(state.record(result(Critical), MS, now));
    assert_eq!(state.status(), Warning, "a new streak starts over");
}

#[test]
fn failures_before_critical_alone_holds_the_status() {
    let now = Instant::now();
    let definition = definition(json!({"status": "passing", "failuresbeforecritical": 2}));
    let mut state = CheckState::new(definition, now);
    assert!(!state.record(result(Critical), MS, now));
    assert_eq!(
        state.status(),
        Passing,
        "Consul: warning defaults to critical's count"
    );
    assert!(state.record(result(Critical), MS, now));
    assert_eq!(state.status(), Critical);
}

#[test]
fn a_failure_never_improves_critical_to_warning() {
    let now = Instant::now();
    let definition = definition(json!({"failuresbeforewarning": 1, "failuresbeforecritical": 3}));
    let mut state = CheckState::new(definition, now);
    assert!(!state.record(result(Critical), MS, now));
    assert_eq!(state.status(), Critical);
}

#[test]
fn output_only_changes_are_not_status_changes() {
    let now = Instant::now();
    let mut state = CheckState::new(definition(json!({"status": "passing"})), now);
    assert!(!state.record(ProbeResult::passing("took 3ms"), MS, now));
    assert!(!state.record(ProbeResult::passing("took 4ms"), MS, now));
    assert_eq!(state.output(), "took 4ms");
}

#[test]
fn ttl_expires_once_and_reports_restart_it() {
    let start = Instant::now();
    let mut state = CheckState::new(
        definition(json!({"ttl": "10s", "status": "passing"})),
        start,
    );
    assert_eq!(state.ttl_deadline(), Some(start + Duration::from_secs(10)));
    assert!(!state.ttl_expired(start + Duration::from_secs(9)));

    assert!(!state.ttl_update(Passing, Some("ok".into()), start + Duration::from_secs(9)));
    assert_eq!(state.output(), "ok");
    let late = start + Duration::from_secs(18);
    assert!(!state.ttl_expired(late), "the update restarted the TTL");

    let expiry = start + Duration::from_secs(19);
    assert!(state.ttl_expired(expiry));
    assert!(state.expire_ttl(expiry));
    assert_eq!(state.status(), Critical);
    assert!(
        state.output().starts_with("TTL expired"),
        "{}",
        state.output()
    );
    assert_eq!(state.critical_since(), Some(expiry));
    assert!(
        !state.ttl_expired(expiry + Duration::from_secs(60)),
        "applied once"
    );
    assert!(!state.expire_ttl(expiry + Duration::from_secs(60)));

    assert!(state.ttl_update(Warning, None, expiry + MS));
    assert_eq!(state.status(), Warning);
    assert_eq!(
        state.output(),
        "",
        "no note clears the output, as in Consul"
    );
    assert!(state.ttl_expired(expiry + MS + Duration::from_secs(10)));
}

#[test]
fn expired_ttl_with_no_prior_output_says_so_plainly() {
    let start = Instant::now();
    let mut state = CheckState::new(definition(json!({"ttl": "1s"})), start);
    assert!(
        !state.expire_ttl(start + Duration::from_secs(1)),
        "already critical"
    );
    assert_eq!(state.output(), "TTL expired");
}

#[test]
fn non_ttl_checks_never_expire() {
    let now = Instant::now();
    let state = CheckState::new(definition(json!({})), now);
    assert!(!state.ttl_expired(now + Duration::from_secs(3600)));
}

#[test]
fn deregister_after_a_continuous_critical_spell() {
    let start = Instant::now();
    let definition = definition(json!({"deregistercriticalserviceafter": "1m"}));
    let mut state = CheckState::new(definition, start);
    let minute = Duration::from_secs(60);
    assert!(
        !state.should_deregister(start + minute),
        "not longer than 1m yet"
    );
    assert!(state.should_deregister(start + minute + MS));

    // A passing result breaks the spell; the clock starts over.
    state.record(result(Passing), MS, start + Duration::from_secs(30));
    assert!(!state.should_deregister(start + 2 * minute));
    let again = start + Duration::from_secs(100);
    state.record(result(Critical), MS, again);
    assert!(!state.should_deregister(again + minute));
    assert!(state.should_deregister(again + minute + MS));

    // Warning is not critical: no deregistration.
    state.record(result(Warning), MS, again + 2 * minute);
    assert!(!state.should_deregister(again + 10 * minute));
}

#[test]
fn without_deregister_after_nothing_is_deregistered() {
    let start = Instant::now();
    let state = CheckState::new(definition(json!({})), start);
    assert!(!state.should_deregister(start + Duration::from_secs(86_400)));
}

#[test]
fn records_are_gossip_sized() {
    let now = Instant::now();
    let mut state = CheckState::new(
        definition(json!({"name": "tcp", "notes": "n", "critical": false})),
        now,
    );
    // Multi-byte chars straddle both limits.
    state.record(ProbeResult::passing("é".repeat(OUTPUT_LIMIT)), MS, now);
    assert_eq!(state.output().len(), OUTPUT_LIMIT);
    let record = state.to_record();
    assert!(record.output.len() <= GOSSIPED_OUTPUT);
    assert!(record.output.len() >= GOSSIPED_OUTPUT - 1);
    assert_eq!(record.id, "service:web");
    assert_eq!(record.name, "tcp");
    assert_eq!(record.kind, "tcp");
    assert_eq!(record.status, Passing);
    assert!(!record.critical);
    assert_eq!(record.notes, "n");
}
