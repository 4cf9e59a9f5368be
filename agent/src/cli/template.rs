//! `shoal template render FILE`: what a template would render now on the
//! agent (a dry run: no file is written, no command runs).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::Client;

#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    pub command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Print what FILE renders to now, from the agent's catalog and KV.
    Render {
        /// The template (Jinja2); `-` reads standard input.
        file: PathBuf,
        /// Let env() read the agent's environment (needs the agent's
        /// token: the environment may hold secrets).
        #[arg(long)]
        env: bool,
    },
}

pub fn run(client: &Client, args: &TemplateArgs) -> anyhow::Result<()> {
    let TemplateCommand::Render { file, env } = &args.command;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the template from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the template {}", file.display()))?
    };
    let path = if *env {
        "/v1/shoal/template/render-env"
    } else {
        "/v1/shoal/template/render"
    };
    let rendered = client.send_json("POST", path, &json!({ "template": text }))?;
    let output = rendered["output"].as_str().unwrap_or_default();
    std::io::stdout().write_all(output.as_bytes())?;
    Ok(())
}
