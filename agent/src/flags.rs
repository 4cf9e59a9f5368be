//! Feature flags: the schema stored in the replicated KV and the decision
//! for one user. Pure functions, no I/O; the HTTP side is `api::flags`.
//!
//! A flag lives at `_shoal/flags/<key>` as a JSON object (see
//! [`FlagDefinition`]), so it replicates, persists and converges exactly
//! like any other key. The decision for a user is, in order:
//!
//! 1. user in `deny_users` → off;
//! 2. user in `allow_users` → on, if the flag is `enabled`;
//! 3. not `enabled` → off;
//! 4. targeting (`services`, `environments`, `node_tags`) does not match
//!    this agent → off;
//! 5. rollout: `xxh3(flag key, user id)` picks a bucket in `[0, 100)` with a
//!    resolution of 0.01; the user gets the flag when `bucket <
//!    rollout_percentage`. The hash is stable across processes and hosts,
//!    so every agent gives a user the same answer, and raising the
//!    percentage only ever adds users.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// The KV prefix under which flags are stored.
pub const PREFIX: &str = "_shoal/flags/";

/// Longest flag key accepted by `PUT /v1/flags/:key`.
pub const MAX_KEY_LEN: usize = 128;

/// The KV key of flag `key`.
pub fn kv_key(key: &str) -> String {
    format!("{PREFIX}{key}")
}

/// A flag's definition, as stored (JSON) and as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlagDefinition {
    /// Master switch: a disabled flag is off for everyone (allow list too).
    pub enabled: bool,
    /// Share of users who get the flag, 0 to 100. Fractions are allowed
    /// (`12.5`); the buckets have a resolution of 0.01. Whole numbers are
    /// written as integers (`25`, not `25.0`).
    #[serde(serialize_with = "whole_as_integer")]
    pub rollout_percentage: f64,
    /// Users who always get the flag while it is enabled, whatever the
    /// rollout and targeting.
    pub allow_users: Vec<String>,
    /// Users who never get the flag; wins over everything.
    pub deny_users: Vec<String>,
    /// When not empty: only these services (the `service` of the query,
    /// else any service registered on the evaluating agent).
    pub services: Vec<String>,
    /// When not empty: only agents whose node tag `env` is one of these.
    pub environments: Vec<String>,
    /// Every tag here must be set to this value on the evaluating agent.
    pub node_tags: BTreeMap<String, String>,
    /// Free text for operators.
    pub description: String,
}

/// A definition that does not fit the schema: `field` names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FlagError {
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: impl Into<String>) -> FlagError {
    FlagError {
        field: field.to_string(),
        message: message.into(),
    }
}

const FIELDS: &[&str] = &[
    "enabled",
    "rollout_percentage",
    "allow_users",
    "deny_users",
    "services",
    "environments",
    "node_tags",
    "description",
];

impl FlagDefinition {
    /// Validates a JSON body. `enabled` and `rollout_percentage` are
    /// required; unknown fields are refused by name.
    pub fn parse(value: &Value) -> Result<Self, FlagError> {
        let object = value
            .as_object()
            .ok_or_else(|| field_error("(body)", "must be a JSON object"))?;
        if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
            return Err(field_error(
                unknown,
                format!("unknown field (expected one of {})", FIELDS.join(", ")),
            ));
        }
        let enabled = match object.get("enabled") {
            Some(Value::Bool(enabled)) => *enabled,
            Some(other) => {
                return Err(field_error(
                    "enabled",
                    format!("must be true or false, not {other}"),
                ));
            }
            None => return Err(field_error("enabled", "is required (true or false)")),
        };
        let rollout_percentage = match object.get("rollout_percentage") {
            Some(Value::Number(number)) => {
                let percentage = number.as_f64().unwrap_or(f64::NAN);
                if !(0.0..=100.0).contains(&percentage) {
                    return Err(field_error(
                        "rollout_percentage",
                        format!("must be between 0 and 100, not {number}"),
                    ));
                }
                percentage
            }
            Some(other) => {
                return Err(field_error(
                    "rollout_percentage",
                    format!("must be a number between 0 and 100, not {other}"),
                ));
            }
            None => {
                return Err(field_error(
                    "rollout_percentage",
                    "is required (a number between 0 and 100)",
                ));
            }
        };
        Ok(Self {
            enabled,
            rollout_percentage,
            allow_users: string_list(object, "allow_users")?,
            deny_users: string_list(object, "deny_users")?,
            services: string_list(object, "services")?,
            environments: string_list(object, "environments")?,
            node_tags: string_map(object, "node_tags")?,
            description: match object.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(other) => {
                    return Err(field_error(
                        "description",
                        format!("must be a string, not {other}"),
                    ));
                }
            },
        })
    }

    /// Parses a stored KV value.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FlagError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|error| field_error("(value)", format!("is not JSON: {error}")))?;
        Self::parse(&value)
    }

    /// The canonical JSON written to the KV.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a flag definition serializes")
    }
}

fn whole_as_integer<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && (0.0..=100.0).contains(value) {
        serializer.serialize_u64(*value as u64)
    } else {
        serializer.serialize_f64(*value)
    }
}

fn string_list(object: &Map<String, Value>, field: &str) -> Result<Vec<String>, FlagError> {
    let items = match object.get(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(field_error(
                field,
                format!("must be a list of strings, not {other}"),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) if !text.is_empty() => Ok(text.clone()),
            other => Err(field_error(
                &format!("{field}[{i}]"),
                format!("must be a non-empty string, not {other}"),
            )),
        })
        .collect()
}

fn string_map(
    object: &Map<String, Value>,
    field: &str,
) -> Result<BTreeMap<String, String>, FlagError> {
    let entries = match object.get(field) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(entries)) => entries,
        Some(other) => {
            return Err(field_error(
                field,
                format!("must be a table of tag = \"value\", not {other}"),
            ));
        }
    };
    entries
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            other => Err(field_error(
                &format!("{field}.{key}"),
                format!("must be a string, not {other}"),
            )),
        })
        .collect()
}

/// Checks a flag key given in a URL: 1 to 128 letters, digits, `-`, `_`
/// or `.`.
pub fn validate_key(key: &str) -> Result<(), FlagError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(field_error(
            "key",
            format!("`{key}` must be 1 to {MAX_KEY_LEN} letters, digits, '-', '_' or '.'"),
        ))
    }
}

/// What the decision is about: the user and where it is asked.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// The user id (`?user=`); without one, only a rollout of 0 or 100%
    /// can be decided.
    pub user: Option<&'a str>,
    /// The services the question is asked for: `?service=`, else the
    /// services registered on this agent.
    pub services: Vec<&'a str>,
    /// The evaluating agent's node tags (`env` is its environment).
    pub node_tags: &'a BTreeMap<String, String>,
}

/// The answer for one user, with why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub enabled: bool,
    pub reason: String,
    /// The user's rollout bucket in `[0, 100)`, when the rollout decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<f64>,
}

impl Decision {
    fn off(reason: impl Into<String>) -> Self {
        Self {
            enabled: false,
            reason: reason.into(),
            bucket: None,
        }
    }

    fn on(reason: impl Into<String>) -> Self {
        Self {
            enabled: true,
            reason: reason.into(),
            bucket: None,
        }
    }
}

/// The user's bucket for flag `key`: a stable hash of key and user id
/// mapped to `[0, 100)` in steps of 0.01.
pub fn bucket(key: &str, user: &str) -> f64 {
    let mut input = Vec::with_capacity(key.len() + user.len() + 1);
    input.extend_from_slice(key.as_bytes());
    // A separator so that ("ab", "c") and ("a", "bc") hash differently.
    input.push(0);
    input.extend_from_slice(user.as_bytes());
    let hash = xxhash_rust::xxh3::xxh3_64(&input);
    (hash % 10_000) as f64 / 100.0
}

/// Decides flag `key` for `context`. Never fails: a definition that does
/// not fit the schema is decided by [`decide_stored`] as off.
pub fn decide(key: &str, flag: &FlagDefinition, context: &Context<'_>) -> Decision {
    let user = context.user.filter(|user| !user.is_empty());
    if let Some(user) = user {
        if flag.deny_users.iter().any(|denied| denied == user) {
            return Decision::off("denied user");
        }
        if flag.allow_users.iter().any(|allowed| allowed == user) {
            return if flag.enabled {
                Decision::on("allowed user")
            } else {
                Decision::off("flag disabled")
            };
        }
    }
    if !flag.enabled {
        return Decision::off("flag disabled");
    }
    if !flag.services.is_empty()
        && !context
            .services
            .iter()
            .any(|service| flag.services.iter().any(|s| s == service))
    {
        return Decision::off("service not targeted");
    }
    if !flag.environments.is_empty() {
        match context.node_tags.get("env") {
            Some(env) if flag.environments.contains(env) => {}
            Some(env) => return Decision::off(format!("environment `{env}` not targeted")),
            None => return Decision::off("environment not targeted (this agent has no `env` tag)"),
        }
    }
    for (tag, wanted) in &flag.node_tags {
        if context.node_tags.get(tag) != Some(wanted) {
            return Decision::off(format!("node tag `{tag}` is not `{wanted}` here"));
        }
    }
    let percentage = flag.rollout_percentage;
    let shown = format_percentage(percentage);
    match user {
        Some(user) => {
            let bucket = bucket(key, user);
            Decision {
                enabled: bucket < percentage,
                reason: format!("rollout {shown}% (bucket {bucket:.2})"),
                bucket: Some(bucket),
            }
        }
        None if percentage >= 100.0 => Decision::on("rollout 100%"),
        None if percentage <= 0.0 => Decision::off("rollout 0%"),
        None => Decision::off(format!("rollout {shown}% needs a user id (?user=)")),
    }
}

/// Decides a flag as stored in the KV; a value that does not fit the schema
/// (written through `/v1/kv`) is off, with the schema error as the reason.
pub fn decide_stored(
    key: &str,
    value: &[u8],
    context: &Context<'_>,
) -> (Decision, Result<FlagDefinition, FlagError>) {
    match FlagDefinition::from_bytes(value) {
        Ok(flag) => (decide(key, &flag, context), Ok(flag)),
        Err(error) => (
            Decision::off(format!("invalid flag definition: {error}")),
            Err(error),
        ),
    }
}

/// `25`, `12.5`: no trailing zeros.
pub fn format_percentage(percentage: f64) -> String {
    let text = format!("{percentage:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
#[path = "flags_tests.rs"]
mod tests;
