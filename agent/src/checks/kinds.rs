//! Parsing the kind-specific fields of a check definition.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::definition::{CheckKind, HttpTls, SystemCheck, Thresholds};
use super::fields::{Fields, type_name};
use crate::field_error::FieldError;

/// Fields that select a kind, in the order listed in errors.
const KIND_FIELDS: &[&str] = &[
    "http",
    "tcp",
    "args",
    "scriptargs",
    "ttl",
    "memory",
    "disk",
    "load",
    "cpu",
    "dependency",
];

/// Fields only an HTTP check uses.
const HTTP_FIELDS: &[&str] = &["method", "header", "body"];

/// Finds the one kind field present and parses it.
pub(crate) fn parse_kind<'a>(fields: &mut Fields<'a>) -> Result<CheckKind, FieldError> {
    let present: Vec<&str> = KIND_FIELDS
        .iter()
        .copied()
        .filter(|key| fields.is_set(key))
        .collect();
    let key = match present.as_slice() {
        [key] => *key,
        [] => {
            return Err(fields.whole_error(format!(
                "no check kind: set exactly one of {}",
                KIND_FIELDS.join(", ")
            )));
        }
        several => {
            return Err(fields.whole_error(format!(
                "more than one check kind ({}): set exactly one",
                several.join(", ")
            )));
        }
    };
    if key != "http" {
        for http_field in HTTP_FIELDS {
            if fields.is_set(http_field) {
                return Err(fields.error(http_field, "only used by HTTP checks"));
            }
        }
    }
    match key {
        "http" => parse_http(fields),
        "tcp" => parse_tcp(fields),
        "args" | "scriptargs" => {
            let args = fields.strings(key)?.unwrap_or_default();
            if args[0].trim().is_empty() {
                return Err(fields.error(key, "the program (first item) is empty"));
            }
            Ok(CheckKind::Exec { args })
        }
        "ttl" => match fields.duration("ttl")? {
            Some(ttl) if !ttl.is_zero() => Ok(CheckKind::Ttl { ttl }),
            _ => Err(fields.error("ttl", "must be longer than zero")),
        },
        "memory" => system(fields, key, Some(100.0), SystemCheck::Memory),
        "cpu" => system(fields, key, Some(100.0), SystemCheck::Cpu),
        "load" => system(fields, key, None, SystemCheck::Load),
        "disk" => parse_disk(fields),
        "dependency" => parse_dependency(fields),
        _ => unreachable!("every kind field has a parser"),
    }
}

fn parse_http(fields: &mut Fields<'_>) -> Result<CheckKind, FieldError> {
    let url = fields.string("http")?.unwrap_or_default();
    let uri: hyper::Uri = url
        .parse()
        .map_err(|error| fields.error("http", format!("`{url}` is not a URL: {error}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => {}
        _ => {
            return Err(fields.error(
                "http",
                format!("`{url}` is not an http:// or https:// URL with a host"),
            ));
        }
    }
    let skip_verify = fields.bool("tlsskipverify")?.unwrap_or(false);
    let server_name = fields.string("tlsservername")?;
    if let Some(name) = &server_name {
        super::tls::server_name(name).map_err(|message| fields.error("tlsservername", message))?;
    }

    let method = fields
        .string("method")?
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    if Method::from_bytes(method.as_bytes()).is_err() {
        return Err(fields.error("method", format!("`{method}` is not an HTTP method")));
    }

    let mut headers = BTreeMap::new();
    if let Some(value) = fields.raw("header") {
        let Value::Object(map) = value else {
            return Err(fields.error(
                "header",
                format!(
                    "expected a map of header name to list of values, found {}",
                    type_name(value)
                ),
            ));
        };
        for (name, values) in map {
            let path = format!("{}.{name}", fields.path_of("header"));
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(FieldError::new(path, "not a valid header name"));
            }
            // Consul wants a list; a single string is what people write in
            // TOML, and means the same.
            let values = match values {
                Value::String(text) => vec![text.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| FieldError::new(&path, "expected a list of strings"))?,
                other => {
                    return Err(FieldError::new(
                        path,
                        format!("expected a list of strings, found {}", type_name(other)),
                    ));
                }
            };
            if values.iter().any(|v| HeaderValue::from_str(v).is_err()) {
                return Err(FieldError::new(path, "header values must be visible ASCII"));
            }
            headers.insert(name.clone(), values);
        }
    }
    let body = fields.string("body")?.unwrap_or_default();
    Ok(CheckKind::Http {
        url,
        method,
        headers,
        body,
        tls: HttpTls {
            skip_verify,
            server_name,
        },
    })
}

fn parse_tcp(fields: &mut Fields<'_>) -> Result<CheckKind, FieldError> {
    let address = fields.string("tcp")?.unwrap_or_default();
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(fields.error(
            "tcp",
            format!("`{address}` is not host:port (e.g. \"127.0.0.1:5432\")"),
        ));
    }
    Ok(CheckKind::Tcp { address })
}

fn parse_disk(fields: &mut Fields<'_>) -> Result<CheckKind, FieldError> {
    let mut inner = nested(fields, "disk")?;
    let path = match inner.string("path")? {
        None => PathBuf::from("/"),
        Some(text) if text.starts_with('/') => PathBuf::from(text),
        Some(text) => return Err(inner.error("path", format!("`{text}` is not an absolute path"))),
    };
    let thresholds = thresholds(&mut inner, Some(100.0))?;
    inner.finish()?;
    Ok(CheckKind::System(SystemCheck::Disk { path, thresholds }))
}

fn parse_dependency(fields: &mut Fields<'_>) -> Result<CheckKind, FieldError> {
    let mut inner = nested(fields, "dependency")?;
    let service = inner
        .string("service")?
        .ok_or_else(|| inner.error("service", "required: the service name to depend on"))?;
    let min_passing = inner.count("minpassing")?.unwrap_or(1);
    if min_passing == 0 {
        return Err(inner.error("minpassing", "must be at least 1"));
    }
    inner.finish()?;
    Ok(CheckKind::Dependency {
        service,
        min_passing: min_passing as usize,
    })
}

/// A system check whose object holds only thresholds.
fn system(
    fields: &mut Fields<'_>,
    key: &str,
    max: Option<f64>,
    make: fn(Thresholds) -> SystemCheck,
) -> Result<CheckKind, FieldError> {
    let mut inner = nested(fields, key)?;
    let thresholds = thresholds(&mut inner, max)?;
    inner.finish()?;
    Ok(CheckKind::System(make(thresholds)))
}

/// The fields of the object under `key`.
fn nested<'a>(fields: &mut Fields<'a>, key: &str) -> Result<Fields<'a>, FieldError> {
    let path = fields.path_of(key);
    let value = fields.raw(key).expect("parse_kind saw this kind field set");
    Fields::new(value, path)
}

/// Reads `Warning` and `Critical` levels; `max` bounds both (100 for
/// percentages).
fn thresholds(inner: &mut Fields<'_>, max: Option<f64>) -> Result<Thresholds, FieldError> {
    let mut level = |name: &str| -> Result<Option<f64>, FieldError> {
        let level = inner.number(name)?;
        let in_range = |level: f64| level > 0.0 && max.is_none_or(|max| level <= max);
        match level {
            Some(level) if !in_range(level) => {
                let range = match max {
                    Some(max) => format!("above 0 and at most {max}"),
                    None => "above 0".into(),
                };
                Err(inner.error(name, format!("{level} is not {range}")))
            }
            _ => Ok(level),
        }
    };
    let warning = level("warning")?;
    let critical = level("critical")?;
    match (warning, critical) {
        (Some(warning), Some(critical)) if warning >= critical => {
            return Err(inner.error(
                "warning",
                format!("{warning} must be below the critical level ({critical})"),
            ));
        }
        (None, None) => {
            return Err(inner.whole_error("set a warning level, a critical level, or both"));
        }
        _ => {}
    }
    Ok(Thresholds { warning, critical })
}
