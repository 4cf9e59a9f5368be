//! Scenarios as data: the cluster, the network and a timeline of actions,
//! read from TOML (see `simulations/scenarios/`).
//!
//! ```toml
//! name = "partition"
//! seed = 7
//! nodes = 50
//! duration_s = 300.0
//!
//! [network]
//! loss = 0.01
//!
//! [[actions]]
//! at_s = 60.0
//! action = "partition"
//! split = 25
//!
//! [[actions]]
//! at_s = 70.0
//! action = "kv_bulk"
//! writes = 200
//! keys = 50
//! over_s = 20.0
//! ```

use std::path::Path;

use serde::Deserialize;
use shoal_protocol::kv::{MAX_VALUE, validate_key};

/// Why a scenario could not be used. Names the TOML key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("invalid scenario: `{key}` {problem}")]
    Invalid { key: String, problem: String },
}

/// One simulated run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used in reports and result file names.
    pub name: String,
    /// Seed of the one RNG everything random derives from.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Virtual seconds to simulate.
    pub duration_s: f64,
    /// How the cluster forms: `converged` (everyone already knows `view`
    /// members at t=0) or `join` (nodes start over the first
    /// `join_spread_s` seconds and join through the seeds).
    #[serde(default)]
    pub bootstrap: Bootstrap,
    /// Members each node knows at t=0 when `bootstrap = "converged"`;
    /// 0 means all of them. Needed at 10,000 nodes, where foca's linear
    /// member table makes full views cost O(N^3) to build.
    #[serde(default)]
    pub view: usize,
    /// Keep partial views partial: drop foca's periodic announce and the
    /// seed re-announce, whose replies would teach every node every member
    /// (foca gossips each member it learns). Only for the 10,000-node
    /// points, where full views cost O(N^3) to build; see the README.
    #[serde(default)]
    pub static_views: bool,
    /// Seconds over which nodes start when `bootstrap = "join"`.
    #[serde(default = "default_join_spread")]
    pub join_spread_s: f64,
    /// How many of the first nodes act as seeds.
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// Run anti-entropy exchanges (off for the largest sweeps: each one
    /// moves every record, and the fast path is what they measure).
    #[serde(default = "yes")]
    pub anti_entropy: bool,
    /// Lifeguard local health awareness (`GossipConfig::local_health`).
    #[serde(default = "yes")]
    pub local_health: bool,
    /// Lifeguard's dynamic suspicion starts a suspicion at this many times
    /// the fixed timeout (`GossipConfig::suspicion_max_mult`; 1 turns it
    /// off). Unset: the default, 6.
    #[serde(default)]
    pub suspicion_max_mult: Option<u32>,
    /// `Min`'s multiplier (`GossipConfig::suspicion_mult`). Unset: the
    /// default.
    #[serde(default)]
    pub suspicion_mult: Option<f64>,
    /// foca's TurnUndead on suspect->down (keep false; see DESIGN.md).
    #[serde(default)]
    pub notify_down_members: bool,
    /// How long a down member is remembered, failed or left
    /// (`GossipConfig::reconnect_timeout` and `tombstone_timeout`, 72 h
    /// and 24 h by default); its record is dropped after that.
    #[serde(default)]
    pub remove_down_after_s: Option<f64>,
    /// Newcomers check their name before offering their record, as agents
    /// do (`GossipConfig::check_name`): a node with seeds holds its record
    /// back until its first completed anti-entropy exchange. Off by default
    /// (see the field's docs); the cold-start scenarios turn it on.
    #[serde(default)]
    pub check_name: bool,
    /// Anti-entropy exchanges a node serves at once, as the agent's
    /// responder does (8); an exchange opened past it is refused, and the
    /// initiator hears nothing back, as a closed connection. 0: no limit.
    #[serde(default)]
    pub max_exchanges: usize,
    /// Whose timings the nodes gossip with: `lan` (the agent's `[gossip]`
    /// defaults) or `wan` (the WAN pool's, memberlist's WAN profile: probe
    /// every 5 s, suspicion multiplier 6, push-pull every 60 s).
    #[serde(default)]
    pub profile: Profile,
    /// Sampling period of the time series in the CSV, in seconds.
    #[serde(default = "default_sample")]
    pub sample_s: f64,
    /// Per-agent traffic is counted from this virtual second on (after a
    /// join has settled, say). Default 0: the whole run.
    #[serde(default)]
    pub traffic_from_s: f64,
    /// KV tombstones are collected (as the agent's `kv.tombstone_grace`)
    /// once this many seconds old, by every healthy node at a housekeeping
    /// round every `min(30, grace / 2)` seconds. Unset: never collected.
    #[serde(default)]
    pub tombstone_grace_s: Option<f64>,
    #[serde(default)]
    pub network: NetworkSpec,
    #[serde(default)]
    pub actions: Vec<TimedAction>,
}

/// The gossip timings a scenario's nodes use.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    #[default]
    Lan,
    Wan,
}

impl Profile {
    /// The timings, before a scenario's own settings.
    pub fn gossip(self) -> shoal_protocol::GossipConfig {
        match self {
            Profile::Lan => shoal_protocol::GossipConfig::default(),
            Profile::Wan => shoal_protocol::GossipConfig::wan(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Bootstrap {
    #[default]
    Converged,
    Join,
}

/// The simulated network. Every link gets a fixed extra latency drawn once
/// from `[0, spread_ms)`, plus fresh jitter from `[0, jitter_ms)` per packet.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default = "default_latency")]
    pub latency_ms: f64,
    #[serde(default = "default_spread")]
    pub spread_ms: f64,
    #[serde(default = "default_jitter")]
    pub jitter_ms: f64,
    /// Probability that any datagram is lost.
    #[serde(default)]
    pub loss: f64,
    /// Zones: round trips in ms between zone `i` and zone `j` (a square
    /// matrix; the diagonal is the round trip inside a zone). Node `n` is
    /// in zone `n % zones`; a link's one-way latency is half its zones'
    /// round trip (plus `spread_ms` as without zones). Empty: no zones.
    #[serde(default)]
    pub zone_rtt_ms: Vec<Vec<f64>>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            latency_ms: default_latency(),
            spread_ms: default_spread(),
            jitter_ms: default_jitter(),
            loss: 0.0,
            zone_rtt_ms: Vec::new(),
        }
    }
}

/// An action at a virtual time.
#[derive(Clone, Debug, Deserialize)]
pub struct TimedAction {
    /// Virtual time in seconds.
    pub at_s: f64,
    #[serde(flatten)]
    pub action: Action,
}

/// Things that happen to the cluster. Node numbers are 0-based.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The node changes its record (sets a tag): the state change whose
    /// dissemination is measured. `node = -1` picks one at random.
    Change { node: i64 },
    /// The node stops for good.
    Crash { node: usize },
    /// A crashed node starts again with a new generation.
    Restart { node: usize },
    /// Every node stops and starts again at once with a new generation (a
    /// datacenter's power cycle, a fleet-wide deploy).
    MassRestart,
    /// The node handles nothing for `seconds`, then everything queued (its
    /// timers first, as the agent's biased select does).
    Pause { node: usize, seconds: f64 },
    /// Every datagram sent to the node for `seconds` is lost, while what
    /// it sends gets through (one-way loss in bursts: a receive queue
    /// that overflows, a firewall rule flapping). Its exchanges still
    /// connect. The node counts as faulted.
    Deaf { node: usize, seconds: f64 },
    /// The node handles every datagram and exchange `delay_ms` (+ up to
    /// `jitter_ms`) late, while its timers fire on time: a core loop
    /// behind on its receive queue.
    Slow {
        node: usize,
        delay_ms: f64,
        #[serde(default)]
        jitter_ms: f64,
    },
    /// Ends `slow` for the node.
    Recover { node: usize },
    /// The node leaves gracefully.
    Leave { node: usize },
    /// Nodes `[0, split)` and `[split, N)` can no longer reach each other.
    Partition { split: usize },
    /// The nodes of zone `zone` (`network.zone_rtt_ms`) and every other
    /// node can no longer reach each other: a datacenter cut off. `heal`
    /// ends it.
    IsolateZone { zone: usize },
    /// Ends the partition.
    Heal,
    /// Changes the loss probability of every link.
    Loss { loss: f64 },
    /// Loss on the one-way link `from -> to` (asymmetric loss).
    LinkLoss { from: usize, to: usize, loss: f64 },
    /// Bursty loss on every link (Gilbert-Elliott, netem's `gemodel`):
    /// each one-way link is good or bad; before each datagram a good link
    /// turns bad with probability `enter` and a bad one good with
    /// `leave`; a bad link loses `loss_in_burst` of its datagrams, a good
    /// one the ordinary loss. `enter = 0` turns it off.
    BurstyLoss {
        enter: f64,
        leave: f64,
        loss_in_burst: f64,
    },
    /// One KV write through `Node::write_kv` on the node (`node = -1`: a
    /// random healthy one), as the agent makes it: its time is the virtual
    /// clock in NTP64 (past the key's current time), its writer the node's
    /// name. A write on a crashed, paused or departed node is refused.
    KvWrite {
        node: i64,
        key: String,
        value: String,
    },
    /// One KV delete (a tombstone), made as `kv_write` makes a write.
    KvDelete { node: i64, key: String },
    /// `writes` KV writes at random instants over the next `over_s`
    /// seconds, each on a random healthy node (or on `node`), to keys drawn
    /// at random from `keys` keys named `<prefix><n>`; every value is
    /// distinct, `value_bytes` long.
    KvBulk {
        writes: usize,
        keys: usize,
        #[serde(default)]
        over_s: f64,
        #[serde(default = "any_node")]
        node: i64,
        #[serde(default = "default_prefix")]
        prefix: String,
        #[serde(default = "default_value_bytes")]
        value_bytes: usize,
        /// The share of these operations that are deletes, in [0, 1].
        #[serde(default)]
        deletes: f64,
    },
    /// The node receives one forged datagram, claiming to come from the
    /// next node, that carries digest rumors (a KV write and a node record)
    /// which nobody holds, naming an address outside the cluster as where
    /// to fetch them: what anyone can send to a plaintext cluster.
    SpoofDigest { node: usize },
    /// The node stops and starts again at once under a new name (a new
    /// generation too): name churn, as containers come and go.
    Rename { node: usize },
}

fn any_node() -> i64 {
    -1
}
fn default_prefix() -> String {
    "bulk/".into()
}
fn default_value_bytes() -> usize {
    16
}
fn default_seed() -> u64 {
    1
}
fn default_join_spread() -> f64 {
    5.0
}
fn default_seeds() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn default_sample() -> f64 {
    1.0
}
fn default_latency() -> f64 {
    1.0
}
fn default_spread() -> f64 {
    1.0
}
fn default_jitter() -> f64 {
    0.5
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            ScenarioError::Parse { source, .. } => ScenarioError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates scenario TOML.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Parse {
            path: "<scenario>".into(),
            source: Box::new(source),
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks ranges and node numbers.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |key: &str, problem: String| {
            Err(ScenarioError::Invalid {
                key: key.into(),
                problem,
            })
        };
        if self.nodes < 2 {
            return invalid("nodes", format!("is {}, needs at least 2", self.nodes));
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 {
            return invalid("duration_s", "must be positive".into());
        }
        if self.seeds == 0 || self.seeds > self.nodes {
            return invalid("seeds", format!("must be in 1..={}", self.nodes));
        }
        let zones = &self.network.zone_rtt_ms;
        if zones.iter().any(|row| row.len() != zones.len()) {
            return invalid(
                "network.zone_rtt_ms",
                format!(
                    "must be a square matrix, one row per zone ({} rows)",
                    zones.len()
                ),
            );
        }
        if zones
            .iter()
            .flatten()
            .any(|rtt| !(rtt.is_finite() && *rtt >= 0.0))
        {
            return invalid(
                "network.zone_rtt_ms",
                "round trips must be 0 or more".into(),
            );
        }
        if let Some(grace) = self.tombstone_grace_s
            && (grace.is_nan() || grace <= 0.0)
        {
            return invalid("tombstone_grace_s", "must be positive".into());
        }
        if self.sample_s.is_nan() || self.sample_s <= 0.0 {
            return invalid("sample_s", "must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.network.loss) {
            return invalid("network.loss", "must be a probability in [0, 1]".into());
        }
        for (index, timed) in self.actions.iter().enumerate() {
            let key = format!("actions[{index}]");
            if !(0.0..=self.duration_s).contains(&timed.at_s) {
                return invalid(&format!("{key}.at_s"), "must lie within the run".into());
            }
            let nodes: Vec<usize> = match &timed.action {
                Action::Change { node }
                | Action::KvWrite { node, .. }
                | Action::KvDelete { node, .. }
                | Action::KvBulk { node, .. }
                    if *node >= 0 =>
                {
                    vec![*node as usize]
                }
                Action::Crash { node }
                | Action::Restart { node }
                | Action::Pause { node, .. }
                | Action::Deaf { node, .. }
                | Action::Slow { node, .. }
                | Action::Recover { node }
                | Action::Leave { node }
                | Action::SpoofDigest { node }
                | Action::Rename { node } => vec![*node],
                Action::Partition { split } => vec![*split],
                Action::LinkLoss { from, to, .. } => vec![*from, *to],
                _ => Vec::new(),
            };
            if let Some(node) = nodes.iter().find(|&&node| node >= self.nodes) {
                return invalid(
                    &key,
                    format!("names node {node}, the cluster has {}", self.nodes),
                );
            }
            if let Action::IsolateZone { zone } = timed.action
                && zone >= zones.len()
            {
                return invalid(
                    &format!("{key}.zone"),
                    format!("names zone {zone}, network.zone_rtt_ms has {}", zones.len()),
                );
            }
            if let Action::Loss { loss } | Action::LinkLoss { loss, .. } = timed.action
                && !(0.0..=1.0).contains(&loss)
            {
                return invalid(&format!("{key}.loss"), "must be a probability".into());
            }
            match &timed.action {
                Action::KvWrite { key: kv_key, .. } | Action::KvDelete { key: kv_key, .. } => {
                    if let Err(error) = validate_key(kv_key) {
                        return invalid(&format!("{key}.key"), error.to_string());
                    }
                }
                Action::KvBulk {
                    keys,
                    over_s,
                    prefix,
                    value_bytes,
                    deletes,
                    ..
                } => {
                    if !(0.0..=1.0).contains(deletes) {
                        return invalid(
                            &format!("{key}.deletes"),
                            "must be a share in [0, 1]".into(),
                        );
                    }
                    if *keys == 0 {
                        return invalid(&format!("{key}.keys"), "must be at least 1".into());
                    }
                    if over_s.is_nan() || *over_s < 0.0 {
                        return invalid(&format!("{key}.over_s"), "must be 0 or more".into());
                    }
                    if let Err(error) = validate_key(&format!("{prefix}{}", keys - 1)) {
                        return invalid(&format!("{key}.prefix"), error.to_string());
                    }
                    if *value_bytes > MAX_VALUE {
                        return invalid(
                            &format!("{key}.value_bytes"),
                            format!("exceeds the {MAX_VALUE}-byte value limit"),
                        );
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_names_the_bad_key() {
        let scenario = Scenario::parse(
            r#"
            name = "x"
            nodes = 10
            duration_s = 60
            [[actions]]
            at_s = 5
            action = "slow"
            node = 3
            delay_ms = 800
            [[actions]]
            at_s = 6
            action = "heal"
            "#,
        )
        .unwrap();
        assert_eq!(
            scenario.actions[0].action,
            Action::Slow {
                node: 3,
                delay_ms: 800.0,
                jitter_ms: 0.0
            }
        );
        let bad = Scenario::parse(
            "name='x'\nnodes=10\nduration_s=60\n[[actions]]\nat_s=1\naction='crash'\nnode=10\n",
        );
        assert!(bad.unwrap_err().to_string().contains("actions[0]"));
    }
}
