//! The KV store's trust rules through the node's public API: tombstone
//! collection and the deletes remembered after it (handed back to a peer
//! that missed them), the bounds on times and generations that come from
//! peers, and the quota.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use shoal_protocol::anti_entropy::{KvPage, Records, SyncMessage};
use shoal_protocol::clock::ntp64;
use shoal_protocol::envelope::cluster_id;
use shoal_protocol::kv::{KvEntry, KvError, KvStore};
use shoal_protocol::{Envelope, GossipConfig, Node, NodeId, NodeRecord};

/// The wall clock every test node runs at: some day in 2026.
const NOW: Duration = Duration::from_secs(1_780_000_000);
const GRACE: Duration = Duration::from_secs(3600);

fn node_with(name: &str, port: u16, config: GossipConfig) -> Node {
    let id = NodeId {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        generation: 1,
    };
    let mut node = Node::new(
        NodeRecord::new(id, name),
        config,
        Envelope::new(cluster_id("trust")),
        u64::from(port),
    );
    node.set_clock(NOW);
    node
}

fn node(name: &str, port: u16) -> Node {
    node_with(name, port, GossipConfig::default())
}

/// NTP64 time `seconds` before [`NOW`].
fn ago(seconds: u64) -> u64 {
    ntp64(NOW - Duration::from_secs(seconds))
}

fn entry(key: &str, value: &str, time: u64) -> KvEntry {
    KvEntry {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        time,
        writer: "w".into(),
        deleted: value.is_empty(),
    }
}

/// Hands `node` entries and records as a peer's closing message would:
/// checked and merged like any peer input. Also puts the node in touch.
fn from_peer(node: &mut Node, kv_entries: Vec<KvEntry>, records: Vec<NodeRecord>) {
    let closing = SyncMessage::Records(Records {
        records,
        kv: KvPage {
            entries: kv_entries,
            ..KvPage::default()
        },
    });
    assert!(node.on_sync(closing).is_none());
}

/// One whole anti-entropy exchange, `initiator` first.
fn exchange(initiator: &mut Node, responder: &mut Node) {
    let mut delta = responder.on_sync(initiator.sync_open()).expect("a delta");
    if delta.expects() == Some(shoal_protocol::anti_entropy::SyncStep::Digest) {
        // The summary differed: the full digest follows.
        let full = initiator.on_sync(delta).expect("the full digest");
        delta = responder.on_sync(full).expect("a delta");
    }
    let records = initiator.on_sync(delta).expect("records");
    assert!(responder.on_sync(records).is_none());
}

fn live(node: &Node, key: &str) -> Option<Vec<u8>> {
    node.kv()
        .get(key)
        .filter(|stored| !stored.entry.deleted)
        .map(|stored| stored.entry.value.clone())
}

fn contents(node: &Node) -> BTreeMap<String, KvEntry> {
    node.kv()
        .iter()
        .map(|stored| (stored.entry.key.clone(), (*stored.entry).clone()))
        .collect()
}

/// A node that deleted `doomed` two grace periods ago and has collected
/// the tombstone: it remembers the delete.
fn node_that_collected(name: &str, port: u16, shared: &[KvEntry]) -> Node {
    let mut node = node(name, port);
    from_peer(&mut node, shared.to_vec(), Vec::new());
    node.set_clock(NOW - 2 * GRACE);
    from_peer(&mut node, vec![entry("doomed", "", ago(7300))], Vec::new());
    node.set_clock(NOW);
    assert_eq!(node.collect_tombstones(GRACE), ["doomed"]);
    let deletes = node.kv().remembered_deletes().clone();
    assert_eq!(deletes.deleted_at("doomed"), Some(ago(7300)));
    node
}

/// Defect 2, in the core: a node that was cut off while a key was deleted
/// and its tombstone collected elsewhere gets the delete handed back (the
/// other side remembers it) instead of resurrecting the key, whichever
/// side opens the exchanges; its copy is reported for the quarantine;
/// what the other side never had newer stays.
#[test]
fn a_node_that_missed_a_collected_delete_gets_it_back_and_quarantines_its_copy() {
    let shared = [
        entry("doomed", "x", ago(9000)),
        entry("kept", "k", ago(9000)),
    ];
    for stale_opens in [true, false] {
        let mut fresh = node_that_collected("fresh", 1, &shared);
        let mut stale = node("stale", 2);
        from_peer(&mut stale, shared.to_vec(), Vec::new());
        from_peer(&mut stale, vec![entry("during", "d", ago(10))], Vec::new());
        // The first exchange brings the old value to the fresh node, which
        // refuses it and stores the delete again; the second carries it.
        for _ in 0..2 {
            if stale_opens {
                exchange(&mut stale, &mut fresh);
            } else {
                exchange(&mut fresh, &mut stale);
            }
        }
        for node in [&fresh, &stale] {
            assert_eq!(live(node, "doomed"), None, "opens: {stale_opens}");
            assert_eq!(live(node, "kept"), Some(b"k".to_vec()));
            assert_eq!(live(node, "during"), Some(b"d".to_vec()));
        }
        assert_eq!(contents(&fresh), contents(&stale));
        let replaced = stale.take_kv_quarantined();
        assert_eq!(replaced, [(entry("doomed", "x", ago(9000)), ago(7300))]);
        assert_eq!(stale.counters().kv_quarantined, 1);
        assert_eq!(fresh.counters().refused_deleted, 1);
        assert!(fresh.take_kv_quarantined().is_empty());
    }
}

/// A whole exchange of any number of KV pages, `initiator` first; returns
/// how many messages it took.
fn exchange_paged(initiator: &mut Node, responder: &mut Node) -> usize {
    let nodes = [initiator, responder];
    let mut message = nodes[0].sync_open();
    let mut to = 1;
    for sent in 1..10_000 {
        match nodes[to].on_sync(message) {
            Some(answer) => message = answer,
            None => return sent,
        }
        to = 1 - to;
    }
    panic!("the exchange does not end");
}

/// The same, with stores too large for one page (22 MB).
#[test]
fn a_node_that_missed_a_collected_delete_gets_it_back_across_pages() {
    let mut shared: Vec<KvEntry> = (0..40)
        .map(|i| KvEntry {
            value: vec![b'b'; 500_000],
            ..entry(&format!("bulk/{i:02}"), "b", ago(9500))
        })
        .collect();
    shared.push(entry("doomed", "x", ago(9000)));
    shared.push(entry("kept", "k", ago(9000)));
    for stale_opens in [true, false] {
        let mut fresh = node_that_collected("fresh", 1, &shared);
        let mut stale = node("stale", 2);
        from_peer(&mut stale, shared.clone(), Vec::new());
        from_peer(&mut stale, vec![entry("during", "d", ago(10))], Vec::new());
        // Something to send in every bucket, both ways.
        for i in 0..300 {
            from_peer(
                &mut stale,
                vec![entry(&format!("s/{i}"), "s", ago(5))],
                Vec::new(),
            );
            from_peer(
                &mut fresh,
                vec![entry(&format!("f/{i}"), "f", ago(5))],
                Vec::new(),
            );
        }
        for _ in 0..2 {
            let messages = if stale_opens {
                exchange_paged(&mut stale, &mut fresh)
            } else {
                exchange_paged(&mut fresh, &mut stale)
            };
            assert!(messages > 3, "{messages} messages: the test needs pages");
        }
        for node in [&fresh, &stale] {
            assert_eq!(live(node, "doomed"), None, "opens: {stale_opens}");
            assert_eq!(live(node, "kept"), Some(b"k".to_vec()));
            assert_eq!(live(node, "during"), Some(b"d".to_vec()));
            assert_eq!(live(node, "s/7"), Some(b"s".to_vec()));
            assert_eq!(live(node, "f/7"), Some(b"f".to_vec()));
            assert!(live(node, "bulk/33").is_some());
        }
        assert_eq!(contents(&fresh), contents(&stale));
        let replaced: Vec<String> = stale
            .take_kv_quarantined()
            .into_iter()
            .map(|(entry, _)| entry.key)
            .collect();
        assert_eq!(replaced, ["doomed"]);
    }
}

/// A replayed old rumor (or any old entry for a key whose delete the node
/// remembers) can't bring a collected delete back: refused, counted, and
/// the delete stored again to be handed back. An old entry for any other
/// key is taken, however old (a write arriving late from a long
/// partition is not a deleted one).
#[test]
fn an_entry_older_than_a_remembered_delete_is_refused_and_others_are_taken() {
    let mut fresh = node_that_collected("fresh", 1, &[]);
    from_peer(
        &mut fresh,
        vec![entry("doomed", "x", ago(9000))],
        Vec::new(),
    );
    assert_eq!(live(&fresh, "doomed"), None);
    assert_eq!(fresh.counters().refused_deleted, 1);
    let handed_back = fresh
        .kv()
        .get("doomed")
        .expect("the tombstone")
        .entry
        .clone();
    assert!(handed_back.deleted);
    assert_eq!(handed_back.time, ago(7300));
    assert_eq!(
        handed_back.writer,
        shoal_protocol::kv::REMEMBERED_DELETE_WRITER
    );
    // Older than the delete but for other keys, or newer: merged as usual.
    from_peer(
        &mut fresh,
        vec![
            entry("late", "l", ago(9500)),
            entry("new", "n", ago(7000)),
            entry("doomed", "y", ago(60)),
        ],
        Vec::new(),
    );
    assert_eq!(live(&fresh, "late"), Some(b"l".to_vec()));
    assert_eq!(live(&fresh, "new"), Some(b"n".to_vec()));
    assert_eq!(live(&fresh, "doomed"), Some(b"y".to_vec()));
    assert_eq!(fresh.counters().refused_deleted, 1);
}

/// Found in review: a node that collected a delete takes the very same
/// tombstone back from a peer that still holds it (their graces end at
/// different times), stores it as if new, and so holds it for another
/// whole grace, while the peer collects and then takes it back in turn:
/// the tombstone circulates forever. A tombstone no newer than a delete
/// we remember is refused, and nothing is handed back for it.
#[test]
fn a_collected_delete_is_not_taken_back_from_a_peer_that_still_holds_it() {
    let mut node = node_that_collected("collected", 1, &[]);
    let mut same = entry("doomed", "", ago(7300));
    from_peer(&mut node, vec![same.clone()], Vec::new());
    assert!(node.kv().get("doomed").is_none(), "the tombstone came back");
    // From another writer at the same time, or older: the same.
    same.writer = "other".into();
    from_peer(
        &mut node,
        vec![same, entry("doomed", "", ago(8000))],
        Vec::new(),
    );
    assert!(node.kv().get("doomed").is_none(), "the tombstone came back");
    // A newer delete is news.
    from_peer(&mut node, vec![entry("doomed", "", ago(60))], Vec::new());
    assert!(
        node.kv()
            .get("doomed")
            .is_some_and(|held| held.entry.deleted)
    );
    assert!(node.take_kv_quarantined().is_empty());
}

/// Defect 1, in the core: nodes that hold the same entries (a whole
/// cluster that was down together) lose nothing in an exchange, however
/// old the entries and whatever both sides collected.
#[test]
fn nodes_holding_the_same_entries_drop_nothing() {
    let shared = [entry("a", "1", ago(9000)), entry("b", "2", ago(8000))];
    let mut left = node_that_collected("left", 1, &shared);
    let mut right = node_that_collected("right", 2, &shared);
    exchange(&mut left, &mut right);
    exchange(&mut right, &mut left);
    for node in [&mut left, &mut right] {
        assert_eq!(live(node, "a"), Some(b"1".to_vec()));
        assert_eq!(live(node, "b"), Some(b"2".to_vec()));
        assert!(node.take_kv_quarantined().is_empty());
    }
}

/// Collection waits until the node is in touch, and for the grace period
/// on the node's own clock too: a delete stamped long ago by a node with a
/// slow clock is kept for the whole grace period after it arrives.
#[test]
fn tombstones_are_collected_only_in_touch_and_after_the_grace_on_our_clock() {
    let mut node = node("n", 1);
    node.with_kv(|kv| kv.apply_at(Arc::new(entry("alone", "", ago(90_000))), 1));
    assert!(node.collect_tombstones(GRACE).is_empty(), "never in touch");
    from_peer(&mut node, vec![entry("slow", "", ago(86_400))], Vec::new());
    assert_eq!(node.collect_tombstones(GRACE), ["alone"]);
    node.set_clock(NOW + GRACE - Duration::from_secs(1));
    assert!(node.collect_tombstones(GRACE).is_empty());
    node.set_clock(NOW + GRACE + Duration::from_secs(1));
    assert_eq!(node.collect_tombstones(GRACE), ["slow"]);
}

/// Defect 7, in the core: an entry stamped at the end of time is refused
/// and counted, so the key stays writable; one within the drift is taken.
#[test]
fn a_kv_entry_from_the_far_future_is_refused() {
    let mut node = node("n", 1);
    from_peer(
        &mut node,
        vec![
            entry("x", "evil", u64::MAX),
            entry("y", "ahead", ntp64(NOW + Duration::from_secs(31))),
            entry("z", "skewed", ntp64(NOW + Duration::from_secs(29))),
        ],
        Vec::new(),
    );
    assert!(node.kv().get("x").is_none() && node.kv().get("y").is_none());
    assert_eq!(live(&node, "z"), Some(b"skewed".to_vec()));
    assert_eq!(node.counters().refused_clock_drift, 2);
    assert!(node.write_kv(entry("x", "2", ntp64(NOW))).is_ok());
    assert_eq!(live(&node, "x"), Some(b"2".to_vec()));
}

/// Defect 7, in the core: a record whose generation is far ahead of the
/// clock (generations are Unix milliseconds) would hold its node name
/// forever; it is refused and counted.
#[test]
fn a_record_from_the_far_future_is_refused() {
    let mut node = node("n", 1);
    let record = |generation: u64, name: &str| {
        let id = NodeId {
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            generation,
        };
        NodeRecord::new(id, name)
    };
    let now_ms = u64::try_from(NOW.as_millis()).unwrap();
    from_peer(
        &mut node,
        Vec::new(),
        vec![record(u64::MAX, "squatter"), record(now_ms, "honest")],
    );
    let names: Vec<String> = node.records().into_iter().map(|r| r.name).collect();
    assert!(!names.contains(&"squatter".to_string()), "{names:?}");
    assert!(names.contains(&"honest".to_string()), "{names:?}");
    assert_eq!(node.counters().refused_clock_drift, 1);
}

/// Defect 11: past `kv_max_bytes`, local writes fail (nothing applied) and
/// peers' entries are refused and counted; the node notes that it lacks
/// entries until an exchange goes through whole. (It never vouches for
/// what it lacks: version 1's horizon is always 0 on the wire.)
#[test]
fn the_quota_refuses_local_writes_and_peer_entries() {
    let config = GossipConfig {
        kv_max_bytes: 100,
        ..GossipConfig::default()
    };
    let mut node = node_with("n", 1, config);
    let value = "v".repeat(40);
    assert!(node.write_kv(entry("a", &value, ago(5))).is_ok());
    assert!(node.write_kv(entry("b", &value, ago(4))).is_ok());
    assert_eq!(
        node.write_kv(entry("c", &value, ago(3))),
        Err(KvError::QuotaExceeded {
            needed: 123,
            max_bytes: 100
        })
    );
    assert!(node.kv().get("c").is_none());
    // Shrinking and deleting always fit.
    assert!(node.write_kv(entry("a", "", ago(2))).is_ok());
    assert!(node.write_kv(entry("c", &value, ago(1))).is_ok());

    let mut collected = node_that_collected("other", 2, &[]);
    let digest_horizon = |node: &Node| match node.sync_open() {
        SyncMessage::Digest(digest) => digest.kv_horizon,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        digest_horizon(&collected),
        0,
        "a collected delete vouches for nothing"
    );
    from_peer(&mut node, vec![entry("d", &value, ago(1))], Vec::new());
    assert!(node.kv().get("d").is_none());
    assert_eq!(node.counters().refused_kv_quota, 1);
    assert!(node.kv_incomplete());
    assert_eq!(digest_horizon(&node), 0);
    // An exchange in which the quota refuses nothing restores it.
    exchange(&mut node, &mut collected);
    assert!(!node.kv_incomplete());
}

fn arbitrary_entry(times: std::ops::Range<u64>) -> impl Strategy<Value = KvEntry> {
    (0usize..8, 0usize..3, times, 0usize..2).prop_map(|(k, v, time, w)| KvEntry {
        writer: ["w1", "w2"][w].into(),
        ..entry(
            ["a", "b", "c/d", "c/e", "f", "g", "h", "i"][k],
            ["x", "y", ""][v],
            ago(time),
        )
    })
}

fn lww(entries: impl IntoIterator<Item = KvEntry>) -> BTreeMap<String, KvEntry> {
    let mut store = KvStore::default();
    for entry in entries {
        store.apply(Arc::new(entry));
    }
    store
        .iter()
        .map(|stored| (stored.entry.key.clone(), (*stored.entry).clone()))
        .collect()
}

proptest! {
    /// Both sides hold the same old entries and collected the same
    /// tombstones (a whole cluster down together); each then gets newer
    /// writes: one exchange ends in the plain LWW merge, nothing dropped.
    #[test]
    fn with_nothing_lacked_below_the_horizon_the_merge_is_unchanged(
        shared in proptest::collection::vec(arbitrary_entry(8000..9000), 0..10),
        left_new in proptest::collection::vec(arbitrary_entry(0..100), 0..6),
        right_new in proptest::collection::vec(arbitrary_entry(0..100), 0..6),
        left_opens in any::<bool>(),
    ) {
        let mut left = node_that_collected("left", 1, &shared);
        let mut right = node_that_collected("right", 2, &shared);
        let after_collection = contents(&left);
        prop_assert_eq!(&after_collection, &contents(&right));
        from_peer(&mut left, left_new.clone(), Vec::new());
        from_peer(&mut right, right_new.clone(), Vec::new());
        if left_opens {
            exchange(&mut left, &mut right);
        } else {
            exchange(&mut right, &mut left);
        }
        let expected = lww(after_collection.into_values().chain(left_new).chain(right_new));
        prop_assert_eq!(contents(&left), expected.clone());
        prop_assert_eq!(contents(&right), expected);
        prop_assert!(left.take_kv_quarantined().is_empty() && right.take_kv_quarantined().is_empty());
    }

    /// A node that collected a delete meets one that never saw it: nothing
    /// either lacks is dropped, however old; everything merges by LWW.
    /// (Version 1 dropped every entry the collecting side lacked below its
    /// collection horizon.)
    #[test]
    fn a_collected_delete_drops_nothing_the_other_side_lacks(
        held in proptest::collection::vec(arbitrary_entry(0..9000), 0..8),
        other in proptest::collection::vec(arbitrary_entry(0..9000), 0..8),
        collected_opens in any::<bool>(),
    ) {
        let mut collected = node_that_collected("collected", 1, &held);
        let mut stale = node("stale", 2);
        from_peer(&mut stale, other.clone(), Vec::new());
        let before = contents(&collected);
        let stale_before = contents(&stale);
        if collected_opens {
            exchange(&mut collected, &mut stale);
        } else {
            exchange(&mut stale, &mut collected);
        }
        let expected = lww(before.into_values().chain(stale_before.into_values()));
        prop_assert_eq!(contents(&collected), expected.clone());
        prop_assert_eq!(contents(&stale), expected);
    }
}

/// Defect 7, at the SWIM level: a member update naming an address with a
/// generation from the future would win that address for good (foca
/// settles address conflicts by generation); the packet is refused.
#[test]
fn a_swim_identity_from_the_far_future_is_refused() {
    use foca::Codec;
    use shoal_protocol::PayloadKind;
    use shoal_protocol::codec::SwimCodec;
    let mut node = node("n", 1);
    let peer = NodeId {
        addr: SocketAddr::from(([127, 0, 0, 1], 2)),
        generation: 1,
    };
    let victim = SocketAddr::from(([127, 0, 0, 1], 3));
    let me = node.identity();
    let packet = |generation: u64| {
        let header = foca::Header {
            src: peer,
            src_incarnation: 0,
            dst: me,
            message: foca::Message::Gossip,
        };
        let mut payload = Vec::new();
        SwimCodec.encode_header(&header, &mut payload).unwrap();
        payload.extend_from_slice(&1u16.to_be_bytes());
        let id = NodeId {
            addr: victim,
            generation,
        };
        let member = foca::Member::new(id, 0, foca::State::Alive);
        SwimCodec.encode_member(&member, &mut payload).unwrap();
        Envelope::new(cluster_id("trust")).seal(PayloadKind::Swim, &payload, [0; 24])
    };
    assert!(node.handle_datagram(&packet(u64::MAX)).is_err());
    assert!(node.member_state(victim).is_none());
    assert_eq!(node.counters().refused_clock_drift, 1);
    let now_ms = u64::try_from(NOW.as_millis()).unwrap();
    assert!(node.handle_datagram(&packet(now_ms)).is_ok());
    assert!(node.member_state(victim).is_some());
}
