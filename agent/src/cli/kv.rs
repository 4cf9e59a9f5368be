//! `shoal kv get|put|delete|ls|watch|quarantine|export|import`: the
//! replicated KV store, with Consul's habits (`put KEY @file`, `put KEY -`,
//! `get -recurse`, `get -keys`).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{Format, print_table};
use crate::client::Client;

#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print a key's value (or, as `consul kv get`, every `key:value` under
    /// a prefix with --recurse, or the keys under it with --keys).
    Get {
        #[arg(default_value = "")]
        key: String,
        /// Print the entry's metadata as JSON instead of the bare value.
        #[arg(long)]
        detailed: bool,
        /// Every entry under KEY as a prefix, one `key:value` per line.
        #[arg(long, conflicts_with = "keys")]
        recurse: bool,
        /// The keys under KEY as a prefix, rolled up at --separator.
        #[arg(long)]
        keys: bool,
        /// With --keys: roll keys up at this string ("" lists every key).
        #[arg(long, default_value = "/", requires = "keys")]
        separator: String,
    },
    /// Set a key (answers once the write is durable on this agent).
    Put {
        key: String,
        /// The value; `@FILE` reads it from FILE, `-` (or leaving it out)
        /// from standard input.
        value: Option<String>,
        /// Opaque flags stored with the value.
        #[arg(long)]
        flags: Option<u64>,
        /// Only write if the key's ModifyIndex is this (0: only if absent).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a key, or with --recurse every key under a prefix.
    Delete {
        key: String,
        #[arg(long)]
        recurse: bool,
    },
    /// List keys under a prefix.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        /// Every key under the prefix, not rolled up at '/'.
        #[arg(long)]
        recurse: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print every change under a prefix as it happens (Ctrl-C to stop).
    Watch {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print every entry under a prefix as Consul's `kv export` JSON
    /// (`[{"key", "flags", "value" (base64)}]`).
    Export {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Write the entries of a `kv export` JSON document: `@FILE`, `-` for
    /// standard input (the default), or the JSON itself.
    Import {
        #[arg(default_value = "-")]
        data: String,
        /// Put this in front of every imported key.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// List the values a delete remembered by a peer replaced on this agent
    /// (it had missed the delete), or clear them with --clear.
    Quarantine {
        /// Forget every quarantined value (needs the API token if one is set).
        #[arg(long)]
        clear: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub(super) fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value a `put` writes: the argument itself, the contents of the
/// file after `@`, or standard input for `-` or no argument (Consul's rules).
pub(super) fn value_from(argument: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match argument {
        None | Some("-") => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading the value from standard input")?;
            Ok(bytes)
        }
        Some("@") => anyhow::bail!(
            "value `@` names no file: write `@FILE` to read the value from FILE, or `-` for standard input"
        ),
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| {
                format!("cannot read the value from file `{path}` (given as `{text}`)")
            }),
            None => Ok(text.as_bytes().to_vec()),
        },
    }
}

fn decode_value(entry: &Value) -> String {
    entry["Value"]
        .as_str()
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

pub fn run(client: &Client, args: &KvArgs) -> anyhow::Result<()> {
    match &args.command {
        KvCommand::Get {
            key, recurse: true, ..
        } => {
            for entry in list_or_empty(client, &format!("/v1/kv/{}?recurse", encode_key(key)))?
                .as_array()
                .into_iter()
                .flatten()
            {
                println!(
                    "{}:{}",
                    entry["Key"].as_str().unwrap_or_default(),
                    decode_value(entry)
                );
            }
        }
        KvCommand::Get {
            key,
            keys: true,
            separator,
            ..
        } => {
            let mut path = format!("/v1/kv/{}?keys", encode_key(key));
            if !separator.is_empty() {
                path.push_str(&format!("&separator={}", encode_key(separator)));
            }
            for key in list_or_empty(client, &path)?
                .as_array()
                .into_iter()
                .flatten()
            {
                println!("{}", key.as_str().unwrap_or_default());
            }
        }
        KvCommand::Get { key, detailed, .. } => {
            let entries = client.get_json(&format!("/v1/kv/{}", encode_key(key)))?;
            let entry = &entries[0];
            if *detailed {
                println!("{}", serde_json::to_string_pretty(entry)?);
            } else {
                println!("{}", decode_value(entry));
            }
        }
        KvCommand::Put {
            key,
            value,
            flags,
            cas,
        } => {
            let value = value_from(value.as_deref())?;
            let mut path = format!("/v1/kv/{}?", encode_key(key));
            if let Some(flags) = flags {
                path.push_str(&format!("flags={flags}&"));
            }
            if let Some(cas) = cas {
                path.push_str(&format!("cas={cas}&"));
            }
            let written = client.put_bytes(path.trim_end_matches(['?', '&']), &value)?;
            if written == Value::Bool(true) {
                println!("Success! Data written to: {key}");
            } else {
                anyhow::bail!(
                    "not written: the key's ModifyIndex is not {}",
                    cas.unwrap_or_default()
                );
            }
        }
        KvCommand::Delete { key, recurse } => {
            let path = format!(
                "/v1/kv/{}{}",
                encode_key(key),
                if *recurse { "?recurse" } else { "" }
            );
            client.delete(&path)?;
            println!(
                "Success! Deleted key{}: {key}",
                if *recurse { "s under" } else { "" }
            );
        }
        KvCommand::Ls {
            prefix,
            recurse,
            format,
        } => {
            let path = if *recurse {
                format!("/v1/kv/{}?recurse", encode_key(prefix))
            } else {
                format!("/v1/kv/{}?keys&separator=/", encode_key(prefix))
            };
            let listing = list_or_empty(client, &path)?;
            match (format, recurse) {
                (Format::Json, _) => println!("{}", serde_json::to_string_pretty(&listing)?),
                (Format::Table, true) => {
                    let rows: Vec<Vec<String>> = listing
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            vec![
                                e["Key"].as_str().unwrap_or_default().to_string(),
                                decode_value(e),
                                e["ModifyIndex"].to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["Key", "Value", "ModifyIndex"], &rows);
                }
                (Format::Table, false) => {
                    for key in listing.as_array().into_iter().flatten() {
                        println!("{}", key.as_str().unwrap_or_default());
                    }
                }
            }
        }
        KvCommand::Watch { prefix } => watch(client, prefix)?,
        KvCommand::Export { prefix } => super::kv_transfer::export(client, prefix)?,
        KvCommand::Import { data, prefix } => super::kv_transfer::import(client, data, prefix)?,
        KvCommand::Quarantine { clear, format } => quarantine(client, *clear, *format)?,
    }
    Ok(())
}

/// A listing under a prefix; an empty array when nothing is there (the API
/// answers 404).
pub(super) fn list_or_empty(client: &Client, path: &str) -> anyhow::Result<Value> {
    match client.get_json(path) {
        Ok(listing) => Ok(listing),
        Err(crate::client::ClientError::Status { status: 404, .. }) => Ok(Value::Array(Vec::new())),
        Err(error) => Err(error.into()),
    }
}

/// `shoal kv quarantine [--clear]`.
fn quarantine(client: &Client, clear: bool, format: Format) -> anyhow::Result<()> {
    const PATH: &str = "/v1/shoal/kv/quarantine";
    if clear {
        let answer = client.delete(PATH)?;
        println!(
            "Cleared {} quarantined value(s).",
            answer["Cleared"].as_u64().unwrap_or_default()
        );
        return Ok(());
    }
    let listing = client.get_json(PATH)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&listing)?),
        Format::Table => {
            let since = |seconds: &Value| {
                let seconds = seconds.as_f64().unwrap_or_default();
                let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0));
                humantime::format_rfc3339_seconds(at).to_string()
            };
            let rows: Vec<Vec<String>> = listing
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| {
                    vec![
                        item["Key"].as_str().unwrap_or_default().to_string(),
                        decode_value(item),
                        since(&item["WrittenAt"]),
                        since(&item["DeletedAt"]),
                    ]
                })
                .collect();
            print_table(&["Key", "Value", "Written", "Deleted"], &rows);
        }
    }
    Ok(())
}

/// Blocking queries in a loop: prints `key = value` for every change, and
/// `key (deleted)` for keys that disappear.
fn watch(client: &Client, prefix: &str) -> anyhow::Result<()> {
    let mut known: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    let mut index = 0u64;
    loop {
        let path = format!(
            "/v1/kv/{}?recurse&index={index}&wait=60s",
            encode_key(prefix)
        );
        let (next, listing) = match client.get_json_with_index(&path) {
            Ok(pair) => pair,
            Err(crate::client::ClientError::Status {
                status: 404,
                index: Some(next),
                ..
            }) => (next, Value::Array(Vec::new())),
            Err(error) => return Err(error.into()),
        };
        let mut seen = std::collections::BTreeSet::new();
        for entry in listing.as_array().into_iter().flatten() {
            let key = entry["Key"].as_str().unwrap_or_default().to_string();
            let modify = entry["ModifyIndex"].as_u64().unwrap_or_default();
            let value = decode_value(entry);
            seen.insert(key.clone());
            if known.get(&key).map(|(m, _)| *m) != Some(modify) {
                println!("{key} = {value}");
                known.insert(key, (modify, value));
            }
        }
        let gone: Vec<String> = known
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            println!("{key} (deleted)");
            known.remove(&key);
        }
        std::io::stdout().flush().ok();
        if next == index {
            std::thread::sleep(Duration::from_millis(200));
        }
        index = next;
    }
}
