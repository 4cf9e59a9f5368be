//! Service definitions: parsed from Consul's registration JSON or from TOML
//! (both normalized by [`super::keys`]), and validated with Consul's limits.
//! A definition that fails validation is refused whole: nothing of it is
//! registered.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use shoal_protocol::record::TAGGED_ADDRESS_PREFIX;

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
    /// Consul's service `TaggedAddresses`: name → (address, port).
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    pub checks: Vec<CheckDefinition>,
}

/// Most tagged addresses a service may carry.
pub const MAX_TAGGED_ADDRESSES: usize = 16;

/// Fields real Consul clients send that Shoal accepts and ignores.
const IGNORED: &[&str] = &[
    "enabletagoverride",
    "weights",
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
                "id" | "name"
                    | "address"
                    | "port"
                    | "tags"
                    | "meta"
                    | "check"
                    | "checks"
                    | "kind"
                    | "taggedaddresses"
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

        let tagged_addresses = parse_tagged_addresses(
            object.get("taggedaddresses"),
            &join(field, "TaggedAddresses"),
        )?;

        // Consul's IDs: a service's only check (from `Check` or a
        // one-element `Checks`) is `service:<id>`; with several they are
        // numbered from 1, `Check` first. Unnamed ones are
        // "Service '<name>' check".
        let mut sources: Vec<(&Value, String)> = Vec::new();
        if let Some(check) = object.get("check").filter(|c| !c.is_null()) {
            sources.push((check, join(field, "Check")));
        }
        match object.get("checks") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => sources.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, check)| (check, join(field, &format!("Checks[{i}]")))),
            ),
            Some(_) => return Err(error(&join(field, "Checks"), "must be a list of checks")),
        }
        let several = sources.len() > 1;
        let mut checks = Vec::with_capacity(sources.len());
        for (i, (check, check_field)) in sources.into_iter().enumerate() {
            let default_id = if several {
                format!("service:{id}:{}", i + 1)
            } else {
                format!("service:{id}")
            };
            let mut check = check.clone();
            if let Value::Object(fields) = &mut check
                && fields.get("name").is_none_or(Value::is_null)
            {
                fields.insert(
                    "name".into(),
                    Value::String(format!("Service '{name}' check")),
                );
            }
            checks.push(CheckDefinition::parse(
                &check,
                &check_field,
                Some(&id),
                &default_id,
            )?);
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
            tagged_addresses,
            checks,
        })
    }

    /// The meta that is gossiped: the user's, plus the tagged addresses
    /// under reserved keys (see [`TAGGED_ADDRESS_PREFIX`]).
    pub fn gossiped_meta(&self) -> BTreeMap<String, String> {
        let mut meta = self.meta.clone();
        for (name, (address, port)) in &self.tagged_addresses {
            meta.insert(
                format!("{TAGGED_ADDRESS_PREFIX}{name}"),
                format!("{address}:{port}"),
            );
        }
        meta
    }
}

/// Consul's service `TaggedAddresses`: `{"lan": {"Address": "10.0.0.1",
/// "Port": 8080}, ...}`: names of `[A-Za-z0-9_-]`, at most
/// [`MAX_TAGGED_ADDRESSES`], each with an address and an optional port.
fn parse_tagged_addresses(
    value: Option<&Value>,
    field: &str,
) -> Result<BTreeMap<String, (String, u16)>, FieldError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(error(field, "must be an object of {Address, Port}")),
    };
    if object.len() > MAX_TAGGED_ADDRESSES {
        return Err(error(
            field,
            format!("at most {MAX_TAGGED_ADDRESSES} tagged addresses are allowed"),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in object {
        let here = join(field, name);
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(error(
                &here,
                "names must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
            ));
        }
        let entry = crate::registry::keys::normalize(value.clone());
        let entry = entry
            .as_object()
            .ok_or_else(|| error(&here, "must be an object {Address, Port}"))?;
        if let Some(key) = entry.keys().find(|k| *k != "address" && *k != "port") {
            return Err(error(
                &join(&here, key),
                "unknown field (expected Address and Port)",
            ));
        }
        let address = string(entry, "address", &here)?.unwrap_or_default();
        if address.is_empty() || address.len() > 255 {
            return Err(error(
                &join(&here, "Address"),
                "is required, at most 255 characters",
            ));
        }
        let port = match entry.get("port") {
            None | Some(Value::Null) => 0,
            Some(port) => port.as_u64().filter(|p| *p <= 65535).ok_or_else(|| {
                error(
                    &join(&here, "Port"),
                    format!("{port} is not a port between 0 and 65535"),
                )
            })? as u16,
        };
        out.insert(name.clone(), (address, port));
    }
    Ok(out)
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

/// A service name: 1 to 63 letters, digits, '-' and '_', not starting or
/// ending with '-'. Consul accepts `_` (and warns that DNS can't serve the
/// name); so do we: the service is served over HTTP, and DNS skips it
/// ([`served_by_dns`]).
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid service name (1 to 63 letters, digits, '-' and '_', not starting or ending with '-')"
        ))
    }
}

/// Whether DNS can serve a (valid) service name: not with `_`, which is
/// not allowed in host names and would be read as RFC 2782's
/// `_service._tag` form.
pub fn served_by_dns(name: &str) -> bool {
    !name.contains('_')
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
    fn check_ids_and_names_are_consuls() {
        let ids = |value: Value| {
            parse(value)
                .unwrap()
                .checks
                .into_iter()
                .map(|c| (c.id, c.name))
                .collect::<Vec<_>>()
        };
        let ttl = json!({"TTL": "10s"});
        let only = (
            "service:web-1".to_string(),
            "Service 'web' check".to_string(),
        );
        assert_eq!(
            ids(json!({"Name": "web", "ID": "web-1", "Check": ttl})),
            std::slice::from_ref(&only)
        );
        assert_eq!(
            ids(json!({"Name": "web", "ID": "web-1", "Checks": [ttl]})),
            [only]
        );
        let two = ids(
            json!({"Name": "web", "ID": "web-1", "Check": ttl, "Checks": [{"TTL": "5s", "Name": "own"}]}),
        );
        assert_eq!(
            two,
            [
                (
                    "service:web-1:1".to_string(),
                    "Service 'web' check".to_string()
                ),
                ("service:web-1:2".to_string(), "own".to_string()),
            ]
        );
        let explicit =
            ids(json!({"Name": "web", "Checks": [{"TTL": "5s", "CheckID": "service:web:1"}]}));
        assert_eq!(explicit[0].0, "service:web:1", "an explicit ID is kept");
    }

    #[test]
    fn tagged_addresses_are_kept_and_checked() {
        let service = parse(json!({"Name": "web", "TaggedAddresses": {
            "lan": {"Address": "10.0.0.1", "Port": 80},
            "wan_ipv6": {"address": "::1"}
        }}))
        .unwrap();
        assert_eq!(service.tagged_addresses["lan"], ("10.0.0.1".into(), 80));
        assert_eq!(service.tagged_addresses["wan_ipv6"], ("::1".into(), 0));
        let meta = service.gossiped_meta();
        assert_eq!(meta[":tagged:lan"], "10.0.0.1:80");
        for (input, field) in [
            (
                json!({"lan": {"Port": 80}}),
                "service.TaggedAddresses.lan.Address",
            ),
            (
                json!({"lan": {"Address": "a", "Port": 70000}}),
                "service.TaggedAddresses.lan.Port",
            ),
            (
                json!({"bad name": {"Address": "a"}}),
                "service.TaggedAddresses.bad name",
            ),
            (
                json!({"lan": {"Address": "a", "Bogus": 1}}),
                "service.TaggedAddresses.lan.bogus",
            ),
            (json!("x"), "service.TaggedAddresses"),
        ] {
            let error = parse(json!({"Name": "web", "TaggedAddresses": input})).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn names_with_underscores_are_accepted_but_not_served_by_dns() {
        let service = parse(json!({"Name": "queue_worker", "Port": 80})).unwrap();
        assert_eq!(service.name, "queue_worker");
        assert!(!served_by_dns(&service.name));
        assert!(served_by_dns("queue-worker"));
        for bad in ["-web", "web-", "a.b", "web!", "", &"x".repeat(64)] {
            let error = parse(json!({"Name": bad})).unwrap_err();
            assert!(error.message.contains("'_'"), "{bad}: {error}");
        }
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
