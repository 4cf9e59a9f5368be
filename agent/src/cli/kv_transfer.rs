//! `shoal kv export [PREFIX]` and `shoal kv import [@FILE|-|JSON]`: move
//! a KV tree in Consul's `kv export` format, a JSON array of
//! `{"key": ..., "flags": ..., "value": base64}`, so a tree exported from
//! Consul imports into Shoal and the other way round.

use anyhow::Context;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::kv::{encode_key, list_or_empty};
use crate::client::Client;

/// One entry, as Consul's `impexp.Entry` spells it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: String,
    #[serde(default)]
    flags: u64,
    /// Base64 of the value's bytes.
    value: String,
}

/// `shoal kv export [PREFIX]`.
pub fn export(client: &Client, prefix: &str) -> anyhow::Result<()> {
    // Consul strips a leading `/` for the user: keys never start with one.
    let prefix = prefix.trim_start_matches('/');
    let listing = list_or_empty(client, &format!("/v1/kv/{}?recurse", encode_key(prefix)))?;
    let entries: Vec<Entry> = listing
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| Entry {
            key: entry["Key"].as_str().unwrap_or_default().to_string(),
            flags: entry["Flags"].as_u64().unwrap_or_default(),
            value: entry["Value"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&entries)?);
    Ok(())
}

/// `shoal kv import [--prefix P] [@FILE|-|JSON]`: the whole document is
/// checked (JSON shape, base64 of every value) before the first write, so
/// a bad one changes nothing.
pub fn import(client: &Client, data: &str, prefix: &str) -> anyhow::Result<()> {
    let text = if data == "-" || data.starts_with('@') {
        String::from_utf8(super::kv::value_from(Some(data))?)
            .context("the import data is not UTF-8 text")?
    } else {
        data.to_string()
    };
    let entries: Vec<Entry> = serde_json::from_str(&text).context(
        "the import data is not a `kv export` JSON array of {\"key\", \"flags\", \"value\" (base64)}",
    )?;
    let mut decoded = Vec::with_capacity(entries.len());
    for (position, entry) in entries.iter().enumerate() {
        let value = base64::engine::general_purpose::STANDARD
            .decode(&entry.value)
            .with_context(|| {
                format!(
                    "entry {position} (key `{}`): `value` is not base64",
                    entry.key
                )
            })?;
        decoded.push((format!("{prefix}{}", entry.key), entry.flags, value));
    }
    for (key, flags, value) in decoded {
        client
            .put_bytes(
                &format!("/v1/kv/{}?flags={flags}", encode_key(&key)),
                &value,
            )
            .with_context(|| format!("importing `{key}`"))?;
        println!("Imported: {key}");
    }
    Ok(())
}
