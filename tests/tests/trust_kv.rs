//! The KV store under long outages, partitions and hostile peers, with real
//! processes: tombstone collection never costs live data (a whole cluster
//! down longer than `kv.tombstone_grace` keeps everything; a write made on
//! one side of a long partition survives deletes collected on the other),
//! never lets a deleted key come back (an agent away or cut off for longer
//! than the grace gets the deletes its peers remember, and quarantines
//! what they replace), times from the far future are refused, and the
//! store has a size quota (`kv.max_bytes`).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_protocol::NodeId;
use shoal_protocol::kv::KvEntry;
use shoal_protocol::rumor::Rumor;
use shoal_tests::{
    Agent, AgentOptions, Cluster, QUICK_GOSSIP, http_json, unique_loopback, wait_for,
};

/// Options for agents with a short tombstone grace period (and a clock
/// drift bound below it, as the config requires), fault injection, and
/// quick anti-entropy and re-announces, so that the tests see collection,
/// partitions and their healing within a minute or two.
fn options(root: &Path, grace: &str, extra: &str) -> impl Fn(usize) -> AgentOptions + use<> {
    let root = root.to_path_buf();
    let grace = grace.to_string();
    let extra = extra.to_string();
    move |i| {
        let config = root.join(format!("agent-{i}.toml"));
        let text = format!(
            "max_clock_drift = \"2s\"\n{QUICK_GOSSIP}[kv]\ntombstone_grace = \"{grace}\"\n{extra}"
        );
        AgentOptions::with_config_file(&config, &text, &["--fault-injection"])
    }
}

/// Asserts that `key` stays as `expected` on every agent for `period`.
fn stays(cluster: &Cluster, key: &str, expected: Option<&str>, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        for agent in &cluster.agents {
            assert_eq!(
                agent.kv_get(key),
                Ok(expected.map(str::to_string)),
                "{} changed {key}",
                agent.name
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Cuts the agents in `side` off from every other agent, both ways.
fn partition(cluster: &Cluster, side: &[usize]) {
    let ips = |agents: &mut dyn Iterator<Item = usize>| {
        agents
            .map(|i| cluster.agents[i].ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let others: Vec<usize> = (0..cluster.agents.len())
        .filter(|i| !side.contains(i))
        .collect();
    for i in 0..cluster.agents.len() {
        let blocked = if side.contains(&i) {
            ips(&mut others.iter().copied())
        } else {
            ips(&mut side.iter().copied())
        };
        let path = format!("/v1/shoal/fault?block={blocked}");
        let (status, body) = http_json("PUT", cluster.agents[i].http_addr(), &path, None).unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

fn heal(cluster: &Cluster) {
    for agent in &cluster.agents {
        let (status, body) =
            http_json("PUT", agent.http_addr(), "/v1/shoal/fault?block=", None).unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

/// `Stats.<path>` of `/v1/agent/self` (`path` as in a JSON pointer:
/// `kv/quarantine/quarantined`).
fn stat_at(agent: &Agent, path: &str) -> Result<u64, String> {
    let me = agent.get("/v1/agent/self")?;
    me.pointer(&format!("/Stats/{path}"))
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no Stats/{path} in {}", me["Stats"]))
}

fn stat(agent: &Agent, section: &str, name: &str) -> Result<u64, String> {
    stat_at(agent, &format!("{section}/{name}"))
}

/// Node records and KV entries from peers refused for `reason`.
fn refused_records(agent: &Agent, reason: &str) -> Result<u64, String> {
    stat_at(agent, &format!("gossip/refused_records/{reason}"))
}

/// Live values a handed-back delete replaced.
fn quarantined(agent: &Agent) -> Result<u64, String> {
    stat_at(agent, "kv/quarantine/quarantined")
}

fn wait_collected(agent: &Agent, timeout: Duration) {
    wait_for(
        timeout,
        &format!("{} to collect a tombstone", agent.name),
        || match stat(agent, "kv", "deletes_remembered")? {
            0 => Err("no delete remembered".into()),
            _ => Ok(()),
        },
    );
}

/// The keys in `agent`'s KV quarantine.
fn quarantined_keys(agent: &Agent) -> Result<Vec<String>, String> {
    let items = agent.get("/v1/shoal/kv/quarantine")?;
    Ok(items
        .as_array()
        .ok_or_else(|| format!("not a list: {items}"))?
        .iter()
        .map(|item| item["Key"].as_str().unwrap_or_default().to_string())
        .collect())
}

fn put_flag(agent: &Agent, key: &str, body: &Value) {
    let body = body.to_string();
    let (status, answer) = http_json(
        "PUT",
        agent.http_addr(),
        &format!("/v1/flags/{key}"),
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
}

/// The installed gossip keys, sorted.
fn keyring(agent: &Agent) -> Result<Vec<String>, String> {
    let ring = agent.get("/v1/operator/keyring")?;
    let mut keys: Vec<String> = ring[0]["Keys"]
        .as_object()
        .map(|keys| keys.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    Ok(keys)
}

const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

/// Defect 1: every agent of the cluster is stopped for twice the grace
/// period. Nobody stayed in touch, so nobody knows better: after the
/// restart every key, flag and the stored keyring are still there, though
/// both agents have collected a delete newer than all of them.
#[test]
fn a_cluster_down_longer_than_the_grace_keeps_its_keys_flags_and_keyring() {
    let scratch = tempfile::tempdir().unwrap();
    let base = options(scratch.path(), "20s", "");
    let mut cluster = Cluster::start_with(2, |i| {
        let mut options = base(i);
        // No token: keyring changes need the operator's opt-in.
        options.args.extend([
            "--encrypt".into(),
            KEY_A.into(),
            "--acl-allow-unauthenticated-keyring".into(),
        ]);
        options
    });
    cluster.wait_all_alive(Duration::from_secs(20));
    assert_eq!(cluster.agents[0].kv_put("cfg/one", "1"), Ok(true));
    assert_eq!(cluster.agents[1].kv_put("cfg/two", "2"), Ok(true));
    put_flag(
        &cluster.agents[0],
        "dark-mode",
        &json!({"enabled": true, "rollout_percentage": 100}),
    );
    let body = json!({ "Key": KEY_B }).to_string();
    let (status, answer) = http_json(
        "POST",
        cluster.agents[0].http_addr(),
        "/v1/operator/keyring",
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let both_keys = {
        let mut keys = vec![KEY_A.to_string(), KEY_B.to_string()];
        keys.sort();
        keys
    };
    assert_eq!(cluster.agents[1].kv_put("cfg/gone", "x"), Ok(true));
    let status = cluster.agents[1].kv_delete("cfg/gone").unwrap();
    assert_eq!(status, 200);
    for agent in &cluster.agents {
        agent.wait_kv("cfg/one", Some("1"), Duration::from_secs(15));
        agent.wait_kv("cfg/two", Some("2"), Duration::from_secs(15));
        agent.wait_kv("cfg/gone", None, Duration::from_secs(15));
        wait_for(Duration::from_secs(15), "the second key everywhere", || {
            let keys = keyring(agent)?;
            if keys == both_keys {
                Ok(())
            } else {
                Err(format!("{keys:?}"))
            }
        });
    }

    // Connected until both have collected the delete (grace 20 s, then the
    // next housekeeping round, every 30 s): both remember a delete newer
    // than every live entry. Then the whole cluster is down for twice the grace.
    for agent in &cluster.agents {
        wait_collected(agent, Duration::from_secs(60));
    }
    for agent in &mut cluster.agents {
        agent.signal(libc::SIGTERM);
        assert_eq!(agent.wait_exit(Duration::from_secs(15)), Some(0));
    }
    std::thread::sleep(Duration::from_secs(40));
    for agent in &mut cluster.agents {
        agent.restart();
    }
    cluster.wait_all_alive(Duration::from_secs(30));
    // Several anti-entropy rounds (every 2 s) after first contact.
    std::thread::sleep(Duration::from_secs(8));
    for agent in &cluster.agents {
        assert_eq!(
            agent.kv_get("cfg/one"),
            Ok(Some("1".into())),
            "{}",
            agent.name
        );
        assert_eq!(
            agent.kv_get("cfg/two"),
            Ok(Some("2".into())),
            "{}",
            agent.name
        );
        let flag = agent.get("/v1/flags/dark-mode?user=u1");
        assert_eq!(
            flag.as_ref().map(|f| f["enabled"].clone()),
            Ok(json!(true)),
            "{}: {flag:?}",
            agent.name
        );
        assert_eq!(keyring(agent), Ok(both_keys.clone()), "{}", agent.name);
        assert!(
            !agent.log().contains("handed back deletes"),
            "{} replaced values",
            agent.name
        );
        assert_eq!(quarantined(agent), Ok(0));
        assert_eq!(quarantined_keys(agent), Ok(Vec::new()));
    }
}

/// Defect 2: an agent that keeps running but is cut off for longer than
/// the grace period, while the others delete a key and collect its
/// tombstone, must not bring the key back when the partition heals: its
/// peers remember the delete and hand it back, and its copy goes to its
/// quarantine (readable and clearable by API and CLI). Its other keys, and
/// what it wrote while cut off, still reach everyone.
#[test]
fn a_running_agent_cut_off_longer_than_the_grace_does_not_resurrect_deleted_keys() {
    let scratch = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(3, options(scratch.path(), "10s", ""));
    cluster.wait_all_alive(Duration::from_secs(20));
    assert_eq!(cluster.agents[0].kv_put("iso/doomed", "x"), Ok(true));
    assert_eq!(cluster.agents[0].kv_put("iso/kept", "k"), Ok(true));
    for agent in &cluster.agents {
        agent.wait_kv("iso/doomed", Some("x"), Duration::from_secs(15));
        agent.wait_kv("iso/kept", Some("k"), Duration::from_secs(15));
    }

    partition(&cluster, &[2]);
    wait_for(
        Duration::from_secs(30),
        "node-0 to see node-2 failed",
        || {
            let members = cluster.agents[0].members()?;
            if members
                .iter()
                .any(|(name, status)| name == "node-2" && *status == 4)
            {
                Ok(())
            } else {
                Err(format!("{members:?}"))
            }
        },
    );
    let status = cluster.agents[0].kv_delete("iso/doomed").unwrap();
    assert_eq!(status, 200);
    cluster.agents[1].wait_kv("iso/doomed", None, Duration::from_secs(15));
    assert_eq!(cluster.agents[2].kv_put("iso/during", "d"), Ok(true));
    // The tombstone outlives the grace period (10 s) and is collected at
    // the next housekeeping round (every 30 s) on both connected agents.
    wait_collected(&cluster.agents[0], Duration::from_secs(60));
    wait_collected(&cluster.agents[1], Duration::from_secs(60));
    assert_eq!(stat(&cluster.agents[2], "kv", "deletes_remembered"), Ok(0));
    assert_eq!(
        cluster.agents[2].kv_get("iso/doomed"),
        Ok(Some("x".into())),
        "the cut-off agent still serves what it has"
    );

    heal(&cluster);
    cluster.wait_all_alive(Duration::from_secs(60));
    cluster.agents[2].wait_kv("iso/doomed", None, Duration::from_secs(30));
    for agent in &cluster.agents {
        agent.wait_kv("iso/during", Some("d"), Duration::from_secs(30));
        agent.wait_kv("iso/kept", Some("k"), Duration::from_secs(5));
    }
    stays(&cluster, "iso/doomed", None, Duration::from_secs(10));
    stays(&cluster, "iso/kept", Some("k"), Duration::from_secs(1));
    // The delete was handed back, its value quarantined, counted, logged.
    let cut_off = &cluster.agents[2];
    assert_eq!(quarantined(cut_off), Ok(1));
    assert_eq!(
        quarantined_keys(cut_off),
        Ok(vec!["iso/doomed".to_string()])
    );
    let item = &cut_off.get("/v1/shoal/kv/quarantine").unwrap()[0];
    assert_eq!(item["Value"], json!("eA=="), "base64 of the value it held");
    assert!(
        item["DeletedAt"].as_f64() > item["WrittenAt"].as_f64(),
        "{item}"
    );
    assert!(
        cut_off.log().contains("iso/doomed"),
        "the WARN names the key"
    );
    for agent in &cluster.agents[..2] {
        assert_eq!(quarantined_keys(agent), Ok(Vec::new()), "{}", agent.name);
    }
    let metrics = cut_off.cli(&["metrics"]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(text.contains("shoal_kv_quarantined_total"), "{text}");
    // The CLI lists it, then clears it; the clear is a write.
    let listed = cut_off.cli(&["kv", "quarantine"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("iso/doomed") && listed.contains('x'),
        "{listed}"
    );
    let cleared = cut_off.cli(&["kv", "quarantine", "--clear"]);
    assert!(cleared.status.success(), "{cleared:?}");
    assert!(
        String::from_utf8_lossy(&cleared.stdout).contains("Cleared 1"),
        "{cleared:?}"
    );
    assert_eq!(quarantined_keys(cut_off), Ok(Vec::new()));
    let stats = &cut_off.get("/v1/agent/self").unwrap()["Stats"]["kv"]["quarantine"];
    assert_eq!(
        (stats["held"].as_u64(), stats["cleared"].as_u64()),
        (Some(0), Some(1))
    );
}

/// An agent stopped for longer than the grace period, while the others
/// delete a key and collect its tombstone, gets the delete handed back
/// when it comes back rather than resurrecting the key; its copy is
/// quarantined, and stays so across a restart.
#[test]
fn an_agent_stopped_longer_than_the_grace_does_not_resurrect_deleted_keys() {
    let scratch = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(3, options(scratch.path(), "10s", ""));
    cluster.wait_all_alive(Duration::from_secs(20));
    assert_eq!(cluster.agents[0].kv_put("away/doomed", "x"), Ok(true));
    assert_eq!(cluster.agents[0].kv_put("away/kept", "k"), Ok(true));
    for agent in &cluster.agents {
        agent.wait_kv("away/doomed", Some("x"), Duration::from_secs(15));
        agent.wait_kv("away/kept", Some("k"), Duration::from_secs(15));
    }
    // Connected long enough for node-2 to note that it was in touch.
    std::thread::sleep(Duration::from_secs(35));
    cluster.agents[2].signal(libc::SIGTERM);
    assert_eq!(
        cluster.agents[2].wait_exit(Duration::from_secs(15)),
        Some(0)
    );
    let status = cluster.agents[0].kv_delete("away/doomed").unwrap();
    assert_eq!(status, 200);
    cluster.agents[1].wait_kv("away/doomed", None, Duration::from_secs(15));
    // Past the grace period and the next housekeeping round.
    wait_collected(&cluster.agents[0], Duration::from_secs(60));
    wait_collected(&cluster.agents[1], Duration::from_secs(60));
    cluster.agents[2].restart();
    cluster.wait_all_alive(Duration::from_secs(30));
    cluster.agents[2].wait_kv("away/doomed", None, Duration::from_secs(30));
    cluster.agents[2].wait_kv("away/kept", Some("k"), Duration::from_secs(30));
    stays(&cluster, "away/doomed", None, Duration::from_secs(10));
    stays(&cluster, "away/kept", Some("k"), Duration::from_secs(1));
    assert_eq!(quarantined(&cluster.agents[2]), Ok(1));
    let doomed = vec!["away/doomed".to_string()];
    assert_eq!(quarantined_keys(&cluster.agents[2]), Ok(doomed.clone()));
    // Persisted in the data dir: still there after a restart.
    cluster.agents[2].signal(libc::SIGTERM);
    assert_eq!(
        cluster.agents[2].wait_exit(Duration::from_secs(15)),
        Some(0)
    );
    cluster.agents[2].restart();
    cluster.agents[2].wait_serving();
    assert_eq!(quarantined_keys(&cluster.agents[2]), Ok(doomed));
}

/// Defect 7: a KV entry stamped `u64::MAX` (the far future) is refused and
/// counted, so the key stays writable.
#[test]
fn a_kv_entry_from_the_far_future_is_refused_and_the_key_stays_writable() {
    let cluster = Cluster::start(2);
    cluster.wait_all_alive(Duration::from_secs(20));
    let target = &cluster.agents[0];
    let me = target.get("/v1/agent/self").unwrap();
    let generation = me["Stats"]["agent"]["generation"].as_u64().unwrap();
    let to = NodeId {
        addr: target.gossip_addr(),
        generation,
    };
    let entry = KvEntry {
        key: "x".into(),
        value: b"from-the-future".to_vec(),
        flags: 0,
        time: u64::MAX,
        writer: "mallory".into(),
        deleted: false,
    };
    let socket = UdpSocket::bind(SocketAddr::new(unique_loopback(), 0)).unwrap();
    socket
        .send_to(
            &shoal_tests::rumor_datagram(to, &Rumor::Kv(entry)),
            target.gossip_addr(),
        )
        .unwrap();

    wait_for(
        Duration::from_secs(10),
        "the entry from the future to be refused and counted",
        || match refused_records(target, "clock_drift") {
            Ok(refused) if refused > 0 => Ok(()),
            other => Err(format!("{other:?}, x = {:?}", target.kv_get("x"))),
        },
    );
    for agent in &cluster.agents {
        assert_eq!(agent.kv_get("x"), Ok(None), "{}", agent.name);
    }
    assert_eq!(target.kv_put("x", "2"), Ok(true));
    assert_eq!(target.kv_get("x"), Ok(Some("2".into())));
    let (status, body) = http_json("DELETE", target.http_addr(), "/v1/kv/x", None).unwrap();
    assert_eq!((status, body), (200, json!(true)));
    assert_eq!(target.kv_get("x"), Ok(None));
    assert_eq!(target.kv_put("x", "3"), Ok(true));
    cluster.agents[1].wait_kv("x", Some("3"), Duration::from_secs(15));
}

/// Defect 11 (KV part): `kv.max_bytes` caps the store (keys + values).
/// A local write past it is refused with an error naming the option and
/// changes nothing; entries from peers past it are refused and counted.
#[test]
fn the_kv_quota_refuses_local_writes_and_peer_entries_past_kv_max_bytes() {
    const QUOTA: usize = 4096;
    let scratch = tempfile::tempdir().unwrap();
    let base = options(scratch.path(), "72h", "");
    let small = options(scratch.path(), "72h", &format!("max_bytes = {QUOTA}\n"));
    let cluster = Cluster::start_with(2, |i| if i == 0 { small(i) } else { base(i) });
    cluster.wait_all_alive(Duration::from_secs(20));
    let limited = &cluster.agents[0];
    let value = "v".repeat(500);

    // Local writes until the quota refuses one.
    let mut accepted = Vec::new();
    let refused = loop {
        let key = format!("q/{}", accepted.len());
        let (status, body) = http_json(
            "PUT",
            limited.http_addr(),
            &format!("/v1/kv/{key}"),
            Some(value.as_bytes()),
        )
        .unwrap();
        if status == 200 {
            assert_eq!(body, json!(true));
            accepted.push(key);
            assert!(accepted.len() < 20, "the quota never refused a write");
            continue;
        }
        assert!(status == 507 || status == 413, "HTTP {status}: {body}");
        assert!(body.to_string().contains("kv.max_bytes"), "{body}");
        break key;
    };
    let used: usize = accepted.iter().map(|k| k.len() + value.len()).sum();
    assert!(used <= QUOTA, "{used} bytes accepted");
    assert!(used + refused.len() + value.len() > QUOTA);
    assert_eq!(limited.kv_get(&refused), Ok(None));
    // A delete makes room.
    let status = limited.kv_delete(&accepted[0]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(limited.kv_put(&refused, &value), Ok(true));

    // Entries from a peer past the quota are refused and counted.
    for i in 0..10 {
        assert_eq!(
            cluster.agents[1].kv_put(&format!("p/{i}"), &value),
            Ok(true)
        );
    }
    wait_for(
        Duration::from_secs(15),
        "the peer's entries past the quota to be refused",
        || match refused_records(limited, "kv_quota")? {
            0 => Err("none refused yet".into()),
            _ => Ok(()),
        },
    );
    // What the limited agent holds, tombstones aside, stays within it.
    let keys = (0..=accepted.len())
        .map(|i| format!("q/{i}"))
        .chain((0..10).map(|i| format!("p/{i}")));
    let held: usize = keys
        .filter_map(|key| {
            let value = limited.kv_get(&key).unwrap()?;
            Some(key.len() + value.len())
        })
        .sum();
    assert!(held <= QUOTA, "holds {held} bytes");
    // The other agent has everything.
    for i in 0..10 {
        cluster.agents[1].wait_kv(&format!("p/{i}"), Some(&value), Duration::from_secs(1));
    }
}

/// Issue 20 (the reviewer's repro): four agents split 2|2 for longer than
/// the grace period. One side writes `orders/pending-42` (acknowledged,
/// reaches its partner); the other deletes another key and collects its
/// tombstone. On healing, the write is on all four agents (no delete ever
/// saw it) and the delete holds everywhere too.
#[test]
fn a_write_made_during_a_partition_survives_a_delete_collected_on_the_other_side() {
    let scratch = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(4, options(scratch.path(), "10s", ""));
    cluster.wait_all_alive(Duration::from_secs(20));
    assert_eq!(cluster.agents[2].kv_put("orders/old-7", "x"), Ok(true));
    assert_eq!(cluster.agents[2].kv_put("orders/kept", "k"), Ok(true));
    for agent in &cluster.agents {
        agent.wait_kv("orders/old-7", Some("x"), Duration::from_secs(15));
        agent.wait_kv("orders/kept", Some("k"), Duration::from_secs(15));
    }

    partition(&cluster, &[0, 1]);
    wait_for(
        Duration::from_secs(30),
        "node-0 to see node-2 and node-3 failed",
        || {
            let members = cluster.agents[0].members()?;
            let failed = members
                .iter()
                .filter(|(name, status)| (name == "node-2" || name == "node-3") && *status == 4)
                .count();
            if failed == 2 {
                Ok(())
            } else {
                Err(format!("{members:?}"))
            }
        },
    );
    // The write first, then the delete on the other side: the delete is
    // newer, as in the review.
    assert_eq!(cluster.agents[0].kv_put("orders/pending-42", "p"), Ok(true));
    cluster.agents[1].wait_kv("orders/pending-42", Some("p"), Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cluster.agents[2].kv_delete("orders/old-7"), Ok(200));
    cluster.agents[3].wait_kv("orders/old-7", None, Duration::from_secs(15));
    // Past the grace (10 s) and the next housekeeping round (every 30 s).
    wait_collected(&cluster.agents[2], Duration::from_secs(60));
    wait_collected(&cluster.agents[3], Duration::from_secs(60));
    assert_eq!(cluster.agents[2].kv_get("orders/pending-42"), Ok(None));

    heal(&cluster);
    cluster.wait_all_alive(Duration::from_secs(60));
    for agent in &cluster.agents {
        agent.wait_kv("orders/pending-42", Some("p"), Duration::from_secs(30));
        agent.wait_kv("orders/old-7", None, Duration::from_secs(30));
        agent.wait_kv("orders/kept", Some("k"), Duration::from_secs(5));
    }
    // Several anti-entropy rounds later, still so.
    stays(
        &cluster,
        "orders/pending-42",
        Some("p"),
        Duration::from_secs(8),
    );
    stays(&cluster, "orders/old-7", None, Duration::from_secs(1));
    for agent in &cluster.agents {
        assert!(
            !agent.log().contains("dropped KV entries"),
            "{} dropped entries",
            agent.name
        );
    }
    // The side that missed the delete kept the value it replaced.
    for agent in &cluster.agents[..2] {
        assert_eq!(
            quarantined_keys(agent),
            Ok(vec!["orders/old-7".to_string()]),
            "{}",
            agent.name
        );
    }
}

/// The quarantine's doors follow the token rules: reading it is a read
/// (open unless `acl.protect_reads`), clearing it is a write; the CLI's
/// `--clear` says so without the token and succeeds with it.
#[test]
fn reading_the_quarantine_is_a_read_and_clearing_it_a_write() {
    const TOKEN: &str = "quarantine-secret";
    let scratch = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(scratch.path(), "guarded", &["--acl-token", TOKEN]);
    let path = "/v1/shoal/kv/quarantine";
    let (status, body) = http_json("GET", agent.http_addr(), path, None).unwrap();
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = http_json("DELETE", agent.http_addr(), path, None).unwrap();
    assert_eq!(status, 403, "{body}");
    let cleared = agent.cli(&["kv", "quarantine", "--clear"]);
    assert!(!cleared.status.success(), "{cleared:?}");
    let cleared = agent.cli(&["--token", TOKEN, "kv", "quarantine", "--clear"]);
    assert!(cleared.status.success(), "{cleared:?}");
    assert!(
        String::from_utf8_lossy(&cleared.stdout).contains("Cleared 0"),
        "{cleared:?}"
    );
    let listed = agent.cli(&["kv", "quarantine", "--format", "json"]);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
    // Another method is not a clear.
    let (status, _) = http_json("PUT", agent.http_addr(), path, None).unwrap();
    assert_ne!(status, 200);
}
