//! Consul accepts JSON field names in any case and in snake_case
//! (`DeregisterCriticalServiceAfter`, `deregistercriticalserviceafter`,
//! `deregister_critical_service_after`). We normalize the keys of a request
//! (or of a TOML definition) once, to lowercase without underscores, and
//! parse the normalized form. Maps whose keys belong to the user (`Meta`,
//! `Header`, ...) keep their keys as written.

use serde_json::{Map, Value};

/// Keys whose values are user maps: their own keys are left alone.
const OPAQUE: &[&str] = &[
    "meta",
    "header",
    "taggedaddresses",
    "nodemeta",
    "servicemeta",
    "tags",
];

/// Lowercase, without underscores or dashes: `Check_ID` → `checkid`.
pub fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Normalizes every object key in `value`, recursively, except inside the
/// values of `OPAQUE` keys.
pub fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, value) in map {
                let key = normalize_key(&key);
                let value = if OPAQUE.contains(&key.as_str()) {
                    value
                } else {
                    normalize(value)
                };
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalizes_case_and_snake_case_but_not_user_maps() {
        let value = normalize(json!({
            "Name": "web",
            "Meta": {"Team_Name": "a"},
            "check": {"Deregister_Critical_Service_After": "1m", "Header": {"X-Token": ["t"]}},
            "Checks": [{"TTL": "10s"}]
        }));
        assert_eq!(
            value,
            json!({
                "name": "web",
                "meta": {"Team_Name": "a"},
                "check": {"deregistercriticalserviceafter": "1m", "header": {"X-Token": ["t"]}},
                "checks": [{"ttl": "10s"}]
            })
        );
    }
}
