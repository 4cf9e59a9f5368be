//! User events on this agent (Serf's and Consul's; the protocol side is
//! `shoal_protocol::event`): the filters each agent evaluates on what it
//! receives, the ring of recent events the API lists, and the counters
//! (Consul's JSON shape is in [`crate::consul_json`]).
//!
//! Filters are regular expressions, as Consul's: `node` over this agent's
//! node name, `service` over the names of its services, `tag` over the tags
//! of the services `service` matched. An event whose filters don't match is
//! dropped here (it still spreads to the others). Patterns are short
//! (`shoal_protocol::event::MAX_EVENT_FILTER`) and compiled with a small
//! size limit, so a peer can't make this agent spend much on them.
//!
//! Fires through the API spend a token of [`FireBudget`] (`[events]
//! fire_rate` and `fire_burst`); past it they answer 429 and are counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use regex::{Regex, RegexBuilder};
use shoal_protocol::NodeRecord;
use shoal_protocol::event::{EVENT_RING, EventCounters as ProtocolCounters, UserEvent};

use crate::config::EventsConfig;
use crate::metrics::{Counters, Exposition, load};

/// Compiled size limit of one filter.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Event counters (relaxed, monotonic), for metrics, and the fire budget
/// whose refusals they count.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events fired through this agent's API.
    pub fired: AtomicU64,
    /// Fires refused by the fire budget (429).
    pub rate_limited: AtomicU64,
    /// Of [`Self::refused`], events whose Lamport time was too far ahead of
    /// this agent's event clock.
    pub refused_ltime: AtomicU64,
    /// Events dropped from the gossip backlog, oldest first, to keep it at
    /// `shoal_protocol::event::EVENT_BACKLOG` events.
    pub backlog_dropped: AtomicU64,
    /// `[events] fire_rate` / `fire_burst`, spent by the fire handler.
    pub fire_budget: FireBudget,
    /// Events delivered to this agent (fired here or received) that matched
    /// its filters and were listed.
    pub listed: AtomicU64,
    /// Events delivered whose filters did not match this agent.
    pub filtered_out: AtomicU64,
    /// Events from peers refused as out of bounds.
    pub refused: AtomicU64,
    /// Events fired before this agent started (or too old): not replayed.
    pub ignored_old: AtomicU64,
}

impl EventCounters {
    /// Copies the protocol core's counts.
    pub fn copy_from(&self, counters: ProtocolCounters) {
        self.refused.store(counters.refused, Ordering::Relaxed);
        self.ignored_old
            .store(counters.ignored_old, Ordering::Relaxed);
        self.refused_ltime
            .store(counters.refused_ltime, Ordering::Relaxed);
        self.backlog_dropped
            .store(counters.backlog_dropped, Ordering::Relaxed);
    }
}

/// A token bucket for the fires through this agent's API: `fire_burst`
/// tokens, refilled at `fire_rate` a second. The limits come with each
/// call (from the config the API holds); the lock is held for one update.
#[derive(Debug, Default)]
pub struct FireBudget {
    /// Tokens left and when they were counted; `None` until the first fire
    /// (the bucket starts full).
    bucket: Mutex<Option<(f64, Instant)>>,
}

impl FireBudget {
    /// Takes a token at `now` if there is one.
    pub fn try_take(&self, limits: &EventsConfig, now: Instant) -> bool {
        let burst = f64::from(limits.fire_burst);
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = bucket.get_or_insert((burst, now));
        let refilled = now.saturating_duration_since(*last).as_secs_f64() * limits.fire_rate;
        *tokens = (*tokens + refilled).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Compiles one filter; `None` for an empty one.
pub fn compile_filter(pattern: &str) -> Result<Option<Regex>, regex::Error> {
    if pattern.is_empty() {
        return Ok(None);
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
}

/// Whether `event` is for this agent, whose record is `local`. A filter
/// that doesn't compile matches nothing (the firing agent refuses those,
/// so only a peer's bad event gets here).
pub fn matches(event: &UserEvent, local: &NodeRecord) -> bool {
    let compiled = (
        compile_filter(&event.node_filter),
        compile_filter(&event.service_filter),
        compile_filter(&event.tag_filter),
    );
    let (Ok(node), Ok(service), Ok(tag)) = compiled else {
        return false;
    };
    if node.is_some_and(|node| !node.is_match(&local.name)) {
        return false;
    }
    match (service, tag) {
        (None, None) => true,
        // Consul: a tag filter without a service filter is ignored.
        (None, Some(_)) => true,
        (Some(service), tag) => local.services.iter().any(|candidate| {
            service.is_match(&candidate.name)
                && tag
                    .as_ref()
                    .is_none_or(|tag| candidate.tags.iter().any(|t| tag.is_match(t)))
        }),
    }
}

/// The ID as a UUID string (`8-4-4-4-12` hex digits).
pub fn uuid(id: &[u8; 16]) -> String {
    crate::uuid::uuid_text(id)
}

/// A new random event ID (a version 4 UUID).
pub fn random_id() -> [u8; 16] {
    crate::uuid::version_4(rand::random())
}

/// The recent events for this agent, oldest first, at most
/// [`EVENT_RING`]: kept by the core loop, published in snapshots.
#[derive(Debug, Default)]
pub struct RecentEvents {
    ring: VecDeque<Arc<UserEvent>>,
}

impl RecentEvents {
    /// Keeps the delivered events that match `local`; returns whether any
    /// did.
    pub fn take(
        &mut self,
        delivered: Vec<UserEvent>,
        local: &NodeRecord,
        counters: &EventCounters,
    ) -> bool {
        let mut any = false;
        for event in delivered {
            if !matches(&event, local) {
                counters.filtered_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            counters.listed.fetch_add(1, Ordering::Relaxed);
            if self.ring.len() == EVENT_RING {
                self.ring.pop_front();
            }
            self.ring.push_back(Arc::new(event));
            any = true;
        }
        any
    }

    /// A copy for a snapshot (pointers only).
    pub fn list(&self) -> Arc<Vec<Arc<UserEvent>>> {
        Arc::new(self.ring.iter().cloned().collect())
    }
}

impl Counters for EventCounters {
    fn prefix(&self) -> &'static str {
        "shoal_events_"
    }

    fn visit(&self, out: &mut Exposition) {
        out.counter(
            "shoal_events_fired_total",
            "User events fired through this agent's API.",
            load(&self.fired),
        );
        out.counter(
            "shoal_events_listed_total",
            "User events delivered here whose filters matched this agent.",
            load(&self.listed),
        );
        out.counter(
            "shoal_events_filtered_out_total",
            "User events delivered here whose filters did not match this agent.",
            load(&self.filtered_out),
        );
        out.counter(
            "shoal_events_refused_total",
            "User events from peers refused as out of bounds.",
            load(&self.refused),
        );
        out.counter(
            "shoal_events_ignored_old_total",
            "User events fired before this agent started, or too old: not replayed.",
            load(&self.ignored_old),
        );
        out.counter(
            "shoal_events_refused_ltime_total",
            "User events from peers refused because their Lamport time was too far ahead of ours.",
            load(&self.refused_ltime),
        );
        out.counter(
            "shoal_events_rate_limited_total",
            "User event fires refused (429) past events.fire_rate / events.fire_burst.",
            load(&self.rate_limited),
        );
        out.counter(
            "shoal_events_backlog_dropped_total",
            "User events dropped from the gossip backlog, oldest first, to keep it bounded.",
            load(&self.backlog_dropped),
        );
    }
}

#[cfg(test)]
mod tests {
    use shoal_protocol::NodeId;
    use shoal_protocol::record::ServiceRecord;

    use super::*;

    fn event(node: &str, service: &str, tag: &str) -> UserEvent {
        UserEvent {
            id: [1; 16],
            name: "deploy".into(),
            payload: b"v42".to_vec(),
            node_filter: node.into(),
            service_filter: service.into(),
            tag_filter: tag.into(),
            ltime: 7,
            time: 1,
        }
    }

    fn local() -> NodeRecord {
        let id = NodeId {
            addr: "127.0.0.1:7946".parse().unwrap(),
            generation: 1,
        };
        let mut record = NodeRecord::new(id, "web-3");
        record.services.push(ServiceRecord {
            id: "api-1".into(),
            name: "api".into(),
            address: String::new(),
            port: 80,
            tags: vec!["primary".into()],
            meta: Default::default(),
            checks: Vec::new(),
        });
        record
    }

    #[test]
    fn filters_match_node_service_and_tag() {
        let local = local();
        assert!(matches(&event("", "", ""), &local));
        assert!(matches(&event("^web-[0-9]$", "", ""), &local));
        assert!(!matches(&event("^db", "", ""), &local));
        assert!(matches(&event("", "^api$", ""), &local));
        assert!(!matches(&event("", "^web$", ""), &local));
        assert!(matches(&event("", "api", "prim"), &local));
        assert!(!matches(&event("", "api", "^backup$"), &local));
        assert!(!matches(&event("(", "", ""), &local));
    }

    #[test]
    fn consul_json_shape() {
        let body = crate::consul_json::user_event(&event("", "api", ""));
        assert_eq!(body["ID"], "01010101-0101-0101-0101-010101010101");
        assert_eq!(body["Payload"], "djQy");
        assert_eq!(body["LTime"], 7);
        assert_eq!(body["Version"], 1);
        assert_eq!(body["ServiceFilter"], "api");
        let id = uuid(&random_id());
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn the_fire_budget_allows_the_burst_then_the_rate() {
        let budget = FireBudget::default();
        let limits = EventsConfig {
            fire_rate: 2.0,
            fire_burst: 5,
        };
        let start = Instant::now();
        let allowed = (0..20).filter(|_| budget.try_take(&limits, start)).count();
        assert_eq!(allowed, 5);
        let later = start + std::time::Duration::from_secs(1);
        let allowed = (0..20).filter(|_| budget.try_take(&limits, later)).count();
        assert_eq!(allowed, 2);
    }

    #[test]
    fn the_ring_keeps_the_last_matching_events() {
        let counters = EventCounters::default();
        let mut recent = RecentEvents::default();
        let local = local();
        let many = (0..EVENT_RING + 5).map(|_| event("", "", "")).collect();
        assert!(recent.take(many, &local, &counters));
        assert!(!recent.take(vec![event("^db", "", "")], &local, &counters));
        assert_eq!(recent.list().len(), EVENT_RING);
        assert_eq!(counters.filtered_out.load(Ordering::Relaxed), 1);
    }
}
