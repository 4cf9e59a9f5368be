//! `shoal members`: like `consul members -detailed`.

use anyhow::Context;
use clap::Args;
use regex::Regex;
use serde_json::Value;

use super::{Format, print_table};
use crate::client::Client;

#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Only members whose status (alive, suspect, leaving, left, failed)
    /// matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub status: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(client: &Client, args: &MembersArgs) -> anyhow::Result<()> {
    let filter = args
        .status
        .as_deref()
        .map(|pattern| {
            Regex::new(&format!("^(?:{pattern})$"))
                .with_context(|| format!("--status: invalid regular expression `{pattern}`"))
        })
        .transpose()?;
    let members = client.get_json("/v1/agent/members")?;
    let members: Vec<Value> = members
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|member| {
            filter.as_ref().is_none_or(|regex| {
                regex.is_match(member["StatusText"].as_str().unwrap_or_default())
            })
        })
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&members)?),
        Format::Table => {
            let rows: Vec<Vec<String>> = members
                .iter()
                .map(|member| {
                    // The node ID (a UUID) and the wire versions would
                    // drown the operator's tags; `--format json` shows them.
                    let mut shown = member["Tags"].clone();
                    if let Some(tags) = shown.as_object_mut() {
                        for reserved in shoal_protocol::record::RESERVED_TAGS {
                            tags.remove(reserved);
                        }
                    }
                    let tags = super::key_values(&shown);
                    vec![
                        member["Name"].as_str().unwrap_or_default().to_string(),
                        format!(
                            "{}:{}",
                            member["Addr"].as_str().unwrap_or_default(),
                            member["Port"]
                        ),
                        member["StatusText"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        tags,
                    ]
                })
                .collect();
            print_table(&["Node", "Address", "Status", "Tags"], &rows);
        }
    }
    Ok(())
}
