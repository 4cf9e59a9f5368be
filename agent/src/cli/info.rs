//! `shoal info`: this agent's identity and counters, like `consul info`.

use clap::Args;
use serde_json::Value;

use super::Format;
use crate::client::Client;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(client: &Client, args: &InfoArgs) -> anyhow::Result<()> {
    let me = client.get_json("/v1/agent/self")?;
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&me)?);
        return Ok(());
    }
    let mut sections: Vec<(&str, &Value)> = vec![("config", &me["Config"])];
    if let Some(stats) = me["Stats"].as_object() {
        sections.extend(stats.iter().map(|(name, value)| (name.as_str(), value)));
    }
    for (name, section) in sections {
        println!("{name}:");
        if let Some(fields) = section.as_object() {
            for (key, value) in fields {
                let shown = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                println!("\t{key} = {shown}");
            }
        }
    }
    Ok(())
}
