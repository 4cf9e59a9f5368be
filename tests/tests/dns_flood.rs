//! A flood of DNS queries at one agent does not slow its failure
//! detection: the DNS server runs on a thread of its own, and the gossip
//! loop never waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_tests::dns::register_ttl_service;
use shoal_tests::{Agent, Cluster, wait_for};

/// How long until `observer` reports `victim` failed after a SIGKILL.
fn detection_time(observer: &Agent, victim: &mut Agent) -> Duration {
    let name = victim.name.clone();
    victim.kill();
    let killed = Instant::now();
    wait_for(Duration::from_secs(60), &format!("{name} failed"), || {
        let members = observer.members()?;
        match members.iter().find(|(member, _)| *member == name) {
            Some((_, 4)) => Ok(killed.elapsed()),
            other => Err(format!("{other:?}")),
        }
    })
}

#[test]
fn a_query_flood_does_not_slow_failure_detection() {
    let mut cluster = Cluster::start(4);
    cluster.wait_all_alive(Duration::from_secs(30));
    register_ttl_service(&cluster.agents[1], "web", "web-1", None, 80, &[], "passing");
    let quiet = {
        let (observer, rest) = cluster.agents.split_at_mut(1);
        detection_time(&observer[0], &mut rest[2])
    };

    // Two senders, each with up to 64 queries in flight, as fast as the
    // agent answers.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let target = cluster.agents[0].dns_addr();
    let query = shoal_tests::dns::web_a_query();
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, answered, query) = (stop.clone(), answered.clone(), query.clone());
            std::thread::spawn(move || {
                shoal_tests::dns::flood_udp(target, &query, 64, &stop, &answered);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let flooded = {
        let (observer, rest) = cluster.agents.split_at_mut(1);
        detection_time(&observer[0], &mut rest[1])
    };
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let answers = answered.load(Ordering::Relaxed);
    eprintln!(
        "failure detected in {quiet:?} when quiet, {flooded:?} under a flood \
         ({answers} answers during it)"
    );
    assert!(answers > 1000, "the flood got {answers} answers");
    // Generous: the machine is shared; a core loop stalled by the flood
    // would miss probes and take far longer, or declare the others failed.
    assert!(
        flooded < quiet * 2 + Duration::from_secs(5),
        "{flooded:?} vs {quiet:?}"
    );
    let members = cluster.agents[0].members().unwrap();
    let alive: Vec<_> = members.iter().filter(|(_, status)| *status == 1).collect();
    assert_eq!(alive.len(), 2, "{members:?}");
}
