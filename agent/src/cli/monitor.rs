//! `shoal monitor`: follows the agent's log (`GET /v1/agent/monitor`), as
//! `consul monitor` does, at a level of its own that may be more verbose
//! than the agent's `log_level`.

use std::io::{BufRead, BufReader, Write};

use anyhow::Context;
use clap::Args;

use crate::client::Client;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// trace, debug, info, warn or error: the least severe lines shown.
    #[arg(long = "log-level", value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(client: &Client, args: &MonitorArgs) -> anyhow::Result<()> {
    if crate::api::monitor::parse_level(&args.log_level).is_none() {
        anyhow::bail!(
            "--log-level: unknown level `{}`; use trace, debug, info, warn or error",
            args.log_level
        );
    }
    let mut path = format!(
        "/v1/agent/monitor?loglevel={}",
        args.log_level.to_ascii_lowercase()
    );
    if args.json {
        path.push_str("&logjson");
    }
    let stream = client.get_stream(&path)?;
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(stream).lines() {
        let line = line.context("the agent's log stream broke off")?;
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    Ok(())
}
