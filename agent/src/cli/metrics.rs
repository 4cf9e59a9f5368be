//! `shoal metrics`: the agent's metrics as a table, as Consul's JSON
//! (`--format json`) or in the Prometheus text format (`--format
//! prometheus`).

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::print_table;
use crate::client::Client;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: MetricsFormat,
    /// Show only metrics whose name contains this text (e.g. `gossip`).
    pub filter: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum MetricsFormat {
    #[default]
    Table,
    /// `/v1/agent/metrics`: Consul's JSON shape.
    Json,
    /// `/metrics`: the Prometheus text format.
    Prometheus,
}

pub fn run(client: &Client, args: &MetricsArgs) -> anyhow::Result<()> {
    let wanted = |name: &str| {
        args.filter
            .as_deref()
            .is_none_or(|part| name.contains(part))
    };
    if args.format == MetricsFormat::Prometheus {
        let text = client.get_text("/v1/agent/metrics?format=prometheus")?;
        for line in text.lines() {
            // Keep a family's HELP and TYPE lines with its samples.
            let name = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            if wanted(name.split([' ', '{']).next().unwrap_or_default()) {
                println!("{line}");
            }
        }
        return Ok(());
    }
    let metrics = client.get_json("/v1/agent/metrics")?;
    if args.format == MetricsFormat::Json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut add = |kind: &str, entry: &Value, value: String| {
        let name = entry["Name"].as_str().unwrap_or_default();
        if wanted(name) {
            rows.push(vec![
                name.to_string(),
                labels(&entry["Labels"]),
                kind.to_string(),
                value,
            ]);
        }
    };
    for entry in list(&metrics["Counters"]) {
        add("counter", entry, number(&entry["Sum"]));
    }
    for entry in list(&metrics["Gauges"]) {
        add("gauge", entry, number(&entry["Value"]));
    }
    for entry in list(&metrics["Samples"]) {
        let count = entry["Count"].as_u64().unwrap_or(0);
        let shown = if count == 0 {
            "count=0".to_string()
        } else {
            format!(
                "count={count} mean={}",
                seconds_or_number(entry["Name"].as_str(), &entry["Mean"])
            )
        };
        add("histogram", entry, shown);
    }
    rows.sort();
    print_table(&["Name", "Labels", "Type", "Value"], &rows);
    Ok(())
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `{a="b",c="d"}` as `a=b,c=d`.
fn labels(value: &Value) -> String {
    super::key_values(value)
}

/// A number without a trailing `.0`, large ones in full.
fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(float) if float.fract() == 0.0 && float.abs() < 1e15 => format!("{}", float as i64),
        Some(float) => format!("{float:.3}"),
        None => value.to_string(),
    }
}

/// Means of `_seconds` histograms in a readable unit.
fn seconds_or_number(name: Option<&str>, value: &Value) -> String {
    let Some(seconds) = value.as_f64() else {
        return value.to_string();
    };
    if !name.is_some_and(|name| name.ends_with("_seconds")) {
        return format!("{seconds:.0}");
    }
    if seconds >= 1.0 {
        format!("{seconds:.2}s")
    } else if seconds >= 0.001 {
        format!("{:.2}ms", seconds * 1e3)
    } else {
        format!("{:.0}µs", seconds * 1e6)
    }
}
