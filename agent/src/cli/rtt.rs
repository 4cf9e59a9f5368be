//! `shoal rtt NODE [NODE]`: as `consul rtt`, the round trip between two
//! nodes estimated from their network coordinates (the second defaults to
//! the agent's own node).

use clap::Args;
use serde_json::Value;
use shoal_protocol::coordinate::{Coordinate, CoordinateConfig, DIMENSIONS};

use super::services::encode;
use crate::client::Client;

#[derive(Debug, Args)]
pub struct RttArgs {
    /// The node to measure from.
    #[arg(value_name = "NODE")]
    pub first: String,
    /// The node to measure to (default: the agent's own).
    #[arg(value_name = "NODE")]
    pub second: Option<String>,
}

pub fn run(client: &Client, args: &RttArgs) -> anyhow::Result<()> {
    let second = match &args.second {
        Some(node) => node.clone(),
        None => client.get_json("/v1/agent/self")?["Config"]["NodeName"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("the agent did not say its node name"))?,
    };
    let first_coordinate = coordinate_of(client, &args.first)?;
    let second_coordinate = coordinate_of(client, &second)?;
    let rtt = first_coordinate.distance_to(&second_coordinate);
    println!(
        "Estimated {} <-> {second} rtt: {:.3} ms (using LAN coordinates)",
        args.first,
        rtt.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The node's coordinate as the agent serves it.
fn coordinate_of(client: &Client, node: &str) -> anyhow::Result<Coordinate> {
    let answer = client
        .get_json(&format!("/v1/coordinate/node/{}", encode(node)))
        .map_err(|error| {
            anyhow::anyhow!("could not find a coordinate for node `{node}`: {error}")
        })?;
    let coord = &answer[0]["Coord"];
    parse(coord)
        .ok_or_else(|| anyhow::anyhow!("the agent's coordinate for `{node}` is malformed: {coord}"))
}

fn parse(coord: &Value) -> Option<Coordinate> {
    let vec = coord["Vec"].as_array()?;
    if vec.len() != DIMENSIONS {
        return None;
    }
    let mut coordinate = Coordinate::new(&CoordinateConfig::default());
    for (component, value) in coordinate.vec.iter_mut().zip(vec) {
        *component = value.as_f64()?;
    }
    coordinate.error = coord["Error"].as_f64()?;
    coordinate.adjustment = coord["Adjustment"].as_f64()?;
    coordinate.height = coord["Height"].as_f64()?;
    coordinate.check(&CoordinateConfig::default()).ok()?;
    Some(coordinate)
}
