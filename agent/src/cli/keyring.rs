//! `shoal keygen` and `shoal keyring list|install|use|remove`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Format, print_table};
use crate::client::Client;

#[derive(Debug, Args)]
pub struct KeyringArgs {
    #[command(subcommand)]
    pub command: KeyringCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// List this agent's keys; the primary one encrypts.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Install a key on every agent: it decrypts from now on.
    Install { key: String },
    /// Make an installed key the primary on every agent: it encrypts.
    Use { key: String },
    /// Remove a key (not the primary) from every agent.
    Remove { key: String },
}

/// `shoal keygen`: a new random 32-byte key, base64, from the OS RNG.
pub fn keygen() -> anyhow::Result<()> {
    let key: [u8; shoal_protocol::keyring::KEY_LEN] = rand::random();
    println!("{}", shoal_protocol::keyring::format_key(&key));
    Ok(())
}

pub fn run(client: &Client, args: &KeyringArgs) -> anyhow::Result<()> {
    let (method, key, done) = match &args.command {
        KeyringCommand::List { format } => return list(client, *format),
        KeyringCommand::Install { key } => ("POST", key, "Installed key"),
        KeyringCommand::Use { key } => ("PUT", key, "Changed primary key"),
        KeyringCommand::Remove { key } => ("DELETE", key, "Removed key"),
    };
    shoal_protocol::keyring::parse_key(key)?;
    client.send_json(method, "/v1/operator/keyring", &json!({ "Key": key }))?;
    println!("{done} (it reaches every agent through the replicated store)");
    Ok(())
}

fn list(client: &Client, format: Format) -> anyhow::Result<()> {
    let answer = client.get_json("/v1/operator/keyring")?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let ring = &answer[0];
    let primaries = ring["PrimaryKeys"].as_object().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = ring["Keys"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, _): (&String, &Value)| {
            let role = if primaries.contains_key(key) {
                "primary"
            } else {
                "installed"
            };
            vec![key.clone(), role.to_string()]
        })
        .collect();
    if rows.is_empty() {
        println!("Gossip encryption is off on this agent.");
    } else {
        print_table(&["Key", "Role"], &rows);
    }
    Ok(())
}
