//! Typed reads from a normalized JSON object, with errors that name the
//! field the way the user wrote it, and a final sweep for unknown fields.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::field_error::FieldError;

/// How known fields are shown in errors: (normalized, Consul's JSON name,
/// TOML name). Keys arrive normalized (`deregistercriticalserviceafter`),
/// which reads badly; we show the spelling of the surface the user is on.
const NAMES: &[(&str, &str, &str)] = &[
    ("id", "ID", "id"),
    ("checkid", "CheckID", "check_id"),
    ("name", "Name", "name"),
    ("notes", "Notes", "notes"),
    ("serviceid", "ServiceID", "service_id"),
    ("status", "Status", "status"),
    ("interval", "Interval", "interval"),
    ("timeout", "Timeout", "timeout"),
    ("critical", "Critical", "critical"),
    (
        "deregistercriticalserviceafter",
        "DeregisterCriticalServiceAfter",
        "deregister_critical_service_after",
    ),
    (
        "successbeforepassing",
        "SuccessBeforePassing",
        "success_before_passing",
    ),
    (
        "failuresbeforewarning",
        "FailuresBeforeWarning",
        "failures_before_warning",
    ),
    (
        "failuresbeforecritical",
        "FailuresBeforeCritical",
        "failures_before_critical",
    ),
    ("http", "HTTP", "http"),
    ("method", "Method", "method"),
    ("header", "Header", "header"),
    ("body", "Body", "body"),
    ("tcp", "TCP", "tcp"),
    ("tcpusetls", "TCPUseTLS", "tcp_use_tls"),
    ("tlsskipverify", "TLSSkipVerify", "tls_skip_verify"),
    ("tlsservername", "TLSServerName", "tls_server_name"),
    ("args", "Args", "args"),
    ("scriptargs", "ScriptArgs", "script_args"),
    ("ttl", "TTL", "ttl"),
    ("memory", "Memory", "memory"),
    ("disk", "Disk", "disk"),
    ("load", "Load", "load"),
    ("cpu", "Cpu", "cpu"),
    ("dependency", "Dependency", "dependency"),
    ("warning", "Warning", "warning"),
    ("path", "Path", "path"),
    ("service", "Service", "service"),
    ("minpassing", "MinPassing", "min_passing"),
    ("grpc", "GRPC", "grpc"),
    ("h2ping", "H2PING", "h2ping"),
    ("udp", "UDP", "udp"),
    ("aliasnode", "AliasNode", "alias_node"),
    ("aliasservice", "AliasService", "alias_service"),
    ("osservice", "OSService", "os_service"),
    (
        "dockercontainerid",
        "DockerContainerID",
        "docker_container_id",
    ),
    ("script", "Script", "script"),
];

/// The fields of one JSON object, read one by one.
pub(crate) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<String>,
}

impl<'a> Fields<'a> {
    /// Fails unless `value` is an object.
    pub(crate) fn new(value: &'a Value, path: impl Into<String>) -> Result<Self, FieldError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Self {
                path,
                map,
                seen: BTreeSet::new(),
            }),
            other => Err(FieldError::new(
                path,
                format!("expected an object, found {}", type_name(other)),
            )),
        }
    }

    /// The path of `key` as the user would write it: `Check.Interval` on
    /// the Consul API (paths starting upper-case), `checks[0].interval` in
    /// TOML. An empty path is a top-level API body: `Interval`.
    pub(crate) fn path_of(&self, key: &str) -> String {
        let consul_style =
            self.path.is_empty() || self.path.starts_with(|c: char| c.is_ascii_uppercase());
        let shown = NAMES
            .iter()
            .find(|(normalized, _, _)| *normalized == key)
            .map(|(_, camel, snake)| if consul_style { *camel } else { *snake })
            .unwrap_or(key);
        if self.path.is_empty() {
            shown.to_string()
        } else {
            format!("{}.{shown}", self.path)
        }
    }

    /// An error about `key`.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> FieldError {
        FieldError::new(self.path_of(key), message)
    }

    /// An error about the object as a whole.
    pub(crate) fn whole_error(&self, message: impl Into<String>) -> FieldError {
        FieldError::new(&self.path, message)
    }

    /// The raw value of `key`, marking it as known; `null` counts as absent.
    pub(crate) fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Whether `key` holds something other than null, "", false, [] or {}:
    /// Go clients without `omitempty` send those for fields they leave unset.
    pub(crate) fn is_set(&mut self, key: &str) -> bool {
        match self.raw(key) {
            None | Some(Value::Bool(false)) => false,
            Some(Value::String(text)) => !text.is_empty(),
            Some(Value::Array(items)) => !items.is_empty(),
            Some(Value::Object(map)) => !map.is_empty(),
            Some(_) => true,
        }
    }

    /// Marks keys as known without reading them.
    pub(crate) fn ignore(&mut self, keys: &[&str]) {
        self.seen.extend(keys.iter().map(|key| key.to_string()));
    }

    /// A string; `""` counts as absent.
    pub(crate) fn string(&mut self, key: &str) -> Result<Option<String>, FieldError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.expected(key, "a string", other)),
        }
    }

    pub(crate) fn bool(&mut self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(self.expected(key, "true or false", other)),
        }
    }

    /// A count: a whole number from 0 to 2^32 - 1.
    pub(crate) fn count(&mut self, key: &str) -> Result<Option<u32>, FieldError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.error(key, format!("`{number}` is not a count (0 or more)"))),
            Some(other) => Err(self.expected(key, "a whole number", other)),
        }
    }

    pub(crate) fn number(&mut self, key: &str) -> Result<Option<f64>, FieldError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(number)) => Ok(number.as_f64()),
            Some(other) => Err(self.expected(key, "a number", other)),
        }
    }

    /// A Go duration string (`"10s"`, `"1.5s"`, see [`crate::duration`]);
    /// `""` counts as absent.
    pub(crate) fn duration(&mut self, key: &str) -> Result<Option<Duration>, FieldError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => crate::duration::parse(text)
                .map(Some)
                .map_err(|error| self.error(key, error.to_string())),
            Some(other) => Err(self.expected(key, "a duration string like \"10s\"", other)),
        }
    }

    /// A list of strings; `[]` counts as absent.
    pub(crate) fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, FieldError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(self.expected(key, "a list of strings", value));
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => out.push(text.clone()),
                other => {
                    return Err(FieldError::new(
                        format!("{}[{index}]", self.path_of(key)),
                        format!("expected a string, found {}", type_name(other)),
                    ));
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Fails on the first key that no reader asked for.
    pub(crate) fn finish(self) -> Result<(), FieldError> {
        match self.map.keys().find(|key| !self.seen.contains(*key)) {
            Some(key) => Err(self.error(key, "unknown field")),
            None => Ok(()),
        }
    }

    fn expected(&self, key: &str, what: &str, found: &Value) -> FieldError {
        self.error(key, format!("expected {what}, found {}", type_name(found)))
    }
}

/// How a JSON value's type reads in an error message.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
