//! `shoal leave`: graceful leave, then the agent stops.

use crate::client::Client;

pub fn run(client: &Client) -> anyhow::Result<()> {
    client.put("/v1/agent/leave")?;
    println!("Graceful leave complete");
    Ok(())
}
