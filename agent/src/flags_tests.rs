//! Unit tests of [`super`]: decisions, monotone rollouts, the schema.

use super::*;
use serde_json::json;

fn flag(body: Value) -> FlagDefinition {
    FlagDefinition::parse(&body).unwrap()
}

fn users() -> Vec<String> {
    (0..1000).map(|i| format!("user-{i}")).collect()
}

fn context<'a>(user: &'a str, tags: &'a BTreeMap<String, String>) -> Context<'a> {
    Context {
        user: Some(user),
        services: vec!["web"],
        node_tags: tags,
    }
}

const PINNED: f64 = 23.63;

#[test]
fn buckets_are_stable_and_spread() {
    // Pinned: a change of hash would reshuffle every rollout in the field.
    assert_eq!(bucket("checkout", "42"), PINNED);
    assert_ne!(bucket("checkout", "42"), bucket("search", "42"));
    assert_ne!(bucket("ab", "c"), bucket("a", "bc"));
    let below_half = users()
        .iter()
        .filter(|user| bucket("spread", user) < 50.0)
        .count();
    assert!((400..600).contains(&below_half), "{below_half}");
    for user in users() {
        let b = bucket("spread", &user);
        assert!((0.0..100.0).contains(&b));
    }
}

#[test]
fn rollout_is_monotone_in_the_percentage() {
    let tags = BTreeMap::new();
    let users = users();
    let mut previous: Vec<&String> = Vec::new();
    for percentage in [0, 10, 20, 30, 45, 60, 75, 90, 100] {
        let definition = flag(json!({"enabled": true, "rollout_percentage": percentage}));
        let on: Vec<&String> = users
            .iter()
            .filter(|user| decide("monotone", &definition, &context(user, &tags)).enabled)
            .collect();
        assert!(
            previous.iter().all(|user| on.contains(user)),
            "{percentage}% dropped a user"
        );
        let expected = percentage as f64 * 10.0;
        assert!(
            (on.len() as f64 - expected).abs() <= 60.0,
            "{percentage}%: {} users",
            on.len()
        );
        previous = on;
    }
    assert_eq!(previous.len(), 1000);
}

#[test]
fn decisions_are_deterministic_with_reasons() {
    let tags = BTreeMap::new();
    let definition = flag(json!({"enabled": true, "rollout_percentage": 25}));
    let first = decide("det", &definition, &context("u1", &tags));
    let second = decide("det", &definition.clone(), &context("u1", &tags));
    assert_eq!(first, second);
    assert!(
        first.reason.starts_with("rollout 25% (bucket "),
        "{}",
        first.reason
    );
    let half = flag(json!({"enabled": true, "rollout_percentage": 12.5}));
    assert!(
        decide("det", &half, &context("u1", &tags))
            .reason
            .starts_with("rollout 12.5% ")
    );
}

#[test]
fn deny_beats_allow_beats_rollout() {
    let tags = BTreeMap::new();
    let definition = flag(json!({
        "enabled": true, "rollout_percentage": 0,
        "allow_users": ["alice", "mallory"], "deny_users": ["mallory"],
        "services": ["payments"],
    }));
    let alice = decide("f", &definition, &context("alice", &tags));
    assert_eq!(
        (alice.enabled, alice.reason.as_str()),
        (true, "allowed user")
    );
    let mallory = decide("f", &definition, &context("mallory", &tags));
    assert_eq!(
        (mallory.enabled, mallory.reason.as_str()),
        (false, "denied user")
    );
    let bob = decide("f", &definition, &context("bob", &tags));
    assert_eq!(
        (bob.enabled, bob.reason.as_str()),
        (false, "service not targeted")
    );

    let disabled =
        flag(json!({"enabled": false, "rollout_percentage": 100, "allow_users": ["alice"]}));
    let alice = decide("f", &disabled, &context("alice", &tags));
    assert_eq!(
        (alice.enabled, alice.reason.as_str()),
        (false, "flag disabled")
    );
}

#[test]
fn targeting_by_service_environment_and_tags() {
    let definition = flag(json!({
        "enabled": true, "rollout_percentage": 100,
        "services": ["web"], "environments": ["staging"],
        "node_tags": {"zone": "a"},
    }));
    let mut tags = BTreeMap::new();
    let decision = decide("t", &definition, &context("u", &tags));
    assert!(
        decision.reason.contains("environment"),
        "{}",
        decision.reason
    );
    tags.insert("env".to_string(), "prod".to_string());
    let decision = decide("t", &definition, &context("u", &tags));
    assert_eq!(decision.reason, "environment `prod` not targeted");
    tags.insert("env".to_string(), "staging".to_string());
    let decision = decide("t", &definition, &context("u", &tags));
    assert!(
        !decision.enabled && decision.reason.contains("zone"),
        "{}",
        decision.reason
    );
    tags.insert("zone".to_string(), "a".to_string());
    assert!(decide("t", &definition, &context("u", &tags)).enabled);
    let other_service = Context {
        services: vec!["api"],
        ..context("u", &tags)
    };
    assert_eq!(
        decide("t", &definition, &other_service).reason,
        "service not targeted"
    );
}

#[test]
fn without_a_user_only_full_or_empty_rollouts_decide() {
    let tags = BTreeMap::new();
    let no_user = Context {
        user: None,
        services: Vec::new(),
        node_tags: &tags,
    };
    let full = flag(json!({"enabled": true, "rollout_percentage": 100}));
    assert!(decide("n", &full, &no_user).enabled);
    let partial = flag(json!({"enabled": true, "rollout_percentage": 30}));
    let decision = decide("n", &partial, &no_user);
    assert!(!decision.enabled && decision.reason.contains("?user="));
}

#[test]
fn schema_errors_name_the_field() {
    let cases = [
        (json!({"rollout_percentage": 5}), "enabled"),
        (
            json!({"enabled": "yes", "rollout_percentage": 5}),
            "enabled",
        ),
        (json!({"enabled": true}), "rollout_percentage"),
        (
            json!({"enabled": true, "rollout_percentage": 101}),
            "rollout_percentage",
        ),
        (
            json!({"enabled": true, "rollout_percentage": -1}),
            "rollout_percentage",
        ),
        (
            json!({"enabled": true, "rollout_percentage": "5"}),
            "rollout_percentage",
        ),
        (
            json!({"enabled": true, "rollout_percentage": 5, "bogus": 1}),
            "bogus",
        ),
        (
            json!({"enabled": true, "rollout_percentage": 5, "allow_users": "a"}),
            "allow_users",
        ),
        (
            json!({"enabled": true, "rollout_percentage": 5, "deny_users": [1]}),
            "deny_users[0]",
        ),
        (
            json!({"enabled": true, "rollout_percentage": 5, "node_tags": {"z": 1}}),
            "node_tags.z",
        ),
        (
            json!({"enabled": true, "rollout_percentage": 5, "description": 3}),
            "description",
        ),
        (json!([1]), "(body)"),
    ];
    for (body, field) in cases {
        let error = FlagDefinition::parse(&body).unwrap_err();
        assert_eq!(error.field, field, "{body}: {error}");
        assert!(error.to_string().contains(&format!("`{field}`")));
    }
    assert!(validate_key("new-checkout_v2.1").is_ok());
    assert_eq!(validate_key("a/b").unwrap_err().field, "key");
    assert!(validate_key("").is_err());
}

#[test]
fn stored_values_round_trip_and_bad_ones_decide_off() {
    let tags = BTreeMap::new();
    let definition = flag(json!({"enabled": true, "rollout_percentage": 100, "description": "d"}));
    assert_eq!(
        FlagDefinition::from_bytes(&definition.to_bytes()).unwrap(),
        definition
    );
    let bytes = flag(json!({"enabled": true, "rollout_percentage": 25})).to_bytes();
    assert!(
        String::from_utf8(bytes)
            .unwrap()
            .contains("\"rollout_percentage\":25,")
    );
    let half = flag(json!({"enabled": true, "rollout_percentage": 12.5}));
    assert_eq!(FlagDefinition::from_bytes(&half.to_bytes()).unwrap(), half);
    for bad in [&b"not json"[..], br#"{"enabled": 1}"#, b""] {
        let (decision, parsed) = decide_stored("bad", bad, &context("u", &tags));
        assert!(!decision.enabled);
        assert!(
            decision.reason.starts_with("invalid flag definition"),
            "{}",
            decision.reason
        );
        assert!(parsed.is_err());
    }
}
