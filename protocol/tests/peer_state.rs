//! What peers can make a node hold and do: rumors that name an address,
//! member lists of any length, records of members long gone. Each test
//! drives real [`Node`]s on a virtual clock with a network of its own
//! (zero latency, no loss); syncs are counted, not carried out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use foca::{Codec, Header, Message};
use shoal_protocol::anti_entropy::{KvPage, Records, SyncMessage};
use shoal_protocol::codec::{self, SwimCodec};
use shoal_protocol::envelope::cluster_id;
use shoal_protocol::rumor::Rumor;
use shoal_protocol::{Envelope, GossipConfig, Node, NodeId, NodeRecord, NodeTimer, PayloadKind};

fn addr(index: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, (index >> 8) as u8, index as u8], 7946))
}

fn envelope() -> Envelope {
    Envelope::new(cluster_id("peer-state"))
}

fn node(index: u16, config: &GossipConfig) -> Node {
    let id = NodeId {
        addr: addr(index),
        generation: 1,
    };
    Node::new(
        NodeRecord::new(id, format!("node-{index}")),
        config.clone(),
        envelope(),
        u64::from(index) + 1,
    )
}

/// A few nodes on a virtual clock: every datagram arrives at once, timers
/// fire when due, syncs are recorded by target address.
struct Net {
    nodes: Vec<Node>,
    now: Duration,
    timers: Vec<(Duration, usize, NodeTimer)>,
    datagrams: Vec<(usize, Vec<u8>)>,
    /// Every sync a node asked for: (time, from, to).
    syncs: Vec<(Duration, usize, SocketAddr)>,
    /// Every datagram sent: (time, from, bytes).
    sent: Vec<(Duration, usize, Vec<u8>)>,
    /// Nodes that stopped: they neither receive nor fire timers.
    crashed: Vec<bool>,
}

impl Net {
    fn new(nodes: Vec<Node>) -> Self {
        let mut net = Net {
            nodes,
            now: Duration::ZERO,
            timers: Vec::new(),
            datagrams: Vec::new(),
            syncs: Vec::new(),
            sent: Vec::new(),
            crashed: Vec::new(),
        };
        net.crashed = vec![false; net.nodes.len()];
        for index in 0..net.nodes.len() {
            net.nodes[index].start();
            net.collect(index);
        }
        net
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.identity().addr == addr)
    }

    /// Takes what node `index` asked for.
    fn collect(&mut self, index: usize) {
        let now = self.now;
        let effects = self.nodes[index].effects();
        let datagrams = std::mem::take(&mut effects.datagrams);
        let timers = std::mem::take(&mut effects.timers);
        let syncs = std::mem::take(&mut effects.syncs);
        for (after, timer) in timers {
            self.timers.push((now + after, index, timer));
        }
        for peer in syncs {
            self.syncs.push((now, index, peer));
        }
        for (to, packet) in datagrams {
            self.sent.push((now, index, packet.clone()));
            if let Some(to) = self.index_of(to) {
                self.datagrams.push((to, packet));
            }
        }
    }

    /// Delivers a datagram to node `to` now.
    fn inject(&mut self, to: usize, packet: &[u8]) {
        let _ = self.nodes[to].handle_datagram(packet);
        self.collect(to);
        self.deliver();
    }

    fn deliver(&mut self) {
        while let Some((to, packet)) = self.datagrams.pop() {
            if self.crashed[to] {
                continue;
            }
            let _ = self.nodes[to].handle_datagram(&packet);
            self.collect(to);
        }
    }

    /// Runs the clock forward by `span`.
    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.deliver();
            let Some(next) = (0..self.timers.len())
                .min_by_key(|&i| (self.timers[i].0, self.timers[i].2.rank(), self.timers[i].1))
            else {
                break;
            };
            if self.timers[next].0 > end {
                break;
            }
            let (at, index, timer) = self.timers.swap_remove(next);
            self.now = at;
            if self.crashed[index] {
                continue;
            }
            self.nodes[index].handle_timer(timer);
            self.collect(index);
        }
        self.now = end;
    }

    fn syncs_to(&self, peer: SocketAddr) -> usize {
        self.syncs.iter().filter(|(_, _, to)| *to == peer).count()
    }
}

/// Two nodes that know each other.
fn pair(config: &GossipConfig) -> Net {
    let mut a = node(1, config);
    let mut b = node(2, config);
    a.assume_members([b.identity()]);
    b.assume_members([a.identity()]);
    let mut net = Net::new(vec![a, b]);
    net.run(Duration::from_secs(5));
    net
}

/// A plaintext datagram to `to` that claims to come from `from` and
/// carries `rumors`: what anyone on the network can send to an agent whose
/// gossip is not encrypted.
fn spoofed(from: NodeId, to: NodeId, rumors: &[Rumor]) -> Vec<u8> {
    let header = Header {
        src: from,
        src_incarnation: 0,
        dst: to,
        message: Message::Broadcast,
    };
    let mut payload = Vec::new();
    SwimCodec.encode_header(&header, &mut payload).unwrap();
    for rumor in rumors {
        let bytes = codec::encode(rumor);
        payload.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        payload.extend_from_slice(&bytes);
    }
    envelope().seal(PayloadKind::Swim, &payload, [0; 24])
}

/// Records arriving by anti-entropy (the closing step of an exchange).
fn receive_records(node: &mut Node, records: Vec<NodeRecord>) {
    node.on_sync(SyncMessage::Records(Records {
        records,
        kv: KvPage::default(),
    }));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn a_digest_rumor_nobody_can_serve_dies_out_and_is_never_pulled_from_its_payload_address() {
    let config = GossipConfig::default();
    let mut net = pair(&config);
    let bait = SocketAddr::from(([127, 77, 0, 250], 17999));
    for rumor in [
        Rumor::KvDigest {
            key: "nowhere".into(),
            time: 1 << 40,
            writer: "ghost".into(),
            from: bait,
        },
        Rumor::NodeDigest {
            name: "ghost".into(),
            id: NodeId {
                addr: bait,
                generation: 9,
            },
            version: 3,
        },
    ] {
        let marker = codec::encode(&rumor);
        let (a, b) = (net.nodes[0].identity(), net.nodes[1].identity());
        let syncs_before = net.syncs.len();
        let injected = net.now;
        net.inject(0, &spoofed(b, a, &[rumor]));
        net.run(Duration::from_secs(180));

        assert_eq!(
            net.syncs_to(bait),
            0,
            "nodes pulled from the address a rumor named"
        );
        let pulls = net.syncs.len() - syncs_before;
        // One periodic exchange every 15 s (jittered) per node, plus a few
        // bounded pull attempts.
        assert!(
            pulls <= 2 * 180 / 7 + 8,
            "{pulls} syncs in 180 s after one rumor"
        );
        let carrying: Vec<Duration> = net
            .sent
            .iter()
            .filter(|(at, _, packet)| *at >= injected && contains(packet, &marker))
            .map(|(at, _, _)| *at - injected)
            .collect();
        let last = carrying.last().copied().unwrap_or_default();
        assert!(
            last < Duration::from_secs(30),
            "the rumor still circulates {last:?} after it was injected ({} datagrams carried it)",
            carrying.len()
        );
    }
}

#[test]
fn one_exchange_teaches_a_bounded_number_of_members() {
    let config = GossipConfig::default();
    let mut net = pair(&config);
    let fake: Vec<NodeId> = (100..5_100)
        .map(|index| NodeId {
            addr: addr(index),
            generation: 1,
        })
        .collect();
    // A digest carrying them, as a peer (or anyone who can reach the
    // anti-entropy port of a plaintext cluster) would send it.
    let SyncMessage::Digest(mut digest) = net.nodes[1].sync_open_full() else {
        panic!("sync_open makes a digest");
    };
    digest.members = fake;
    net.nodes[0].on_sync(SyncMessage::Digest(digest));
    let learned = net.nodes[0].active_members();
    // Two members before: at most 2 x 2 + 64 more.
    assert!(
        learned <= 1 + 2 * 2 + 64,
        "one member list made the node hold {learned} members"
    );
}

#[test]
fn a_record_is_dropped_once_its_member_is_forgotten() {
    let config = GossipConfig {
        reconnect_timeout: Duration::from_secs(60),
        ..GossipConfig::default()
    };
    let mut net = pair(&config);
    // node-1 learns node-2's record as anti-entropy would bring it (if
    // the record's gossip at start has not already).
    let record = net.nodes[1].local_record();
    let gone = record.id;
    receive_records(&mut net.nodes[0], vec![record]);
    assert_eq!(net.nodes[0].records().len(), 2);

    // node-2 dies: declared down within seconds, forgotten by foca after
    // `reconnect_timeout`, and its record must go with it.
    net.crashed[1] = true;
    net.run(Duration::from_secs(30));
    assert!(
        net.nodes[0].records().iter().any(|r| r.id == gone),
        "the record of a down member stays while foca remembers it"
    );
    net.run(Duration::from_secs(120));
    assert_eq!(
        net.nodes[0].member_state(gone.addr),
        None,
        "foca forgot node-2"
    );
    let names: Vec<String> = net.nodes[0].records().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["node-1"], "records of forgotten members remain");
}

#[test]
fn records_of_name_churn_stay_bounded() {
    // Nodes come and go under new names at the same few addresses, as
    // containers do; every one of them gossips its record to node-1.
    let config = GossipConfig {
        reconnect_timeout: Duration::from_secs(30),
        tombstone_timeout: Duration::from_secs(30),
        ..GossipConfig::default()
    };
    let mut net = Net::new(vec![node(1, &config)]);
    let mut names = HashMap::new();
    for round in 0..40u64 {
        let slot = 2 + (round % 4) as u16;
        let id = NodeId {
            addr: addr(slot),
            generation: 10 + round,
        };
        let record = NodeRecord::new(id, format!("churn-{round}"));
        names.insert(record.name.clone(), id);
        net.nodes[0].assume_members([id]);
        net.collect(0);
        receive_records(&mut net.nodes[0], vec![record]);
        net.run(Duration::from_secs(20));
    }
    net.run(Duration::from_secs(120));
    let records = net.nodes[0].records().len();
    assert!(
        records <= 1 + 4,
        "{records} records after 40 short-lived names at 4 addresses"
    );
    let SyncMessage::Digest(digest) = net.nodes[0].sync_open_full() else {
        panic!("sync_open makes a digest");
    };
    let digest = digest.nodes.len();
    assert!(digest <= 1 + 4, "a digest of {digest} entries");
}

/// A record that arrives before foca knows its member (a rumor can beat
/// the member update) is kept, and kept once the member shows up.
#[test]
fn a_record_that_arrives_before_its_member_is_kept() {
    let config = GossipConfig {
        reconnect_timeout: Duration::from_secs(30),
        tombstone_timeout: Duration::from_secs(30),
        ..GossipConfig::default()
    };
    let mut net = pair(&config);
    let early = NodeRecord::new(
        NodeId {
            addr: addr(3),
            generation: 1,
        },
        "early",
    );
    receive_records(&mut net.nodes[0], vec![early.clone()]);
    net.run(Duration::from_secs(1));
    assert!(net.nodes[0].records().iter().any(|r| r.name == "early"));
    net.nodes[0].assume_members([early.id]);
    net.collect(0);
    net.run(Duration::from_secs(2));
    assert!(net.nodes[0].records().iter().any(|r| r.name == "early"));
}

/// Three nodes that know each other and hold each other's records.
fn trio(config: &GossipConfig) -> Net {
    let mut nodes: Vec<Node> = (1..=3).map(|i| node(i, config)).collect();
    let ids: Vec<NodeId> = nodes.iter().map(Node::identity).collect();
    let records: Vec<NodeRecord> = nodes.iter().map(Node::local_record).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        node.assume_members(ids.iter().copied().filter(|id| *id != ids[i]));
        receive_records(node, records.clone());
    }
    let mut net = Net::new(nodes);
    net.run(Duration::from_secs(5));
    net
}

fn status_of(node: &Node, name: &str) -> Option<&'static str> {
    node.members()
        .into_iter()
        .find(|m| m.name() == name)
        .map(|m| m.status.as_str())
}

fn reap_config() -> GossipConfig {
    GossipConfig {
        reconnect_timeout: Duration::from_secs(3600),
        tombstone_timeout: Duration::from_secs(120),
        ..GossipConfig::default()
    }
}

#[test]
fn a_forced_leave_reaches_every_node_and_is_reaped_on_the_left_schedule() {
    let mut net = trio(&reap_config());
    net.crashed[2] = true;
    net.run(Duration::from_secs(30));
    for i in 0..2 {
        assert_eq!(status_of(&net.nodes[i], "node-3"), Some("failed"));
    }
    assert_eq!(
        net.nodes[0].force_leave("node-3", false),
        Ok(shoal_protocol::ForceLeft::Left)
    );
    net.collect(0);
    assert_eq!(status_of(&net.nodes[0], "node-3"), Some("left"));
    net.run(Duration::from_secs(5));
    assert_eq!(status_of(&net.nodes[1], "node-3"), Some("left"));
    // Gone from both after the left schedule, well before the failed one.
    net.run(Duration::from_secs(130));
    for i in 0..2 {
        assert_eq!(status_of(&net.nodes[i], "node-3"), None, "node {i}");
        assert!(
            net.nodes[i].records().iter().all(|r| r.name != "node-3"),
            "node {i} kept the record"
        );
    }
}

#[test]
fn a_failed_member_is_kept_for_the_reconnect_timeout() {
    let mut net = trio(&reap_config());
    net.crashed[2] = true;
    net.run(Duration::from_secs(3000));
    assert_eq!(status_of(&net.nodes[0], "node-3"), Some("failed"));
    net.run(Duration::from_secs(700));
    assert_eq!(status_of(&net.nodes[0], "node-3"), None);
}

#[test]
fn a_pruned_member_is_gone_from_every_node_at_once_and_stays_gone() {
    let mut net = trio(&reap_config());
    net.crashed[2] = true;
    net.run(Duration::from_secs(30));
    assert_eq!(
        net.nodes[0].force_leave("node-3", true),
        Ok(shoal_protocol::ForceLeft::Pruned)
    );
    net.collect(0);
    assert_eq!(status_of(&net.nodes[0], "node-3"), None);
    net.run(Duration::from_secs(5));
    assert_eq!(status_of(&net.nodes[1], "node-3"), None);
    net.run(Duration::from_secs(60));
    for i in 0..2 {
        assert_eq!(status_of(&net.nodes[i], "node-3"), None, "node {i}");
    }
}

#[test]
fn force_leave_refuses_live_members_unknown_names_and_itself() {
    let mut net = trio(&reap_config());
    let node = &mut net.nodes[0];
    assert!(matches!(
        node.force_leave("node-2", false),
        Err(shoal_protocol::ForceLeaveError::Live {
            status: "alive",
            ..
        })
    ));
    assert!(matches!(
        node.force_leave("node-9", true),
        Err(shoal_protocol::ForceLeaveError::Unknown(_))
    ));
    assert!(matches!(
        node.force_leave("node-1", false),
        Err(shoal_protocol::ForceLeaveError::Local(_))
    ));
    assert_eq!(status_of(node, "node-2"), Some("alive"));
}

#[test]
fn a_member_that_went_down_before_anyone_had_its_record_is_not_listed() {
    let mut net = pair(&reap_config());
    let record = net.nodes[1].local_record();
    receive_records(&mut net.nodes[0], vec![record]);
    let stranger = NodeId {
        addr: addr(9),
        generation: 1,
    };
    net.nodes[0].assume_members([stranger]);
    net.collect(0);
    assert_eq!(
        net.nodes[0].members().len(),
        3,
        "listed under its address while alive"
    );
    net.run(Duration::from_secs(30));
    let names: Vec<String> = net.nodes[0].members().iter().map(|m| m.name()).collect();
    assert_eq!(names, ["node-1", "node-2"]);
}

#[test]
fn a_live_member_that_was_force_left_elsewhere_refutes_it() {
    let mut net = trio(&reap_config());
    // What another agent, cut off from node-3, gossips: node-3's record,
    // marked left, one version newer.
    let mut forced = net.nodes[2].local_record();
    forced.left = true;
    forced.version += 1;
    for i in 0..3 {
        receive_records(&mut net.nodes[i], vec![forced.clone()]);
        net.collect(i);
    }
    assert_eq!(status_of(&net.nodes[0], "node-3"), Some("leaving"));
    net.run(Duration::from_secs(5));
    let ours = net.nodes[2].local_record();
    assert!(!ours.left && ours.version > forced.version, "{ours:?}");
    for i in 0..3 {
        assert_eq!(
            status_of(&net.nodes[i], "node-3"),
            Some("alive"),
            "node {i}"
        );
    }
}
