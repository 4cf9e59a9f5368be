//! `shoal services`, `shoal service NAME`, `shoal checks`: the catalog and
//! this agent's checks, as tables or JSON.

use clap::Args;
use serde_json::{Value, json};

use super::{Format, print_table};
use crate::client::Client;

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// `consul services register|deregister`: the same as `shoal register`
    /// and `shoal deregister`.
    #[command(subcommand)]
    pub command: Option<ServicesCommand>,
}

/// Consul's spelling of `shoal register` and `shoal deregister`.
#[derive(Debug, clap::Subcommand)]
pub enum ServicesCommand {
    /// Register the services in a JSON or TOML file (as `shoal register`).
    Register(super::register::RegisterArgs),
    /// Deregister a service from this agent (as `shoal deregister`).
    Deregister(super::register::DeregisterArgs),
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Service name.
    pub name: String,
    /// Only instances whose checks all pass.
    #[arg(long)]
    pub passing: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ChecksArgs {
    /// Only the checks of this service id.
    #[arg(long, value_name = "ID")]
    pub service: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub(super) fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Consul's aggregate status of one `/v1/health/service` entry, except
/// that an instance in maintenance shows as `maintenance`: its maintenance
/// check is critical on the wire (it takes the instance out of rotation,
/// as in Consul), but an operator reading the table must tell it from a
/// failing instance.
fn entry_status(entry: &Value) -> &'static str {
    let checks = entry["Checks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if checks.iter().any(is_maintenance) {
        return "maintenance";
    }
    let mut worst = "passing";
    for check in checks {
        match check["Status"].as_str() {
            Some("critical") => return "critical",
            Some("warning") => worst = "warning",
            _ => {}
        }
    }
    worst
}

/// Whether `check` is one of the maintenance checks (Consul's IDs).
fn is_maintenance(check: &Value) -> bool {
    check["CheckID"]
        .as_str()
        .is_some_and(|id| id == "_node_maintenance" || id.starts_with("_service_maintenance:"))
}

pub fn services(client: &Client, args: &ServicesArgs) -> anyhow::Result<()> {
    match &args.command {
        Some(ServicesCommand::Register(args)) => return super::register::register(client, args),
        Some(ServicesCommand::Deregister(args)) => {
            return super::register::deregister(client, args);
        }
        None => {}
    }
    let catalog = client.get_json("/v1/catalog/services")?;
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for (name, tags) in catalog.as_object().into_iter().flatten() {
        let entries = client.get_json(&format!("/v1/health/service/{}", encode(name)))?;
        let entries = entries.as_array().cloned().unwrap_or_default();
        let passing = entries
            .iter()
            .filter(|e| entry_status(e) == "passing")
            .count();
        let tags: Vec<&str> = tags
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push(vec![
            name.clone(),
            format!("{passing}/{}", entries.len()),
            tags.join(","),
        ]);
        summary.push(
            json!({ "Name": name, "Passing": passing, "Instances": entries.len(), "Tags": tags }),
        );
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Format::Table => print_table(&["Service", "Passing", "Tags"], &rows),
    }
    Ok(())
}

pub fn service(client: &Client, args: &ServiceArgs) -> anyhow::Result<()> {
    let mut path = format!("/v1/health/service/{}", encode(&args.name));
    if args.passing {
        path.push_str("?passing=1");
    }
    let entries = client.get_json(&path)?;
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let service = &entry["Service"];
            let address = match service["Address"].as_str() {
                Some(address) if !address.is_empty() => address.to_string(),
                _ => entry["Node"]["Address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            let tags: Vec<&str> = service["Tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                entry["Node"]["Node"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                service["ID"].as_str().unwrap_or_default().to_string(),
                format!("{address}:{}", service["Port"]),
                entry_status(entry).to_string(),
                tags.join(","),
            ]
        })
        .collect();
    print_table(&["Node", "ID", "Address", "Status", "Tags"], &rows);
    Ok(())
}

pub fn checks(client: &Client, args: &ChecksArgs) -> anyhow::Result<()> {
    let checks = client.get_json("/v1/agent/checks")?;
    let checks: Vec<&Value> = checks
        .as_object()
        .into_iter()
        .flat_map(|map| map.values())
        .filter(|check| {
            args.service
                .as_deref()
                .is_none_or(|id| check["ServiceID"] == id)
        })
        .collect();
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|check| {
            let output = check["Output"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default();
            let output: String = output.chars().take(60).collect();
            vec![
                check["CheckID"].as_str().unwrap_or_default().to_string(),
                check["ServiceID"].as_str().unwrap_or_default().to_string(),
                check["Type"].as_str().unwrap_or_default().to_string(),
                check["Status"].as_str().unwrap_or_default().to_string(),
                output,
            ]
        })
        .collect();
    print_table(&["Check", "Service", "Type", "Status", "Output"], &rows);
    Ok(())
}
