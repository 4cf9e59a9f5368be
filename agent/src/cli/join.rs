//! `shoal join ADDR...`: as `consul join`, asks the agent to join the
//! cluster through each address, and says how many answered.

use clap::Args;

use super::services::encode;
use crate::client::Client;

#[derive(Debug, Args)]
pub struct JoinArgs {
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
    if let Some(flag) = args.addresses.iter().find(|word| word.starts_with('-')) {
        if flag.trim_start_matches('-') == "wan" {
            anyhow::bail!(
                "{flag}: not supported: Shoal has one gossip pool and no WAN federation between datacenters; leave it out"
            );
        }
        anyhow::bail!("{flag}: unknown flag (usage: shoal join ADDR...)");
    }
    let mut joined = 0;
    for address in &args.addresses {
        match client.put(&format!("/v1/agent/join/{}", encode(address))) {
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
