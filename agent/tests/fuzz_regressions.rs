//! Replays the saved fuzz inputs of the agent's targets (the config file
//! parser, the service-registration parser, the DNS query path and the
//! `?filter=` language): every crash the fuzzer
//! ever found, kept as a regression, and the seed corpus, through the same
//! entry points the fuzz targets call (`shoal_agent::fuzzing`).

use std::path::PathBuf;

#[path = "fuzz_regressions/seeds.rs"]
mod seeds;

fn regressions(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target)
}

/// Feeds every input in `fuzz/regressions/<target>/` to `run`; returns how
/// many there were.
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
fn config_inputs_replay_without_panicking() {
    assert!(replay("config", shoal_agent::fuzzing::config) >= 3);
}

#[test]
fn service_inputs_replay_without_panicking() {
    assert!(replay("service", shoal_agent::fuzzing::service) >= 3);
}

/// The DNS query path and the filter language, from the same function.
#[test]
fn dns_and_filter_inputs_replay_without_panicking() {
    assert!(replay("dns", shoal_agent::fuzzing::dns) >= 20, "dns seeds");
    assert!(
        replay("filter", shoal_agent::fuzzing::filter) >= 20,
        "filter seeds"
    );
}

/// Writes the seed corpora of `dns` and `filter`. Run by hand after
/// changing them.
#[test]
#[ignore = "regenerates fuzz/regressions seeds"]
fn write_seed_corpus() {
    seeds::write_dns_seeds();
    seeds::write_filter_seeds();
}
