//! Issue 20: no acknowledged write is ever dropped by a rule that can't
//! tell "deleted" from "never seen". Nodes split into sides for longer
//! than the tombstone grace, write and delete on either side, collect
//! their tombstones, and heal: every key ends as the last-writer-wins
//! winner of every write and delete ever made (a write no delete came
//! after is on every node; a delete holds everywhere).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use shoal_protocol::clock::ntp64;
use shoal_protocol::envelope::cluster_id;
use shoal_protocol::kv::KvEntry;
use shoal_protocol::{Envelope, GossipConfig, Node, NodeId, NodeRecord};

/// Some day in 2026, where every test clock starts.
const START: Duration = Duration::from_secs(1_780_000_000);
const GRACE: Duration = Duration::from_secs(3600);

fn node(index: usize) -> Node {
    let id = NodeId {
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + index as u16)),
        generation: 1,
    };
    let mut node = Node::new(
        NodeRecord::new(id, format!("node-{index}")),
        GossipConfig::default(),
        Envelope::new(cluster_id("no-lost-writes")),
        index as u64 + 1,
    );
    node.set_clock(START);
    node
}

/// One whole anti-entropy exchange, any number of pages.
fn exchange(nodes: &mut [Node], initiator: usize, responder: usize, now: Duration) {
    nodes[initiator].set_clock(now);
    nodes[responder].set_clock(now);
    let mut message = nodes[initiator].sync_open();
    let mut to = responder;
    for _ in 0..10_000 {
        match nodes[to].on_sync(message) {
            Some(answer) => message = answer,
            None => return,
        }
        to = if to == responder {
            initiator
        } else {
            responder
        };
    }
    panic!("the exchange does not end");
}

/// A write or delete on `node`, stamped as the agent stamps it: its clock,
/// past anything the node knows of the key.
fn write(node: &mut Node, key: &str, value: Option<&str>, now: Duration) -> KvEntry {
    node.set_clock(now);
    let after = node.kv().latest_time(key).saturating_add(1);
    let entry = KvEntry {
        key: key.into(),
        value: value.unwrap_or_default().as_bytes().to_vec(),
        flags: 0,
        time: ntp64(now).max(after),
        writer: node.local_record().name,
        deleted: value.is_none(),
    };
    node.write_kv(entry.clone()).expect("a fresh write applies");
    entry
}

fn live(node: &Node, key: &str) -> Option<Vec<u8>> {
    node.kv()
        .get(key)
        .filter(|stored| !stored.entry.deleted)
        .map(|stored| stored.entry.value.clone())
}

/// The review's case in the core: two sides of two, a write on one, a
/// delete of another key on the other, collected; then the heal.
#[test]
fn a_write_made_while_split_survives_a_delete_collected_on_the_other_side() {
    let mut nodes: Vec<Node> = (0..4).map(node).collect();
    let mut now = START;
    write(&mut nodes[2], "orders/old-7", Some("x"), now);
    for (a, b) in [(2, 0), (2, 1), (2, 3), (0, 1), (3, 1)] {
        exchange(&mut nodes, a, b, now);
    }
    // Split {0, 1} | {2, 3}.
    now += Duration::from_secs(10);
    write(&mut nodes[0], "orders/pending-42", Some("p"), now);
    exchange(&mut nodes, 0, 1, now);
    now += Duration::from_secs(10);
    write(&mut nodes[2], "orders/old-7", None, now);
    exchange(&mut nodes, 2, 3, now);
    now += 2 * GRACE;
    for (a, b) in [(0, 1), (2, 3)] {
        exchange(&mut nodes, a, b, now);
    }
    for node in &mut nodes {
        node.set_clock(now);
        node.collect_tombstones(GRACE);
    }
    assert!(nodes[2].kv().get("orders/old-7").is_none(), "collected");
    // Heal: a few rounds, every pair, both ways.
    for _ in 0..3 {
        for a in 0..4 {
            for b in 0..4 {
                if a != b {
                    exchange(&mut nodes, a, b, now);
                }
            }
        }
    }
    for node in &nodes {
        let name = node.local_record().name;
        assert_eq!(
            live(node, "orders/pending-42"),
            Some(b"p".to_vec()),
            "{name} lost the write"
        );
        assert_eq!(
            live(node, "orders/old-7"),
            None,
            "{name}: the delete came undone"
        );
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Write (`Some`) or delete (`None`) one of a few keys on a node.
    Write {
        node: usize,
        key: usize,
        value: Option<u8>,
    },
    /// An exchange between two nodes, if they are on the same side.
    Exchange { a: usize, b: usize },
    /// The sides change: node i is on side `sides[i]`.
    Split { sides: Vec<u8> },
    /// Time passes (past the grace when `long`) and every node collects.
    Collect { long: bool },
}

const NODES: usize = 4;
const KEYS: [&str; 5] = ["a", "b", "c/d", "c/e", "f"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..NODES, 0..KEYS.len(), proptest::option::weighted(0.7, 0u8..4))
            .prop_map(|(node, key, value)| Step::Write { node, key, value }),
        4 => (0..NODES, 0..NODES).prop_map(|(a, b)| Step::Exchange { a, b }),
        1 => proptest::collection::vec(0u8..2, NODES).prop_map(|sides| Step::Split { sides }),
        2 => any::<bool>().prop_map(|long| Step::Collect { long }),
    ]
}

/// Runs `steps`, then heals everything; returns the nodes and every write
/// and delete made, in order.
fn run(steps: &[Step]) -> (Vec<Node>, Vec<KvEntry>, Duration) {
    let mut nodes: Vec<Node> = (0..NODES).map(node).collect();
    let mut sides = vec![0u8; NODES];
    let mut now = START;
    let mut made = Vec::new();
    let mut long_collects = 0;
    for step in steps {
        now += Duration::from_secs(7);
        match step {
            Step::Write { node, key, value } => {
                let value = value.map(|v| format!("v{v}"));
                made.push(write(&mut nodes[*node], KEYS[*key], value.as_deref(), now));
            }
            Step::Exchange { a, b } if a != b && sides[*a] == sides[*b] => {
                exchange(&mut nodes, *a, *b, now);
            }
            Step::Exchange { .. } => {}
            Step::Split { sides: new } => sides.clone_from(new),
            Step::Collect { long } => {
                // Deletes are remembered for 10 graces: within that, no
                // delete may come undone either (past it, one may).
                if *long && long_collects < 8 {
                    long_collects += 1;
                    now += GRACE + Duration::from_secs(60);
                }
                for node in &mut nodes {
                    node.set_clock(now);
                    node.collect_tombstones(GRACE);
                }
            }
        }
    }
    for _ in 0..4 {
        now += Duration::from_secs(7);
        for a in 0..NODES {
            for b in 0..NODES {
                if a != b {
                    exchange(&mut nodes, a, b, now);
                }
            }
        }
    }
    (nodes, made, now)
}

/// Each key's last-writer-wins winner among everything made.
fn winners(made: &[KvEntry]) -> BTreeMap<String, KvEntry> {
    let mut winners: BTreeMap<String, KvEntry> = BTreeMap::new();
    for entry in made {
        match winners.get(&entry.key) {
            Some(current) if !entry.supersedes(current) => {}
            _ => {
                winners.insert(entry.key.clone(), entry.clone());
            }
        }
    }
    winners
}

/// What a node serves: live keys and values.
fn served(node: &Node) -> BTreeMap<String, Vec<u8>> {
    node.kv()
        .prefix("")
        .map(|stored| (stored.entry.key.clone(), stored.entry.value.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the partitions, writes, deletes and collections: after
    /// the heal every node serves exactly the winners that are writes.
    #[test]
    fn no_write_that_no_delete_came_after_is_ever_dropped(
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let (nodes, made, _) = run(&steps);
        let expected: BTreeMap<String, Vec<u8>> = winners(&made)
            .into_values()
            .filter(|entry| !entry.deleted)
            .map(|entry| (entry.key, entry.value))
            .collect();
        for node in &nodes {
            prop_assert_eq!(served(node), expected.clone(), "{}", node.local_record().name);
        }
    }

    /// More exchanges after the heal change nothing (idempotent), and
    /// which side opens them does not matter (commutative).
    #[test]
    fn exchanges_after_the_heal_are_idempotent_and_commutative(
        steps in proptest::collection::vec(step(), 1..30),
        forward in any::<bool>(),
    ) {
        let (mut nodes, _, now) = run(&steps);
        let before: Vec<_> = nodes.iter().map(served).collect();
        let roots: Vec<u64> = nodes.iter().map(|node| node.kv().root()).collect();
        for a in 0..NODES {
            for b in 0..NODES {
                if a != b {
                    let (x, y) = if forward { (a, b) } else { (b, a) };
                    exchange(&mut nodes, x, y, now);
                }
            }
        }
        let after: Vec<_> = nodes.iter().map(served).collect();
        prop_assert_eq!(before, after);
        let after_roots: Vec<u64> = nodes.iter().map(|node| node.kv().root()).collect();
        prop_assert_eq!(roots, after_roots);
    }
}
