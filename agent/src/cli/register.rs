//! `shoal register FILE`, `shoal deregister ID`, `shoal maint`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::client::Client;
use crate::registry::keys::normalize;

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// A service definition: Consul JSON (`{"Name": ...}` or
    /// `{"service": {...}}`), or TOML with `[service]` or `[[services]]`.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DeregisterArgs {
    /// Service id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct MaintArgs {
    /// Put the node (or `--service`) into maintenance.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Take the node (or `--service`) out of maintenance.
    #[arg(long)]
    pub disable: bool,
    /// Only this service id instead of the whole node.
    #[arg(long, value_name = "ID")]
    pub service: Option<String>,
    /// Why, shown in the maintenance check's notes.
    #[arg(long)]
    pub reason: Option<String>,
}

/// The service objects a file holds.
fn services_in(path: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_toml = path.extension().is_some_and(|ext| ext == "toml");
    let value: Value = if is_toml {
        let parsed: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        serde_json::to_value(parsed)?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?
    };
    let value = normalize(value);
    let services = if let Some(service) = value.get("service") {
        vec![service.clone()]
    } else if let Some(services) = value.get("services").and_then(Value::as_array) {
        services.clone()
    } else {
        vec![value]
    };
    Ok(services)
}

pub fn register(client: &Client, args: &RegisterArgs) -> anyhow::Result<()> {
    for service in services_in(&args.file)? {
        client.put_json("/v1/agent/service/register", &service)?;
        let name = service
            .get("id")
            .or(service.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        println!("Registered service: {name}");
    }
    Ok(())
}

pub fn deregister(client: &Client, args: &DeregisterArgs) -> anyhow::Result<()> {
    client.put(&format!("/v1/agent/service/deregister/{}", args.id))?;
    println!("Deregistered service: {}", args.id);
    Ok(())
}

pub fn maint(client: &Client, args: &MaintArgs) -> anyhow::Result<()> {
    if args.enable == args.disable {
        anyhow::bail!("give exactly one of --enable or --disable");
    }
    let mut query = format!("?enable={}", args.enable);
    if let Some(reason) = &args.reason {
        let encoded: String = reason
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        query.push_str(&format!("&reason={encoded}"));
    }
    let (path, what) = match &args.service {
        Some(id) => (
            format!("/v1/agent/service/maintenance/{id}{query}"),
            format!("service {id}"),
        ),
        None => (format!("/v1/agent/maintenance{query}"), "node".to_string()),
    };
    client.put(&path)?;
    println!(
        "Maintenance mode {} for {what}",
        if args.enable { "enabled" } else { "disabled" }
    );
    Ok(())
}
