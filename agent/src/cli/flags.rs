//! `shoal flags ls|get|set|eval|rm`: feature flags over `/v1/flags`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::{Format, print_table};
use crate::client::{Client, ClientError};

#[derive(Debug, Args)]
pub struct FlagsArgs {
    #[command(subcommand)]
    pub command: FlagsCommand,
}

#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// List every flag.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one flag's definition.
    Get {
        key: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Create or change a flag. Options left out keep their current value
    /// (a new flag needs --enabled and --rollout).
    Set(SetArgs),
    /// Decide a flag for a user, as this agent does.
    Eval {
        key: String,
        /// The user id the rollout hashes.
        #[arg(long)]
        user: Option<String>,
        /// The service asking [default: the services on this agent].
        #[arg(long)]
        service: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a flag.
    Rm { key: String },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub key: String,
    /// Master switch.
    #[arg(long, value_name = "true|false")]
    pub enabled: Option<bool>,
    /// Share of users who get the flag, 0 to 100 (fractions allowed).
    #[arg(long, value_name = "PERCENT", value_parser = rollout_percent)]
    pub rollout: Option<f64>,
    /// Users who always get the flag while it is enabled (comma-separated;
    /// an empty value clears the list).
    #[arg(long, value_name = "USERS")]
    pub allow: Option<String>,
    /// Users who never get the flag.
    #[arg(long, value_name = "USERS")]
    pub deny: Option<String>,
    /// Only these services.
    #[arg(long, value_name = "NAMES")]
    pub services: Option<String>,
    /// Only agents whose node tag `env` is one of these.
    #[arg(long, value_name = "NAMES")]
    pub environments: Option<String>,
    /// Only agents with this node tag; repeat for several (all must match).
    #[arg(long = "node-tag", value_name = "KEY=VALUE")]
    pub node_tags: Vec<String>,
    /// Drop every node-tag condition before adding --node-tag ones.
    #[arg(long)]
    pub clear_node_tags: bool,
    #[arg(long)]
    pub description: Option<String>,
}

pub fn run(client: &Client, args: &FlagsArgs) -> anyhow::Result<()> {
    match &args.command {
        FlagsCommand::Ls { format } => ls(client, *format),
        FlagsCommand::Get { key, format } => get(client, key, *format),
        FlagsCommand::Set(set_args) => set(client, set_args),
        FlagsCommand::Eval {
            key,
            user,
            service,
            format,
        } => eval(client, key, user.as_deref(), service.as_deref(), *format),
        FlagsCommand::Rm { key } => {
            client.delete(&flag_path(key))?;
            println!("Flag {key} deleted");
            Ok(())
        }
    }
}

fn flag_path(key: &str) -> String {
    format!("/v1/flags/{}", encode(key))
}

/// Percent-encodes everything but unreserved URL characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

fn list(value: &Value) -> String {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn targeting(definition: &Value) -> String {
    let mut parts = Vec::new();
    for (field, label) in [("services", "service"), ("environments", "env")] {
        let values = list(&definition[field]);
        if !values.is_empty() {
            parts.push(format!("{label}={values}"));
        }
    }
    if let Some(tags) = definition["node_tags"].as_object() {
        for (tag, value) in tags {
            parts.push(format!("tag:{tag}={}", value.as_str().unwrap_or_default()));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn ls(client: &Client, format: Format) -> anyhow::Result<()> {
    let flags = client.get_json("/v1/flags")?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&flags)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = flags
        .as_array()
        .into_iter()
        .flatten()
        .map(|flag| {
            let key = flag["key"].as_str().unwrap_or_default().to_string();
            let definition = &flag["definition"];
            if definition.is_null() {
                let error = flag["error"].as_str().unwrap_or_default();
                return vec![key, "invalid".into(), "-".into(), "-".into(), error.into()];
            }
            vec![
                key,
                definition["enabled"].to_string(),
                format!("{}%", definition["rollout_percentage"]),
                targeting(definition),
                definition["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ]
        })
        .collect();
    print_table(
        &["Key", "Enabled", "Rollout", "Targeting", "Description"],
        &rows,
    );
    Ok(())
}

fn get(client: &Client, key: &str, format: Format) -> anyhow::Result<()> {
    let flag = client.get_json(&flag_path(key))?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&flag)?);
        return Ok(());
    }
    let definition = &flag["definition"];
    if definition.is_null() {
        anyhow::bail!(
            "flag {key} is stored but invalid: {}",
            flag["error"].as_str().unwrap_or_default()
        );
    }
    let mut rows = vec![
        vec!["key".to_string(), key.to_string()],
        vec!["enabled".into(), definition["enabled"].to_string()],
        vec![
            "rollout_percentage".into(),
            definition["rollout_percentage"].to_string(),
        ],
    ];
    for field in ["allow_users", "deny_users", "services", "environments"] {
        rows.push(vec![field.to_string(), list(&definition[field])]);
    }
    rows.push(vec![
        "node_tags".into(),
        super::key_values(&definition["node_tags"]),
    ]);
    rows.push(vec![
        "description".into(),
        definition["description"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ]);
    print_table(&["Field", "Value"], &rows);
    Ok(())
}

fn split_list(text: &str) -> Value {
    json!(
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect::<Vec<_>>()
    )
}

/// `--rollout`, checked here so that the error names the option the user
/// typed (the API's would name its field, `rollout_percentage`).
fn rollout_percent(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches('%').parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(percent),
        Ok(_) => Err("must be a percentage from 0 to 100 (fractions allowed)".to_string()),
        Err(_) => {
            Err("not a number: give a percentage from 0 to 100, such as 25 or 2.5".to_string())
        }
    }
}

fn set(client: &Client, args: &SetArgs) -> anyhow::Result<()> {
    // Start from the current definition so that `set KEY --rollout 50`
    // changes only the rollout.
    let mut body: Map<String, Value> = match client.get_json(&flag_path(&args.key)) {
        Ok(flag) => flag["definition"].as_object().cloned().unwrap_or_default(),
        Err(ClientError::Status { status: 404, .. }) => Map::new(),
        Err(error) => return Err(error.into()),
    };
    if let Some(enabled) = args.enabled {
        body.insert("enabled".into(), json!(enabled));
    }
    if let Some(rollout) = args.rollout {
        body.insert("rollout_percentage".into(), json!(rollout));
    }
    for (field, value) in [
        ("allow_users", &args.allow),
        ("deny_users", &args.deny),
        ("services", &args.services),
        ("environments", &args.environments),
    ] {
        if let Some(text) = value {
            body.insert(field.into(), split_list(text));
        }
    }
    if args.clear_node_tags || !args.node_tags.is_empty() {
        let mut tags = if args.clear_node_tags {
            Map::new()
        } else {
            body.get("node_tags")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        for text in &args.node_tags {
            let (tag, value) = text
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--node-tag: `{text}` is not KEY=VALUE"))?;
            tags.insert(tag.trim().to_string(), json!(value.trim()));
        }
        body.insert("node_tags".into(), Value::Object(tags));
    }
    if let Some(description) = &args.description {
        body.insert("description".into(), json!(description));
    }
    let stored = client.put_json(&flag_path(&args.key), &Value::Object(body))?;
    let definition = &stored["definition"];
    println!(
        "Flag {} set: enabled={} rollout={}%",
        args.key, definition["enabled"], definition["rollout_percentage"]
    );
    Ok(())
}

fn eval(
    client: &Client,
    key: &str,
    user: Option<&str>,
    service: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(user) = user {
        query.push(format!("user={}", encode(user)));
    }
    if let Some(service) = service {
        query.push(format!("service={}", encode(service)));
    }
    let mut path = flag_path(key);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let answer = client.get_json(&path)?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let decision = if answer["enabled"].as_bool() == Some(true) {
        "on"
    } else {
        "off"
    };
    print_table(
        &["Key", "User", "Decision", "Reason"],
        &[vec![
            key.to_string(),
            user.unwrap_or("-").to_string(),
            decision.to_string(),
            answer["reason"].as_str().unwrap_or_default().to_string(),
        ]],
    );
    Ok(())
}
