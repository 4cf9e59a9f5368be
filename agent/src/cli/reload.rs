//! `shoal reload`: loads the agent's config file again (as SIGHUP does).

use crate::client::Client;

pub fn run(client: &Client) -> anyhow::Result<()> {
    let reloaded = client.put("/v1/agent/reload")?;
    println!(
        "Configuration reloaded: {} services, {} checks, log level {}",
        reloaded["services"],
        reloaded["checks"],
        reloaded["log_level"].as_str().unwrap_or_default()
    );
    let needs_restart: Vec<&str> = reloaded["needs_restart"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|key| key.as_str())
        .collect();
    if !needs_restart.is_empty() {
        println!(
            "Needs a restart to take effect (still running the old values): {}",
            needs_restart.join(", ")
        );
    }
    Ok(())
}
