//! Shoal's deterministic cluster simulator: thousands of real
//! [`shoal_protocol::Node`]s on a virtual clock, with a simulated network
//! and faults, measured as a report.
//!
//! - [`scenario`]: scenarios as data (TOML): cluster, network, actions.
//! - [`network`]: latency, jitter, loss, asymmetric loss, partitions.
//! - [`sim`]: the event heap and the driver loop around each `Node`.
//! - `faults`: crash, restart, pause, slow, leave, and the observations
//!   taken after every call into a node.
//! - `kv`: KV writes through `Node::write_kv` and the check that every
//!   node converges to the last-writer-wins map.
//! - `peers`: a forged digest rumor, name churn, and what nodes hold
//!   because of them.
//! - [`metrics`]: dissemination, detection, false positives, convergence.
//! - [`report`]: the figures of a run, printed and as CSV.
//! - [`traffic`]: what each agent sends (UDP and TCP), median and busiest.
//! - [`sweep`]: the parameter sweeps behind `simulations/README.md`.
//! - [`plot`]: SVG charts of sweep results.

mod faults;
mod kv;
pub mod metrics;
pub mod network;
mod peers;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod sweep;
pub mod traffic;

pub use report::Report;
pub use scenario::Scenario;
pub use sim::Simulation;

/// Runs a scenario to the end and returns its report with the simulation
/// (for the time series).
pub fn run(scenario: Scenario) -> (Report, Simulation) {
    let mut sim = Simulation::new(scenario);
    sim.run();
    (Report::from_simulation(&sim), sim)
}
