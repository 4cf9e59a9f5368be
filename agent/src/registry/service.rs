//! Service definitions: parsed from Consul's registration JSON or from TOML
//! (both normalized by [`super::keys`]), and validated with Consul's limits.
//! A definition that fails validation is refused whole: nothing of it is
//! registered.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::checks::CheckDefinition;
use crate::field_error::FieldError;

/// Most meta pairs a service may carry (Consul's limit).
pub const MAX_META_PAIRS: usize = 64;
/// Longest meta key and value (Consul's limits).
pub const MAX_META_KEY: usize = 128;
pub const MAX_META_VALUE: usize = 512;
/// Most tags a service may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 255;

/// A service as registered on this agent.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDefinition {
    pub id: String,
    pub name: String,
    pub address: String,
    /// 0 when the service has no port.
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub checks: Vec<CheckDefinition>,
}

/// Fields real Consul clients send that Shoal accepts and ignores.
const IGNORED: &[&str] = &[
    "enabletagoverride",
    "weights",
    "taggedaddresses",
    "namespace",
    "partition",
    "token",
    "locality",
    "datacenter",
    "createindex",
    "modifyindex",
    "contenthash",
];

/// Consul features Shoal does not have: refused with a clear error.
const UNSUPPORTED: &[&str] = &["connect", "proxy", "socketpath"];

impl ServiceDefinition {
    /// Parses one service from a normalized JSON object. `field` names it in
    /// errors (`"service"`, `"services[2]"`, ...).
    pub fn parse(value: &Value, field: &str) -> Result<Self, FieldError> {
        let object = value
            .as_object()
            .ok_or_else(|| error(field, "must be an object"))?;
        for key in object.keys() {
            let known = matches!(
                key.as_str(),
                "id" | "name" | "address" | "port" | "tags" | "meta" | "check" | "checks" | "kind"
            ) || IGNORED.contains(&key.as_str());
            if UNSUPPORTED.contains(&key.as_str()) {
                return Err(error(&join(field, key), "is not supported by shoal"));
            }
            if !known {
                return Err(error(&join(field, key), "unknown field"));
            }
        }
        if let Some(kind) = object.get("kind")
            && kind
                .as_str()
                .is_some_and(|k| !k.is_empty() && k != "typical")
        {
            return Err(error(
                &join(field, "Kind"),
                "only typical services are supported",
            ));
        }

        let name = string(object, "name", field)?
            .ok_or_else(|| error(&join(field, "Name"), "is required"))?;
        validate_service_name(&name).map_err(|m| error(&join(field, "Name"), m))?;
        let id = string(object, "id", field)?.unwrap_or_else(|| name.clone());
        if id.is_empty() || id.len() > 128 || id.contains('/') {
            return Err(error(
                &join(field, "ID"),
                "must be 1 to 128 characters without '/'",
            ));
        }
        let address = string(object, "address", field)?.unwrap_or_default();
        if address.len() > 255 {
            return Err(error(
                &join(field, "Address"),
                "must be at most 255 characters",
            ));
        }
        let port = match object.get("port") {
            None | Some(Value::Null) => 0,
            Some(port) => port
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| {
                    error(
                        &join(field, "Port"),
                        format!("{port} is not a port between 1 and 65535"),
                    )
                })? as u16,
        };
        let tags = match object.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|tag| tag.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| error(&join(field, "Tags"), "must be a list of strings"))?,
            Some(_) => return Err(error(&join(field, "Tags"), "must be a list of strings")),
        };
        if tags.len() > MAX_TAGS || tags.iter().any(|t| t.is_empty() || t.len() > MAX_TAG_LEN) {
            return Err(error(
                &join(field, "Tags"),
                format!("at most {MAX_TAGS} tags of 1 to {MAX_TAG_LEN} characters"),
            ));
        }
        let meta = parse_meta(object.get("meta"), &join(field, "Meta"))?;

        let mut checks = Vec::new();
        if let Some(check) = object.get("check").filter(|c| !c.is_null()) {
            checks.push(CheckDefinition::parse(
                check,
                &join(field, "Check"),
                Some(&id),
                &format!("service:{id}"),
            )?);
        }
        match object.get("checks") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, check) in items.iter().enumerate() {
                    let default_id = format!("service:{id}:{}", checks.len() + 1);
                    checks.push(CheckDefinition::parse(
                        check,
                        &join(field, &format!("Checks[{i}]")),
                        Some(&id),
                        &default_id,
                    )?);
                }
            }
            Some(_) => return Err(error(&join(field, "Checks"), "must be a list of checks")),
        }
        let mut seen = std::collections::BTreeSet::new();
        for check in &checks {
            if !seen.insert(check.id.as_str()) {
                return Err(error(
                    &join(field, "Checks"),
                    format!("duplicate check id `{}`", check.id),
                ));
            }
        }
        Ok(Self {
            id,
            name,
            address,
            port,
            tags,
            meta,
            checks,
        })
    }
}

/// `parent.key`, or just `key` at the top level.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn string(
    object: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, FieldError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(error(
            &join(field, key),
            format!("must be a string, not {other}"),
        )),
    }
}

/// A service name must be a DNS label: 1 to 63 letters, digits and '-',
/// not starting or ending with '-'.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid DNS label (1 to 63 letters, digits and '-', not starting or ending with '-')"
        ))
    }
}

/// Meta with Consul's limits: at most 64 pairs, keys of at most 128
/// characters of `[A-Za-z0-9_-]`, values of at most 512 characters.
pub fn parse_meta(
    value: Option<&Value>,
    field: &str,
) -> Result<BTreeMap<String, String>, FieldError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(error(field, "must be an object of strings")),
    };
    if object.len() > MAX_META_PAIRS {
        return Err(error(
            field,
            format!(
                "has {} pairs; at most {MAX_META_PAIRS} are allowed",
                object.len()
            ),
        ));
    }
    let mut meta = BTreeMap::new();
    for (key, value) in object {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_META_KEY
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !key_ok {
            return Err(error(
                &join(field, key),
                format!(
                    "meta keys must be 1 to {MAX_META_KEY} characters of A-Z, a-z, 0-9, '_' and '-'"
                ),
            ));
        }
        let value = value
            .as_str()
            .ok_or_else(|| error(&join(field, key), "meta values must be strings"))?;
        if value.len() > MAX_META_VALUE {
            return Err(error(
                &join(field, key),
                format!("meta values must be at most {MAX_META_VALUE} characters"),
            ));
        }
        meta.insert(key.clone(), value.to_string());
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::keys::normalize;
    use serde_json::json;

    fn parse(value: Value) -> Result<ServiceDefinition, FieldError> {
        ServiceDefinition::parse(&normalize(value), "service")
    }

    #[test]
    fn accepts_camel_and_snake_case() {
        let a = parse(json!({"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"], "Meta": {"Version": "1"}})).unwrap();
        let b = parse(json!({"name": "web", "id": "web-1", "port": 8080, "tags": ["v1"], "meta": {"Version": "1"}})).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.meta["Version"], "1");
        let default_id = parse(json!({"name": "api"})).unwrap();
        assert_eq!(default_id.id, "api");
        assert_eq!(default_id.port, 0);
    }

    #[test]
    fn rejects_bad_input_naming_the_field() {
        let cases = [
            (json!({"Name": "bad_name!"}), "service.Name"),
            (json!({"Name": "web", "Port": 70000}), "service.Port"),
            (json!({"Name": "web", "Port": 0}), "service.Port"),
            (json!({"Name": "web", "Port": "80"}), "service.Port"),
            (json!({"Port": 80}), "service.Name"),
            (json!({"Name": "web", "Bogus": 1}), "service.bogus"),
            (
                json!({"Name": "web", "Meta": {"bad key": "x"}}),
                "service.Meta.bad key",
            ),
            (
                json!({"Name": "web", "Meta": {"k": "x".repeat(513)}}),
                "service.Meta.k",
            ),
            (json!({"Name": "web", "Tags": "not-a-list"}), "service.Tags"),
            (json!({"Name": "web", "Connect": {}}), "service.connect"),
        ];
        for (input, field) in cases {
            let error = parse(input.clone()).unwrap_err();
            assert_eq!(error.field, field, "{input}: {error}");
        }
        let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(
            parse(json!({"Name": "web", "Meta": many}))
                .unwrap_err()
                .field,
            "service.Meta"
        );
    }
}
