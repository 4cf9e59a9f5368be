//! The sans-IO node: foca plus Shoal's cluster state and join policy.
//!
//! The agent and the simulator drive the same [`Node`]: they feed it
//! datagrams, timers and local changes, then carry out what it asks for in
//! its [`Effects`] (send these datagrams, fire these timers after these
//! delays, run an anti-entropy exchange with these peers). Nothing here
//! reads a clock or touches a socket.
//!
//! - this file: [`Node`] itself, datagrams, timers, our own record, KV
//!   writes, and the reactions to foca's notifications.
//! - `bounded_codec`: foca's codec, refusing identities from the future.
//! - `config`: [`GossipConfig`] and the foca configuration derived from it.
//! - `effects`: [`Effects`], [`NodeTimer`], and local health wiring.
//! - `join`: announcing to seeds, rejoining, telling the declared-down,
//!   leaving.
//! - `members`: [`MemberView`], [`MemberStatus`], the membership table.
//! - `name`: checking that nobody else holds our node name
//!   ([`NameEvent`]).
//! - `anti_entropy`: the anti-entropy step function ([`Node::sync_open`],
//!   [`Node::on_sync`]).
//! - `pages`: the KV pages of an exchange (a walk over the differing
//!   buckets, a bounded page at a time).
//! - `reap`: forgetting failed and left members on their schedules, and
//!   the operator's force-leave ([`Node::force_leave`]).
//! - `events`: firing and taking user events (see [`crate::event`]).
//! - `peers`: bounds on what peers make the node do and hold: pulls of
//!   digest rumors, members learned per exchange, records of forgotten
//!   members.

mod anti_entropy;
mod bounded_codec;
mod config;
mod coordinates;
mod effects;
mod events;
mod join;
mod members;
mod name;
mod pages;
mod peers;
mod reap;
mod suspects;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foca::{Foca, Identity, OwnedNotification};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use config::GossipConfig;
pub use effects::{Effects, NodeTimer};
pub use members::{MemberStatus, MemberView};
pub use name::NameEvent;
pub use pages::{OurPage, build_page};
pub use peers::max_learned;
pub use reap::{ForceLeaveError, ForceLeft};

use crate::envelope::{Envelope, EnvelopeError, PayloadKind};
use crate::event::EventLog;
use crate::identity::NodeId;
use crate::kv::{KvEntry, KvError, KvStore, Stored};
use crate::lifeguard::LocalHealth;
use crate::record::NodeRecord;
use crate::rumor::{Rumor, RumorHandler};
use crate::state::ClusterState;
use bounded_codec::{BoundedCodec, GenerationBound};

type Swim = Foca<NodeId, BoundedCodec, StdRng, RumorHandler>;

/// Least time between two exchanges started because a member came up.
/// Without it, a node that joins a cluster of N (or sees a partition heal)
/// opened N exchanges at once, and every member opened one with the
/// newcomer: O(N^2) exchanges for a cluster starting together.
pub const UP_SYNC_SPACING: Duration = Duration::from_secs(1);

/// Exchanges a node makes [`CATCH_UP_SPACING`] apart (jittered ±50 %)
/// from its start, before it falls back to the periodic interval: while
/// its name is not checked (its record is hidden until an exchange
/// completes, and a seed that many newcomers reach at once refuses most of
/// them), then while it holds members active whose record it lacks (it
/// asks them). The budget is full again once it lacks none.
///
/// Agents started together claim their names within the same second, and
/// gossip alone carries N records to everyone only after several seconds
/// (a few fit in a datagram), while one exchange brings all that the peer
/// holds. In the simulator (`simulations/tests/cold_start.rs`: 250 nodes
/// through one seed, 8 exchanges served at once), every record reached
/// every node after 1.7-1.8 s with these values; with one retry a second
/// and no catch-up, a newcomer refused by the seed waited for the periodic
/// exchange (7.5-22.5 s). A node that can never complete an exchange (TCP
/// blocked) makes these attempts once, then one a second (`rejoin_min`).
pub const CATCH_UP_EXCHANGES: u8 = 20;
/// See [`CATCH_UP_EXCHANGES`].
pub const CATCH_UP_SPACING: Duration = Duration::from_millis(250);

/// Counters, all monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Datagrams dropped at the envelope (other cluster, bad magic, ...).
    pub rejected_envelope: u64,
    /// Datagrams that passed the envelope but that foca refused.
    pub rejected_swim: u64,
    /// Records merged from anti-entropy exchanges.
    pub synced_records: u64,
    /// Members this node saw go down (declared by anyone, or left).
    pub members_down: u64,
    /// Node records and KV entries from peers refused for exceeding the
    /// limits (`state::within_limits`, `state::kv_within_limits`).
    pub refused_records: u64,
    /// KV write times and record generations from peers refused for being
    /// more than `max_clock_drift` ahead of our clock.
    pub refused_clock_drift: u64,
    /// KV entries from peers for keys we don't hold, older than a delete
    /// of that key we remember: the delete was handed back (see
    /// [`crate::kv`]).
    pub refused_deleted: u64,
    /// KV entries from peers refused because they would take the store
    /// past `kv_max_bytes`.
    pub refused_kv_quota: u64,
    /// Our live KV entries replaced by a delete a peer remembered and
    /// handed back (see [`crate::kv`]): the driver quarantines them.
    pub kv_quarantined: u64,
    /// Datagrams refused for a wire version outside ours (also counted in
    /// `rejected_envelope`).
    pub rejected_wire_version: u64,
    /// Datagrams accepted, by wire version (at most our range's size).
    pub datagrams_in_by_version: BTreeMap<u8, u64>,
    /// Rumors of a kind this build doesn't know (a newer agent's), skipped.
    pub skipped_unknown_rumors: u64,
    /// Network coordinates that arrived on peers' acks.
    pub coordinates_received: u64,
}

/// What changed in a node since the driver last asked
/// ([`Node::take_changes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The membership table or a node record, ours included.
    pub cluster: bool,
    /// The KV store.
    pub kv: bool,
}

impl Changes {
    pub fn any(self) -> bool {
        self.cluster || self.kv
    }
}

/// Why a datagram was dropped. Nothing in the node changed.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("payload kind {0:?} is not valid in a datagram")]
    WrongKind(PayloadKind),
    #[error("SWIM packet refused: {0}")]
    Swim(#[from] foca::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Leaving,
    Left,
}

/// A Shoal cluster member, without I/O.
pub struct Node {
    swim: Swim,
    state: Arc<Mutex<ClusterState>>,
    config: GossipConfig,
    envelope: Envelope,
    effects: Effects,
    rng: StdRng,
    /// The cluster size foca's configuration was last derived from.
    size_bucket: u32,
    rejoin_token: u32,
    rejoin_backoff: Duration,
    phase: Phase,
    /// The membership or a node record (ours included) changed.
    changed: bool,
    renewed: Option<NodeId>,
    /// Another live agent held our name when we checked it: we never
    /// claim it (see `name`).
    name_taken: bool,
    /// Exchanges left before the periodic interval (see
    /// [`CATCH_UP_EXCHANGES`]).
    catch_up: u8,
    /// The live agent that also claims the name we hold.
    name_rival: Option<NodeId>,
    name_events: Vec<name::NameEvent>,
    /// Identities we hold as down, by address, to answer their datagrams
    /// with `TurnUndead` (see [`Node::tell_if_declared_down`]).
    down: HashMap<SocketAddr, NodeId>,
    /// When we last announced ourselves to a peer that addressed an
    /// earlier identity of ours (see [`Node::tell_if_declared_down`]).
    stale_told: HashMap<SocketAddr, Duration>,
    /// Down members waiting to be forgotten, and whether on the left
    /// schedule (see `reap`).
    reaps: HashMap<NodeId, bool>,
    /// Members a prune named while we held them as suspect: pruned when
    /// declared down (see `reap`). Cleared past `reap::MAX_PRUNE_WHEN_DOWN`.
    prune_when_down: std::collections::HashSet<NodeId>,
    /// How many members foca held when we last looked (see
    /// `Node::drop_reaped_again`).
    known_members: usize,
    /// Whether a `Pulls` timer is on its way.
    pull_timer: bool,
    /// The next rejoin announces to every seed, live members included:
    /// set when we renewed our identity.
    announce_all_seeds: bool,
    /// When a member coming up last made us start an exchange (see
    /// [`UP_SYNC_SPACING`]).
    last_up_sync: Option<Duration>,
    counters: Counters,
    /// Whether we merged a peer's side of an exchange since we were last
    /// alone (or started): tombstones are collected only then.
    kv_in_touch: bool,
    /// Deletes remembered and forgotten since the driver last asked.
    deletes_changed: crate::kv::Collected,
    /// The newest generation foca's codec accepts, moved with the clock.
    generation_bound: Arc<GenerationBound>,
    /// User events, shared with the rumor handler as the state is.
    events: Arc<Mutex<EventLog>>,
    /// Our network coordinate (see `coordinates`).
    vivaldi: crate::coordinate::Vivaldi<NodeId>,
}

impl Node {
    /// A node that has not contacted anyone yet; call [`Node::start`].
    pub fn new(mut local: NodeRecord, config: GossipConfig, envelope: Envelope, seed: u64) -> Self {
        // Advertise the wire versions we speak (peers seal what they send
        // us in the highest both know).
        local.tags.insert(
            crate::record::WIRE_TAG.into(),
            crate::record::wire_tag(envelope.range()),
        );
        let mut state = ClusterState::new(local.clone());
        // A node with seeds joins a cluster that may hold its name already:
        // it offers its record only once the name is checked (see `name`).
        let joins = config.seeds.iter().any(|seed| *seed != local.id.addr);
        state.set_claimed(!(config.check_name && joins));
        state.set_limits(config.max_clock_drift, config.kv_max_bytes);
        let state = Arc::new(Mutex::new(state));
        let health = LocalHealth::new(config.local_health, config.probe_rtt / 2);
        let generation_bound = GenerationBound::new();
        let events = Arc::new(Mutex::new(EventLog::new()));
        let swim = Foca::with_custom_broadcast(
            local.id,
            config.swim_config(1),
            StdRng::seed_from_u64(seed),
            BoundedCodec {
                bound: generation_bound.clone(),
            },
            RumorHandler::new(state.clone(), events.clone()),
        );
        let suspicion = effects::SuspicionParams {
            suspicion_mult: config.suspicion_mult,
            max_mult: config.suspicion_max_mult,
            cluster_size: 1,
            dynamic: false,
        };
        let effects = Effects::new(
            envelope.clone(),
            state.clone(),
            health,
            suspicion,
            config.probe_period,
            seed,
        );
        Self {
            swim,
            state,
            rejoin_backoff: config.rejoin_min,
            config,
            effects,
            envelope,
            rng: StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x5348_4f4c),
            size_bucket: 1,
            rejoin_token: 0,
            phase: Phase::Running,
            changed: true,
            renewed: None,
            name_taken: false,
            catch_up: CATCH_UP_EXCHANGES,
            name_rival: None,
            name_events: Vec::new(),
            down: HashMap::new(),
            stale_told: HashMap::new(),
            reaps: HashMap::new(),
            prune_when_down: std::collections::HashSet::new(),
            known_members: 0,
            pull_timer: false,
            announce_all_seeds: false,
            last_up_sync: None,
            counters: Counters::default(),
            kv_in_touch: false,
            deletes_changed: crate::kv::Collected::default(),
            generation_bound,
            events,
            vivaldi: crate::coordinate::Vivaldi::new(
                crate::coordinate::CoordinateConfig::default(),
                seed,
            ),
        }
    }

    /// The current time (since the Unix epoch): the driver calls this
    /// before each call into the node, from the wall clock or a virtual
    /// one. It bounds what peers may claim (see [`crate::clock`]) and
    /// dates tombstones.
    pub fn set_clock(&mut self, now: Duration) {
        let mut state = self.lock_state();
        state.set_clock(now);
        let newest = state.clock().max_generation();
        drop(state);
        self.generation_bound.set(newest);
        self.effects.now = Some(now);
    }

    /// Starts joining through the seeds and schedules periodic work.
    pub fn start(&mut self) {
        self.mark_events_start();
        self.effects
            .timers
            .push((Duration::ZERO, NodeTimer::Rejoin(self.rejoin_token)));
        // The first exchanges come quickly (see `CATCH_UP_EXCHANGES`).
        let first_sync = self.jittered(CATCH_UP_SPACING);
        self.effects
            .timers
            .push((first_sync, NodeTimer::AntiEntropy));
        // A node that needs no name check (no seeds but itself) gossips its
        // record as a newcomer does once checked: otherwise it would reach
        // the others only by exchanges, and a seed that many newcomers
        // reach at once refuses most of theirs.
        if self.name_claimed() {
            let record = self.lock_state().local().clone();
            if let Err(error) = self.swim.add_broadcast(&Rumor::encode_for(&record)) {
                debug_assert!(false, "our own rumor was refused: {error}");
            }
        }
    }

    /// Feeds one received datagram (envelope included).
    pub fn handle_datagram(&mut self, packet: &[u8]) -> Result<(), DatagramError> {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += packet.len() as u64;
        let opened = self.envelope.open(packet).inspect_err(|error| {
            self.counters.rejected_envelope += 1;
            if matches!(error, EnvelopeError::UnknownVersion { .. }) {
                self.counters.rejected_wire_version += 1;
            }
        })?;
        *self
            .counters
            .datagrams_in_by_version
            .entry(packet[4])
            .or_default() += 1;
        if opened.kind != PayloadKind::Swim {
            self.counters.rejected_envelope += 1;
            return Err(DatagramError::WrongKind(opened.kind));
        }
        let payload = opened.payload;
        if let Some(trailer) = &opened.trailer {
            self.note_sender_coordinate(&payload, trailer);
        }
        self.tell_if_declared_down(&payload);
        let result = self.swim.handle_data(&payload, &mut self.effects);
        self.after_swim();
        self.copy_refusals();
        result.map_err(|error| {
            self.counters.rejected_swim += 1;
            DatagramError::Swim(error)
        })
    }

    /// Delivers a timer the node asked for.
    pub fn handle_timer(&mut self, timer: NodeTimer) {
        match timer {
            NodeTimer::Swim(timer) => {
                let removed = match &timer {
                    foca::Timer::RemoveDown(id) => Some(*id),
                    _ => None,
                };
                self.effects.suspicions.fired(&timer);
                if matches!(timer, foca::Timer::ProbeRandomMember(_)) {
                    self.effects.suspicion.dynamic = self.all_read_accusations();
                }
                if let Err(error) = self.swim.handle_timer(timer, &mut self.effects) {
                    // foca only fails a timer on an encoding error of our own
                    // making; the timer is simply lost, as in foca's examples.
                    debug_assert!(false, "foca timer failed: {error}");
                }
                if let Some(id) = removed {
                    self.forget_if_removed(id);
                }
            }
            NodeTimer::Rejoin(token) if token == self.rejoin_token => self.rejoin(),
            NodeTimer::Rejoin(_) => {}
            NodeTimer::AntiEntropy => {
                self.sweep_orphans();
                let (peer, mean) = self.next_exchange();
                self.effects.syncs.extend(peer);
                let next = self.jittered(mean);
                self.effects.timers.push((next, NodeTimer::AntiEntropy));
            }
            NodeTimer::FinishLeave => {
                if self.phase == Phase::Leaving {
                    let _ = self.swim.leave_cluster(&mut self.effects);
                    self.phase = Phase::Left;
                    self.changed = true;
                }
            }
            NodeTimer::Pulls => self.tick_pulls(),
            NodeTimer::Reap { id, left } => self.on_reap_timer(id, left),
        }
        self.after_swim();
    }

    /// Changes our own record (bumping its version) and gossips it (once
    /// our name is claimed; see `name`).
    pub fn update_local(&mut self, change: impl FnOnce(&mut NodeRecord)) {
        let record = self.lock_state().update_local(change).clone();
        self.changed = true;
        if !self.name_claimed() {
            return;
        }
        if let Err(error) = self.swim.add_broadcast(&Rumor::encode_for(&record)) {
            debug_assert!(false, "our own rumor was refused: {error}");
        }
        // Push it now rather than at the next gossip tick: record changes
        // are rare, and this is what service lookups wait for.
        if self.swim.num_members() > 0 {
            let _ = self.swim.gossip(&mut self.effects);
        }
    }

    /// Changes our own record without a new version and without gossip
    /// (see [`ClusterState::refresh_local`]).
    pub fn refresh_local(&mut self, change: impl FnOnce(&mut NodeRecord)) {
        self.lock_state().refresh_local(change);
        self.changed = true;
    }

    /// Copies of our records with these names (unknown names are skipped).
    pub fn records_named(&self, names: &[String]) -> Vec<NodeRecord> {
        self.lock_state().records_named(names)
    }

    /// A local KV write (or delete): applied, then gossiped. Refused (and
    /// not applied) when an entry already there wins (the caller chose a
    /// time that is not the newest) or the store would exceed its quota.
    pub fn write_kv(&mut self, entry: KvEntry) -> Result<Stored, KvError> {
        let stored = self.lock_state().apply_local_kv(Arc::new(entry.clone()))?;
        let rumor = Rumor::encode_kv(&entry, self.identity().addr);
        if let Err(error) = self.swim.add_broadcast(&rumor) {
            debug_assert!(false, "our own KV rumor was refused: {error}");
        }
        Ok(stored)
    }

    /// Collects the tombstones older than `grace` both by their write time
    /// and by when we received them, remembering their deletes, and forgets
    /// deletes older than [`crate::kv::REMEMBER_DELETES_FOR`] graces (see
    /// [`crate::kv`]); returns the collected keys for the driver to drop
    /// from disk ([`Node::take_deletes_changed`] has the rest). Nothing is collected before the clock is set, nor while we
    /// are not in touch: alone (or just started), until we have merged a
    /// peer's side of an exchange. A node cut off from everyone keeps its
    /// deletes, so it can't make its peers drop what they wrote meanwhile.
    pub fn collect_tombstones(&mut self, grace: Duration) -> Vec<String> {
        if !self.kv_in_touch {
            return Vec::new();
        }
        let mut state = self.lock_state();
        let Some(now) = state.clock().now_ntp64() else {
            return Vec::new();
        };
        let cutoff = now.saturating_sub(crate::clock::ntp64(grace));
        let collected = state.kv_mut().collect_tombstones(cutoff);
        let memory = grace.saturating_mul(crate::kv::REMEMBER_DELETES_FOR);
        let forget = now.saturating_sub(crate::clock::ntp64(memory));
        let aged = state
            .kv_mut()
            .remembered_deletes_mut()
            .forget_before(forget);
        if !collected.keys.is_empty() || !aged.is_empty() {
            state.mark_kv_changed();
        }
        drop(state);
        let changed = &mut self.deletes_changed;
        changed.remembered.extend(collected.remembered);
        changed.forgotten.extend(collected.forgotten);
        changed.forgotten.extend(aged);
        collected.keys
    }

    /// Deletes remembered (key hash, time) and forgotten (key hash) since
    /// the last call: the driver saves them.
    pub fn take_deletes_changed(&mut self) -> crate::kv::Collected {
        std::mem::take(&mut self.deletes_changed)
    }

    /// Live entries a delete handed back by a peer replaced since the last
    /// call, each with the delete's time (see [`crate::kv`]): the driver
    /// quarantines them.
    pub fn take_kv_quarantined(&mut self) -> Vec<(KvEntry, u64)> {
        self.lock_state().take_kv_quarantined()
    }

    /// Whether the quota refused a peer's entry since an exchange last went
    /// through without a refusal: we lack entries nobody deleted. The
    /// driver persists it.
    pub fn kv_incomplete(&self) -> bool {
        self.lock_state().kv_incomplete()
    }

    /// Restores the flag of [`Node::kv_incomplete`] from disk.
    pub fn set_kv_incomplete(&mut self, incomplete: bool) {
        self.lock_state().set_kv_incomplete(incomplete);
    }

    /// The most bytes the KV store may hold.
    pub fn kv_max_bytes(&self) -> u64 {
        self.lock_state().kv_max_bytes()
    }

    /// Copies the state's refusal counts into our counters.
    fn copy_refusals(&mut self) {
        let (refusals, quarantined) = {
            let state = self.lock_state();
            (state.refusals(), state.kv_quarantined_total())
        };
        self.counters.refused_records = refusals.oversized;
        self.counters.refused_clock_drift = refusals.clock_drift + self.generation_bound.refused();
        self.counters.refused_deleted = refusals.deleted;
        self.counters.refused_kv_quota = refusals.kv_quota;
        self.counters.kv_quarantined = quarantined;
        self.counters.skipped_unknown_rumors = refusals.unknown_rumors;
    }

    /// The KV store as of now (an O(1) copy).
    pub fn kv(&self) -> KvStore {
        self.lock_state().kv().clone()
    }

    /// Direct access to the KV store, for restoring it from disk (entries
    /// and remembered deletes). Changes made here are not gossiped, and skip the
    /// checks on peers' entries.
    pub fn with_kv<T>(&mut self, change: impl FnOnce(&mut KvStore) -> T) -> T {
        let mut state = self.lock_state();
        state.mark_kv_changed();
        change(state.kv_mut())
    }

    /// The KV store's local change counter (see [`KvStore::index`]).
    pub fn kv_index(&self) -> u64 {
        self.lock_state().kv().index()
    }

    /// KV entries applied (by anyone) since the last call: the driver
    /// persists them.
    pub fn take_kv_applied(&mut self) -> Vec<Stored> {
        self.lock_state().take_kv_applied()
    }

    /// What the node wants done. The driver drains it after every call.
    pub fn effects(&mut self) -> &mut Effects {
        &mut self.effects
    }

    /// What changed since the last call: the membership and node records
    /// (ours included), and the KV store, apart, so that readers of one are
    /// not woken by changes to the other.
    pub fn take_changes(&mut self) -> Changes {
        let mut state = self.lock_state();
        let records = state.take_changed();
        let kv = state.take_kv_changed();
        drop(state);
        Changes {
            cluster: std::mem::replace(&mut self.changed, false) | records,
            kv,
        }
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        self.take_changes().any()
    }

    /// A new identity foca took after the cluster declared us down; the
    /// driver persists its generation.
    pub fn take_renewed(&mut self) -> Option<NodeId> {
        self.renewed.take()
    }

    pub fn identity(&self) -> NodeId {
        *self.swim.identity()
    }

    pub fn local_record(&self) -> NodeRecord {
        self.lock_state().local().clone()
    }

    /// Records of every node we know, ours included.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.lock_state().records().cloned().collect()
    }

    /// Active members besides ourselves.
    pub fn active_members(&self) -> usize {
        self.swim.num_members()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn lock_state(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().expect("cluster state lock poisoned")
    }

    /// Reacts to what foca reported during the last call.
    fn after_swim(&mut self) {
        let notifications = std::mem::take(&mut self.effects.notifications);
        for notification in notifications {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    self.down.remove(&id.addr);
                    self.reaps.remove(&id);
                    let now = {
                        let mut state = self.lock_state();
                        state.member_up(id);
                        state.clock().now()
                    };
                    // Fetch its record (and give it ours) right away, but
                    // not for every member of a join's feed or of a healed
                    // partition: one exchange brings all that the peer
                    // holds, and a newcomer gossips its record once it has
                    // checked its name (see `name`).
                    let due = match (now, self.last_up_sync) {
                        (Some(now), Some(last)) => now.saturating_sub(last) >= UP_SYNC_SPACING,
                        _ => true,
                    };
                    if due {
                        self.last_up_sync = now;
                        self.effects.syncs.push(id.addr());
                    }
                    self.changed = true;
                }
                OwnedNotification::MemberDown(id) => {
                    self.forget_coordinate(&id);
                    self.down.insert(id.addr, id);
                    self.counters.members_down += 1;
                    self.schedule_reap(id);
                    self.changed = true;
                }
                OwnedNotification::Rename(..) => {
                    self.changed = true;
                }
                // Consumed by local health in `Effects::notify`.
                OwnedNotification::DataReceived(_)
                | OwnedNotification::DataSent(_)
                | OwnedNotification::ProbeFailed(..) => {}
                OwnedNotification::Active => {
                    self.rejoin_backoff = self.config.rejoin_min;
                }
                OwnedNotification::Idle => {
                    self.kv_in_touch = false;
                    // foca stops probing when alone: keep knocking on seeds.
                    self.rejoin_after(self.config.rejoin_min);
                    self.changed = true;
                }
                OwnedNotification::Rejoin(id) => {
                    // The cluster declared us down; foca renewed our identity.
                    self.renewed = Some(id);
                    self.update_local(|record| record.id = id);
                    // Announce the new identity to the seeds right away.
                    self.announce_all_seeds = true;
                    self.rejoin_after(Duration::ZERO);
                }
                OwnedNotification::Defunct => {
                    self.changed = true;
                }
            }
        }
        // Re-applied at every change of size, so the suspicion timeout is
        // memberlist's for the size now (`4 log10 n` probe periods). Applied
        // only when the power-of-two bucket changed, it was computed for
        // whatever size the cluster had when it crossed into the bucket: at
        // 100 members anywhere from 7.3 s to 8 s, so detection time depended
        // on the cluster's history.
        let size = self.swim.num_members() as u32 + 1;
        self.effects.suspicion.cluster_size = size;
        if size != self.size_bucket {
            self.size_bucket = size;
            if let Err(error) = self.swim.set_config(self.config.swim_config(size)) {
                debug_assert!(false, "foca refused a resized config: {error}");
            }
        }
        self.accuse_and_confirm();
        self.remind_suspects();
        self.update_coordinate();
        self.check_name(false);
        self.take_departures();
        self.drop_reaped_again();
        let due = self.lock_state().pulls_mut().take_due();
        self.start_pulls(due);
        self.counters.datagrams_out += self.effects.datagrams.len() as u64;
        self.counters.bytes_out += self
            .effects
            .datagrams
            .iter()
            .map(|(_, packet)| packet.len() as u64)
            .sum::<u64>();
    }

    fn random_member(&mut self) -> Option<SocketAddr> {
        let count = self.swim.num_members();
        if count == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..count);
        self.swim.iter_members().nth(pick).map(|m| m.id().addr)
    }

    /// Whom the `AntiEntropy` timer exchanges with, and the mean time to its
    /// next tick (see [`CATCH_UP_EXCHANGES`]).
    fn next_exchange(&mut self) -> (Option<SocketAddr>, Duration) {
        let claimed = self.name_claimed();
        let lacking = match claimed {
            true => self.member_without_record(),
            false => None,
        };
        let quick = self.catch_up > 0 && (!claimed || lacking.is_some());
        if quick {
            self.catch_up -= 1;
            let peer = lacking.or_else(|| self.random_member());
            return (peer, CATCH_UP_SPACING);
        }
        if !claimed {
            return (self.random_member(), self.config.rejoin_min);
        }
        if lacking.is_none() {
            self.catch_up = CATCH_UP_EXCHANGES;
        }
        let size = self.swim.num_members() as u32 + 1;
        (self.random_member(), self.config.anti_entropy_mean(size))
    }

    /// A member we hold active (at random among them) whose record, for
    /// its identity or a newer one, we don't hold.
    fn member_without_record(&mut self) -> Option<SocketAddr> {
        let held: HashMap<SocketAddr, u64> = self
            .lock_state()
            .records()
            .map(|record| (record.id.addr, record.id.generation))
            .collect();
        let lacking: Vec<SocketAddr> = self
            .swim
            .iter_members()
            .map(|member| member.id())
            .filter(|id| held.get(&id.addr).is_none_or(|&held| held < id.generation))
            .map(|id| id.addr)
            .collect();
        if lacking.is_empty() {
            return None;
        }
        let pick = self.rng.random_range(0..lacking.len());
        Some(lacking[pick])
    }

    fn jittered(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(self.rng.random_range(0.5..1.5))
    }
}
