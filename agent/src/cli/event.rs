//! `shoal event NAME [PAYLOAD]`: fires a user event, as `consul event`
//! (and `serf event`) do.

use clap::Args;

use crate::client::Client;

#[derive(Debug, Args)]
pub struct EventArgs {
    /// The event's name.
    pub name: String,
    /// The payload (at most 512 bytes).
    pub payload: Option<String>,
    /// Only nodes whose name matches this regular expression.
    #[arg(long)]
    pub node: Option<String>,
    /// Only nodes with a service whose name matches this regular expression.
    #[arg(long)]
    pub service: Option<String>,
    /// With `--service`: only if that service has a tag matching this.
    #[arg(long)]
    pub tag: Option<String>,
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn run(client: &Client, args: &EventArgs) -> anyhow::Result<()> {
    let mut path = format!("/v1/event/fire/{}", encode(&args.name));
    let filters = [
        ("node", &args.node),
        ("service", &args.service),
        ("tag", &args.tag),
    ];
    let query: Vec<String> = filters
        .iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={}", encode(v))))
        .collect();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let payload = args.payload.as_deref().unwrap_or_default();
    let event = client.put_bytes(&path, payload.as_bytes())?;
    println!("Event ID: {}", event["ID"].as_str().unwrap_or("(none)"));
    Ok(())
}
