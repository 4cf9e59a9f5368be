//! Services and checks defined in configuration: `[[services]]` and
//! `[[checks]]` of the file, and the `*.toml` files of `config_dir`. They
//! are parsed as the HTTP API parses them (TOML converted to normalized
//! JSON), so both surfaces accept the same definitions.

use std::path::{Path, PathBuf};

use super::file::{ServiceFile, read_toml};
use super::{ConfigError, invalid};
use crate::checks::CheckDefinition;
use crate::field_error::FieldError;
use crate::registry::keys::normalize;
use crate::registry::service::ServiceDefinition;

/// `[[services]]` of the main file; errors name `services[i]...`.
pub(super) fn file_services(
    items: Option<Vec<toml::Value>>,
) -> Result<Vec<ServiceDefinition>, ConfigError> {
    parse_services(numbered("services", items.iter().flatten()))
        .map_err(|error| invalid(&error.field, error.message))
}

/// `[[checks]]` of the main file; errors name `checks[i]...`.
pub(super) fn file_checks(
    items: Option<Vec<toml::Value>>,
) -> Result<Vec<CheckDefinition>, ConfigError> {
    parse_checks(numbered("checks", items.iter().flatten()))
        .map_err(|error| invalid(&error.field, error.message))
}

/// Reads every `*.toml` file of `dir`, in name order.
pub(super) fn read_config_dir(
    dir: &Path,
) -> Result<(Vec<ServiceDefinition>, Vec<CheckDefinition>), ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    let mut services = Vec::new();
    let mut checks = Vec::new();
    for path in paths {
        let file: ServiceFile = read_toml(&path)?;
        let in_file = |error: FieldError| ConfigError::Parse {
            path: path.clone(),
            message: error.to_string(),
        };
        let single = file.service.iter().map(|v| ("service".to_string(), v));
        let items = single.chain(numbered("services", file.services.iter().flatten()));
        services.extend(parse_services(items).map_err(in_file)?);
        checks.extend(
            parse_checks(numbered("checks", file.checks.iter().flatten())).map_err(in_file)?,
        );
    }
    Ok((services, checks))
}

/// Service and check ids must be unique across the file and `config_dir`.
pub(super) fn check_unique_ids(
    services: &[ServiceDefinition],
    checks: &[CheckDefinition],
) -> Result<(), ConfigError> {
    let mut service_ids = std::collections::BTreeSet::new();
    for service in services {
        if !service_ids.insert(service.id.as_str()) {
            return Err(invalid(
                "services",
                format!("service id `{}` is defined twice", service.id),
            ));
        }
    }
    let mut check_ids = std::collections::BTreeSet::new();
    for check in services.iter().flat_map(|s| &s.checks).chain(checks) {
        if !check_ids.insert(check.id.as_str()) {
            return Err(invalid(
                "checks",
                format!("check id `{}` is defined twice", check.id),
            ));
        }
    }
    Ok(())
}

/// At most as many services and checks as a node record carries (what the
/// registry would refuse at start-up, refused here with the config's other
/// errors instead).
pub(super) fn check_counts(
    services: &[ServiceDefinition],
    checks: &[CheckDefinition],
) -> Result<(), ConfigError> {
    let max_services = shoal_protocol::state::MAX_SERVICES;
    if services.len() > max_services {
        return Err(invalid(
            "services",
            format!(
                "at most {max_services} services per agent (what a node record carries), not {}",
                services.len()
            ),
        ));
    }
    let max_checks = crate::registry::store::MAX_CHECKS;
    let count = services.iter().map(|s| s.checks.len()).sum::<usize>() + checks.len();
    if count > max_checks {
        return Err(invalid(
            "checks",
            format!(
                "at most {max_checks} checks per agent, services' checks included (what a node record carries), not {count}"
            ),
        ));
    }
    Ok(())
}

/// Exec checks in the config files need `enable_local_script_checks` (or
/// `enable_script_checks`, which allows them from anywhere, as in Consul).
pub(super) fn check_local_scripts(config: &super::AgentConfig) -> Result<(), ConfigError> {
    if config.enable_local_script_checks || config.enable_script_checks {
        return Ok(());
    }
    let configured = config.services.iter().flat_map(|s| &s.checks);
    match configured
        .chain(&config.checks)
        .find(|c| c.runs_a_program())
    {
        Some(check) => Err(invalid(
            "enable_local_script_checks",
            format!(
                "is false, but check `{}` in the configuration runs a program (args); remove the check or set enable_local_script_checks = true",
                check.id
            ),
        )),
        None => Ok(()),
    }
}

/// Each item with its path for errors: `services[0]`, `services[1]`, ...
fn numbered<'a>(
    table: &'a str,
    items: impl Iterator<Item = &'a toml::Value> + 'a,
) -> impl Iterator<Item = (String, &'a toml::Value)> + 'a {
    items
        .enumerate()
        .map(move |(i, value)| (format!("{table}[{i}]"), value))
}

fn parse_services<'a>(
    items: impl Iterator<Item = (String, &'a toml::Value)>,
) -> Result<Vec<ServiceDefinition>, FieldError> {
    items
        .map(|(field, value)| ServiceDefinition::parse(&to_json(value), &field))
        .collect()
}

fn parse_checks<'a>(
    items: impl Iterator<Item = (String, &'a toml::Value)>,
) -> Result<Vec<CheckDefinition>, FieldError> {
    items
        .map(|(field, value)| {
            let json = to_json(value);
            let name = json
                .get("name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&field)
                .to_string();
            CheckDefinition::parse(&json, &field, None, &name)
        })
        .collect()
}

fn to_json(value: &toml::Value) -> serde_json::Value {
    normalize(serde_json::to_value(value).unwrap_or_default())
}
