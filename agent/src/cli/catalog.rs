//! `shoal catalog nodes|services|datacenters`: the catalog as
//! `consul catalog` prints it.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{Format, print_table};
use crate::client::Client;

#[derive(Debug, Args)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub command: CatalogCommand,
    /// Output format.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// The nodes of the catalog: name, ID, address, datacenter.
    Nodes,
    /// The names of the catalog's services (with --tags, their tags).
    Services {
        /// Show each service's tags.
        #[arg(long)]
        tags: bool,
    },
    /// The datacenters known (Shoal's cluster is one datacenter).
    Datacenters,
}

pub fn run(client: &Client, args: &CatalogArgs) -> anyhow::Result<()> {
    let path = match args.command {
        CatalogCommand::Nodes => "/v1/catalog/nodes",
        CatalogCommand::Services { .. } => "/v1/catalog/services",
        CatalogCommand::Datacenters => "/v1/catalog/datacenters",
    };
    let answer = client.get_json(path)?;
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
    match args.command {
        CatalogCommand::Nodes => {
            let rows: Vec<Vec<String>> = answer
                .as_array()
                .into_iter()
                .flatten()
                .map(|node| {
                    // Consul prints the first 8 characters of the node ID.
                    let id: String = text(&node["ID"]).chars().take(8).collect();
                    vec![
                        text(&node["Node"]),
                        id,
                        text(&node["Address"]),
                        text(&node["Datacenter"]),
                    ]
                })
                .collect();
            print_table(&["Node", "ID", "Address", "DC"], &rows);
        }
        CatalogCommand::Services { tags } => {
            for (name, service_tags) in answer.as_object().into_iter().flatten() {
                if tags {
                    let tags: Vec<String> = service_tags
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    println!("{name}  {}", tags.join(","));
                } else {
                    println!("{name}");
                }
            }
        }
        CatalogCommand::Datacenters => {
            for datacenter in answer.as_array().into_iter().flatten() {
                println!("{}", text(datacenter));
            }
        }
    }
    Ok(())
}
