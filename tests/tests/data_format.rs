//! The data dir's format version on real agents (docs/upgrading.md): a
//! newer format is refused naming both and left untouched; a migration
//! killed halfway is rolled back from its backup at the next start and run
//! again. Only format 1 exists: a build pretends to read format 2 (with a
//! step from 1 that pauses halfway) through the test-only
//! `SHOAL_TEST_DATA_FORMAT` and `SHOAL_TEST_MIGRATION_PAUSE_MS`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use shoal_tests::{Agent, AgentOptions, wait_for};

/// Every file under `dir` with its size, modification time and content.
fn listing(dir: &Path) -> BTreeMap<String, (u64, SystemTime, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let content = std::fs::read(&path).unwrap();
            files.insert(name, (meta.len(), meta.modified().unwrap(), content));
        }
    }
    files
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

fn stop(agent: &mut Agent) {
    agent.signal(libc::SIGTERM);
    assert!(
        agent.wait_exit(Duration::from_secs(20)).is_some(),
        "the agent did not stop"
    );
}

fn format_env(format: Option<u8>, pause_ms: Option<u64>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(format) = format {
        env.push(("SHOAL_TEST_DATA_FORMAT".into(), format.to_string()));
    }
    if let Some(pause) = pause_ms {
        env.push(("SHOAL_TEST_MIGRATION_PAUSE_MS".into(), pause.to_string()));
    }
    env
}

#[test]
fn a_migration_killed_halfway_is_rolled_back_and_a_newer_format_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(root.path(), AgentOptions::named("disk"));
    agent.wait_serving();
    assert_eq!(agent.kv_put("kept/across", "migrations"), Ok(true));
    stop(&mut agent);
    let dir = agent.data_dir.clone();
    assert_eq!(read(&dir, "FORMAT").as_deref(), Some("1\n"));
    let node_id = read(&dir, "node-id").unwrap();

    // A build of format 2, killed in the middle of its step from 1.
    agent.options.env = format_env(Some(2), Some(60_000));
    agent.restart();
    wait_for(
        Duration::from_secs(20),
        "the migration to be halfway",
        || match (
            dir.join("format2-step-a").exists(),
            dir.join(".migration/backup-complete").exists(),
        ) {
            (true, true) => Ok(()),
            seen => Err(format!("{seen:?}")),
        },
    );
    agent.kill();
    assert_eq!(
        read(&dir, "FORMAT").as_deref(),
        Some("1\n"),
        "not marked yet"
    );

    // Format 1 again: the half-done step is rolled back, the data is whole.
    agent.options.env = Vec::new();
    agent.restart();
    agent.wait_serving();
    agent.wait_kv("kept/across", Some("migrations"), Duration::from_secs(10));
    assert!(
        agent.log().contains("rolled back from its backup"),
        "{}",
        agent.log()
    );
    stop(&mut agent);
    assert_eq!(read(&dir, "FORMAT").as_deref(), Some("1\n"));
    assert!(!dir.join("format2-step-a").exists() && !dir.join(".migration").exists());
    assert_eq!(read(&dir, "node-id"), Some(node_id.clone()));

    // Format 2, killed halfway again, then started again as format 2: the
    // migration resumes from the backup and completes.
    agent.options.env = format_env(Some(2), Some(60_000));
    agent.restart();
    wait_for(
        Duration::from_secs(20),
        "the migration to be halfway",
        || {
            if dir.join("format2-step-a").exists() {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    agent.kill();
    agent.options.env = format_env(Some(2), None);
    agent.restart();
    agent.wait_serving();
    agent.wait_kv("kept/across", Some("migrations"), Duration::from_secs(10));
    stop(&mut agent);
    assert_eq!(read(&dir, "FORMAT").as_deref(), Some("2\n"));
    assert_eq!(read(&dir, "format2-step-b").as_deref(), Some("b\n"));
    assert!(!dir.join("format2-step-a").exists(), "the step finished");
    assert!(!dir.join(".migration").exists(), "the backup is removed");
    assert_eq!(read(&dir, "node-id"), Some(node_id));

    // The format-1 build refuses the format-2 dir, naming both, and
    // changes nothing.
    let before = listing(&dir);
    agent.options.env = Vec::new();
    agent.restart();
    let code = agent.wait_exit(Duration::from_secs(20));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = agent.log();
    assert!(
        log.contains(
            "is in data dir format 2, written by a newer shoal; this agent reads format 1"
        ),
        "{log}"
    );
    assert_eq!(listing(&dir), before, "the data dir changed");
}
