//! `shoal members [--status REGEX] [--detailed] [--wan]`: like `consul
//! members`.

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
    /// Every tag (the node ID too), the generation and the protocol
    /// versions, as `consul members -detailed` shows every tag.
    #[arg(long)]
    pub detailed: bool,
    /// The WAN pool's members (named `node.dc`), from a WAN member.
    #[arg(long)]
    pub wan: bool,
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
    let path = if args.wan {
        "/v1/agent/members?wan=1"
    } else {
        "/v1/agent/members"
    };
    let members = client.get_json(path)?;
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
                    // drown the operator's tags; `--detailed` and
                    // `--format json` show them.
                    let mut shown = member["Tags"].clone();
                    if let Some(tags) = shown.as_object_mut().filter(|_| !args.detailed) {
                        for reserved in shoal_protocol::record::RESERVED_TAGS {
                            tags.remove(reserved);
                        }
                    }
                    let tags = super::key_values(&shown);
                    let mut row = vec![
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
                    ];
                    if args.detailed {
                        row.push(member["Generation"].to_string());
                        row.push(format!(
                            "{}/{}/{}",
                            member["ProtocolMin"], member["ProtocolCur"], member["ProtocolMax"]
                        ));
                    }
                    row.push(tags);
                    row
                })
                .collect();
            let header: &[&str] = if args.detailed {
                &[
                    "Node",
                    "Address",
                    "Status",
                    "Generation",
                    "Protocol",
                    "Tags",
                ]
            } else {
                &["Node", "Address", "Status", "Tags"]
            };
            print_table(header, &rows);
            // An agent with seeds that never joined lists only itself,
            // alive: say so, with the reason, rather than look fine.
            if let Some(reason) = not_ready(client) {
                eprintln!("This agent is not ready: {reason}");
            }
        }
    }
    Ok(())
}

/// Why the agent is not ready (`/health/ready` answers 503), if it isn't.
fn not_ready(client: &Client) -> Option<String> {
    match client.get_json("/health/ready") {
        Err(crate::client::ClientError::Status {
            status: 503,
            message,
            ..
        }) => Some(
            serde_json::from_str::<Value>(&message)
                .ok()
                .and_then(|body| body["reason"].as_str().map(str::to_string))
                .unwrap_or(message),
        ),
        _ => None,
    }
}
