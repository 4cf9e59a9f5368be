//! `shoal join [-wan] ADDR...`: as `consul join`, asks the agent to join
//! the cluster (with `-wan`, on a WAN member, the WAN pool) through each
//! address, and says how many answered.

use clap::Args;

use super::services::encode;
use crate::client::Client;

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Join the WAN pool (the agent must be a WAN member, `--wan`); an IP
    /// alone then means port 8302. Consul's single-dash `-wan` works too.
    #[arg(long)]
    pub wan: bool,
    /// Gossip addresses of agents already in the cluster: IP:PORT,
    /// [v6]:PORT, host:PORT, or an IP alone for the default gossip port
    /// (7946).
    // The text is the `--help` output as well: `[v6]` stays as written
    // rather than becoming a link rustdoc can't resolve.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(value_name = "ADDR", required = true, num_args = 1.., allow_hyphen_values = true)]
    pub addresses: Vec<String>,
}

pub fn run(client: &Client, args: &JoinArgs) -> anyhow::Result<()> {
    let mut wan = args.wan;
    let mut addresses = Vec::new();
    for word in &args.addresses {
        match word.as_str() {
            "-wan" => wan = true,
            flag if flag.starts_with('-') => {
                anyhow::bail!("{flag}: unknown flag (usage: shoal join [-wan] ADDR...)")
            }
            address => addresses.push(address),
        }
    }
    let query = if wan { "?wan=1" } else { "" };
    let mut joined = 0;
    for address in addresses {
        match client.put(&format!("/v1/agent/join/{}{query}", encode(address))) {
            Ok(_) => joined += 1,
            Err(error) => eprintln!("Error joining address '{address}': {error}"),
        }
    }
    if joined == 0 {
        anyhow::bail!("Failed to join any nodes.");
    }
    println!("Successfully joined cluster by contacting {joined} nodes.");
    Ok(())
}
