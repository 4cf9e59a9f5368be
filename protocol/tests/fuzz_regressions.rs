//! Replays the saved fuzz inputs of the protocol targets: every crash the
//! fuzzer ever found (kept as a regression) and the seed corpus, through the
//! same entry points the fuzz targets call (`shoal_protocol::fuzzing`).
//!
//! Inputs live in `fuzz/regressions/<target>/`. The seeds are made by
//! `cargo test -p shoal-protocol --test fuzz_regressions -- --ignored`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_protocol::anti_entropy::{Digest, KvCursor, KvPage, Records, SyncMessage, SyncStep};
use shoal_protocol::codec;
use shoal_protocol::envelope::{Envelope, HEADER_LEN, cluster_id};
use shoal_protocol::fuzzing::{self, FUZZ_CLUSTER};
use shoal_protocol::kv::KvEntry;
use shoal_protocol::record::{CheckRecord, CheckStatus, ServiceRecord};
use shoal_protocol::rumor::Rumor;
use shoal_protocol::{GossipConfig, Node, NodeId, NodeRecord};

fn regressions(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target)
}

/// Feeds every saved input of `target` to `run`; returns how many there were.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = regressions(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    for path in &paths {
        let data = std::fs::read(path).expect("read input");
        // A panic here names the input that brought it back.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
    paths.len()
}

#[test]
fn packet_inputs_replay_without_panicking() {
    assert!(replay("packet", fuzzing::packet) >= 3);
}

#[test]
fn message_inputs_replay_without_panicking() {
    assert!(replay("messages", fuzzing::messages) >= 3);
}

/// The saved sync seeds decode as the steps they were written as: a wire
/// change that forgot to regenerate them (`write_seed_corpus`) fails here.
#[test]
fn saved_sync_messages_decode_as_their_steps() {
    let dir = regressions("messages");
    for (file, step) in [
        ("seed-sync-digest", SyncStep::Digest),
        ("seed-sync-summary", SyncStep::Digest),
        ("seed-sync-delta", SyncStep::Delta),
        ("seed-sync-records", SyncStep::Records),
        ("seed-sync-kv", SyncStep::Kv),
    ] {
        let data = std::fs::read(dir.join(file)).expect("read seed");
        let message: SyncMessage = codec::decode_frame(&data).expect(file);
        assert_eq!(message.step(), step, "{file}");
    }
}

/// The fuzzed node's address (see `fuzzing::packet`).
const FUZZED: ([u8; 4], u16) = ([127, 0, 0, 1], 7946);

fn peer(last: u8) -> Node {
    let id = NodeId {
        addr: SocketAddr::from(([127, 0, 0, last], 7946)),
        generation: 3,
    };
    let config = GossipConfig {
        seeds: vec![SocketAddr::from(FUZZED)],
        // Gossip its record from the start, so the seeds carry it.
        check_name: false,
        ..GossipConfig::default()
    };
    let mut node = Node::new(
        NodeRecord::new(id, format!("peer-{last}")),
        config,
        Envelope::new(cluster_id(FUZZ_CLUSTER)),
        u64::from(last),
    );
    node.update_local(|record| {
        record.tags.insert("role".into(), "web".into());
        record.services.push(ServiceRecord {
            id: "web-1".into(),
            name: "web".into(),
            address: String::new(),
            port: 8080,
            tags: vec!["v1".into()],
            meta: [("team".to_string(), "pay".to_string())].into(),
            checks: vec![CheckRecord {
                id: "web-http".into(),
                name: "http".into(),
                kind: "http".into(),
                status: CheckStatus::Passing,
                critical: true,
                notes: String::new(),
                output: "200 OK".into(),
            }],
        });
    });
    node
}

fn entry(key: &str, value: &[u8]) -> KvEntry {
    KvEntry {
        key: key.into(),
        value: value.to_vec(),
        flags: 0,
        time: 1 << 33,
        writer: "peer-2".into(),
        deleted: value.is_empty(),
    }
}

/// Packs chunks as `fuzzing::chunks` reads them, after a mode byte.
fn pack(mode: u8, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![mode];
    for chunk in chunks {
        out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Runs a peer and a node at the fuzzed address against each other for a
/// few rounds, and returns every datagram the peer sent to the fuzzed node.
fn conversation() -> Vec<Vec<u8>> {
    let mut peer = peer(2);
    peer.write_kv(entry("config/pool", b"16")).expect("fits");
    let mut fuzzed = Node::new(
        NodeRecord::new(
            NodeId {
                addr: SocketAddr::from(FUZZED),
                generation: 1,
            },
            "fuzz",
        ),
        GossipConfig::default(),
        Envelope::new(cluster_id(FUZZ_CLUSTER)),
        42,
    );
    fuzzed.start();
    peer.start();
    let mut sent = Vec::new();
    for _ in 0..6 {
        for (to, datagram) in std::mem::take(&mut peer.effects().datagrams) {
            if to == SocketAddr::from(FUZZED) {
                let _ = fuzzed.handle_datagram(&datagram);
                sent.push(datagram);
            }
        }
        for (_, datagram) in std::mem::take(&mut fuzzed.effects().datagrams) {
            let _ = peer.handle_datagram(&datagram);
        }
        for node in [&mut peer, &mut fuzzed] {
            let timers = std::mem::take(&mut node.effects().timers);
            for (after, timer) in timers {
                if after <= Duration::from_secs(1) {
                    node.handle_timer(timer);
                }
            }
        }
    }
    sent
}

/// Writes the seed corpus. Run by hand after a wire-format change.
#[test]
#[ignore = "regenerates fuzz/regressions seeds"]
fn write_seed_corpus() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = regressions(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let datagrams = conversation();
    assert!(!datagrams.is_empty(), "the peer sent nothing");
    write("packet", "seed-conversation-raw", &pack(0, &datagrams));
    let payloads: Vec<Vec<u8>> = datagrams.iter().map(|d| d[HEADER_LEN..].to_vec()).collect();
    write("packet", "seed-conversation-wrapped", &pack(1, &payloads));
    write("packet", "seed-sealed-node", &pack(5, &payloads[..1]));
    write(
        "packet",
        "seed-garbage",
        &pack(0, &[b"SHOL\x01\x01\x00".to_vec()]),
    );

    let mut peer = peer(3);
    let record = peer.local_record();
    write(
        "messages",
        "seed-rumor-node",
        &codec::encode(&Rumor::Node(record)),
    );
    write(
        "messages",
        "seed-rumor-kv",
        &codec::encode(&Rumor::Kv(entry("flags/new-checkout", b"{\"on\":true}"))),
    );
    let digest = peer.sync_open_full();
    write("messages", "seed-sync-digest", &codec::encode(&digest));
    write(
        "messages",
        "seed-sync-summary",
        &codec::encode(&peer.sync_open()),
    );
    let empty = peer
        .on_sync(SyncMessage::Digest(Digest {
            nodes: Vec::new(),
            kv_root: 0,
            kv_bucket_hashes: vec![0; 256],
            members: Vec::new(),
            kv_horizon: 0,
            nodes_hash: 0,
            members_hash: 0,
            summary: false,
        }))
        .expect("a digest is answered");
    write("messages", "seed-sync-delta", &codec::encode(&empty));
    let records = SyncMessage::Records(Records {
        records: vec![peer.local_record()],
        kv: KvPage {
            buckets: vec![3, 7],
            entries: vec![entry("a", b"1"), entry("b", b"")],
            next: Some(KvCursor {
                start: Some("a".into()),
                after: Some("b".into()),
                wrapped: false,
            }),
            yours: None,
            from: Some(KvCursor {
                start: Some("a".into()),
                after: None,
                wrapped: false,
            }),
            horizon: 1 << 33,
        },
    });
    write("messages", "seed-sync-records", &codec::encode(&records));
    let SyncMessage::Records(Records { kv, .. }) = records else {
        unreachable!("built above");
    };
    write(
        "messages",
        "seed-sync-kv",
        &codec::encode(&SyncMessage::Kv(kv)),
    );
}
