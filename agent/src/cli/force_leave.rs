//! `shoal force-leave [-prune] NODE`: as `consul force-leave`, moves a
//! failed member to left on every agent, or (`-prune`) removes it from
//! every agent's member list now.

use clap::Args;

use super::services::encode;
use crate::client::Client;

#[derive(Debug, Args)]
pub struct ForceLeaveArgs {
    /// Remove the member (failed or left) from every agent's member list
    /// now, rather than after `gossip.tombstone_timeout`. Consul's
    /// single-dash `-prune` works too.
    #[arg(long)]
    pub prune: bool,
    /// A member of the WAN pool (named `node.dc`); the agent must be a WAN
    /// member. Consul's single-dash `-wan` works too.
    #[arg(long)]
    pub wan: bool,
    /// The member's node name, as `shoal members` lists it.
    #[arg(value_name = "NODE", required = true, num_args = 1..=2, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

pub fn run(client: &Client, args: &ForceLeaveArgs) -> anyhow::Result<()> {
    let mut prune = args.prune;
    let mut wan = args.wan;
    let mut nodes = Vec::new();
    for word in &args.words {
        match word.as_str() {
            "-prune" => prune = true,
            "-wan" => wan = true,
            flag if flag.starts_with('-') => {
                anyhow::bail!(
                    "{flag}: unknown flag (usage: shoal force-leave [-prune] [-wan] NODE)"
                )
            }
            node => nodes.push(node),
        }
    }
    let [node] = nodes[..] else {
        anyhow::bail!("A single node name must be specified to force leave.");
    };
    let query = match (prune, wan) {
        (true, true) => "?prune&wan=1",
        (true, false) => "?prune",
        (false, true) => "?wan=1",
        (false, false) => "",
    };
    client.put(&format!("/v1/agent/force-leave/{}{query}", encode(node)))?;
    if prune {
        println!("Member `{node}` removed from every agent's member list.");
    } else {
        println!("Member `{node}` is now left on every agent.");
    }
    Ok(())
}
