//! The sans-IO node: foca plus Shoal's cluster state and join policy.
//!
//! The agent and the simulator drive the same [`Node`]: they feed it
//! datagrams, timers and local changes, then carry out what it asks for in
//! its [`Effects`] (send these datagrams, fire these timers after these
//! delays, run an anti-entropy exchange with these peers). Nothing here
//! reads a clock or touches a socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foca::{Foca, Identity, Notification, OwnedNotification, PeriodicParams, Runtime, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::codec::{MAX_DATAGRAM, SwimCodec};
use crate::envelope::{Envelope, EnvelopeError, HEADER_LEN, PayloadKind};
use crate::identity::NodeId;
use crate::keyring::SEAL_OVERHEAD;
use crate::kv::{KvEntry, KvStore, Stored};
use crate::lifeguard::LocalHealth;
use crate::record::NodeRecord;
use crate::rumor::{Rumor, RumorHandler};
use crate::state::{ClusterState, Merge};
use crate::sync::{DigestEntry, SyncMessage};

type Swim = Foca<NodeId, SwimCodec, StdRng, RumorHandler>;

/// Gossip tuning. Defaults follow memberlist's LAN profile.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Addresses to announce to when joining, and again whenever this node
    /// is alone or (every `seed_reannounce`) to heal partitions.
    pub seeds: Vec<SocketAddr>,
    /// How often a random member is probed. Fixed for the node's lifetime.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others to
    /// probe indirectly. Must be below `probe_period`.
    pub probe_rtt: Duration,
    /// How often pending updates are pushed to `gossip_fanout` members.
    pub gossip_interval: Duration,
    /// Members each gossip round goes to.
    pub gossip_fanout: NonZeroUsize,
    /// Suspicion timeout multiplier: a suspect is declared down after
    /// `suspicion_mult * max(1, log10(n)) * probe_period`.
    pub suspicion_mult: f64,
    /// Mean time between anti-entropy exchanges with a random peer
    /// (jittered ±50%).
    pub anti_entropy_interval: Duration,
    /// First and largest delay between join attempts while alone.
    pub rejoin_min: Duration,
    pub rejoin_max: Duration,
    /// How often a connected node announces to its seeds anyway, so that two
    /// sides of a healed partition find each other again.
    pub seed_reannounce: Duration,
    /// How long a leaving node keeps gossiping its "left" record before it
    /// declares itself down.
    pub leave_spread: Duration,
    /// How long a down member is remembered (and listed as failed or left).
    pub remove_down_after: Duration,
    /// Lifeguard-style local health awareness: a node that misses acks,
    /// has to refute suspicions or lags behind stretches its own probe and
    /// suspicion timers (up to 8x) instead of declaring healthy peers down.
    /// Default on; see [`crate::lifeguard`].
    pub local_health: bool,
    /// Send foca's `TurnUndead` to members declared down. Keep it false:
    /// foca 2.0.0 sends it even after the member refuted the suspicion,
    /// which makes healthy nodes rejoin under packet loss. It is a field
    /// only so the simulator's regression scenario can show the defect.
    pub notify_down_members: bool,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: NonZeroUsize::new(3).expect("3 > 0"),
            suspicion_mult: 4.0,
            anti_entropy_interval: Duration::from_secs(15),
            rejoin_min: Duration::from_secs(1),
            rejoin_max: Duration::from_secs(30),
            seed_reannounce: Duration::from_secs(30),
            leave_spread: Duration::from_millis(500),
            remove_down_after: Duration::from_secs(24 * 3600),
            local_health: true,
            notify_down_members: false,
        }
    }
}

impl GossipConfig {
    /// foca's configuration for a cluster of about `cluster_size` members:
    /// `Config::new_lan` with our overrides, re-applied as the cluster grows.
    pub fn swim_config(&self, cluster_size: u32) -> foca::Config {
        let size = NonZeroU32::new(cluster_size.max(1)).expect("max(1) > 0");
        let mut config = foca::Config::new_lan(size);
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self
            .probe_period
            .mul_f64(self.suspicion_mult * f64::from(cluster_size.max(1)).log10().max(1.0));
        // foca 2.0.0 sends TurnUndead from the suspect->down timer even when
        // the member refuted the suspicion, making healthy nodes rejoin under
        // packet loss. Partitions heal through seed re-announces and our own
        // receive-path TurnUndead (see `Node::tell_if_declared_down`).
        config.notify_down_members = self.notify_down_members;
        // Room for the envelope and, when encryption is on, its seal.
        config.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - HEADER_LEN - SEAL_OVERHEAD)
            .expect("datagram larger than header");
        config.remove_down_after = Some(self.remove_down_after);
        // memberlist's retransmit count, 4 * ceil(log10(n + 1)), but at
        // least 6 (below): foca's own
        // (floor of 4 * log10) sends each update too few times in small and
        // forming clusters, leaving stragglers for anti-entropy to fix. The
        // config is re-applied only when the size crosses a power of two, so
        // count for the top of that range.
        let top = cluster_size.max(1).next_power_of_two();
        let retransmits = 4.0 * f64::from(top + 1).log10().ceil();
        // A floor of 6: with foca counting one transmission per message, 4
        // left about one update in twenty to anti-entropy in clusters of 5
        // to 10 (measured: a 6.7 s straggler).
        config.max_transmissions =
            std::num::NonZeroU8::new(retransmits.clamp(6.0, 255.0) as u8).expect("at least 6");
        config.periodic_gossip = Some(PeriodicParams {
            frequency: self.gossip_interval,
            num_members: self.gossip_fanout,
        });
        config
    }
}

/// Timers the node asks its driver to deliver, in deadline order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeTimer {
    /// One of foca's own timers.
    Swim(Timer<NodeId>),
    /// Time to announce to the seeds (the token discards superseded ones).
    Rejoin(u32),
    /// Time for an anti-entropy exchange with a random peer.
    AntiEntropy,
    /// The "left" record had time to spread: declare ourselves down.
    FinishLeave,
}

impl NodeTimer {
    /// Order among timers due at the same instant: foca's own order first.
    pub fn rank(&self) -> u8 {
        match self {
            NodeTimer::Swim(timer) => match timer {
                Timer::SendIndirectProbe { .. } => 0,
                Timer::ProbeRandomMember(_) => 1,
                Timer::ChangeSuspectToDown { .. } => 2,
                Timer::PeriodicAnnounce(_) => 3,
                Timer::PeriodicGossip(_) => 4,
                Timer::RemoveDown(_) => 5,
                Timer::PeriodicAnnounceDown(_) => 6,
            },
            NodeTimer::Rejoin(_) => 7,
            NodeTimer::AntiEntropy => 8,
            NodeTimer::FinishLeave => 9,
        }
    }
}

/// What the node asks its driver to do. Drained by the driver after every
/// call into the node.
#[derive(Debug)]
pub struct Effects {
    envelope: Envelope,
    /// Sealed datagrams to send.
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to deliver back after the given delay.
    pub timers: Vec<(Duration, NodeTimer)>,
    /// Peers to run an anti-entropy exchange with.
    pub syncs: Vec<SocketAddr>,
    notifications: Vec<OwnedNotification<NodeId>>,
    /// Lives here because foca's notifications and timer requests pass
    /// through the runtime: it both listens and stretches.
    health: LocalHealth,
    /// Nonces for sealed datagrams.
    nonces: StdRng,
}

impl Effects {
    fn new(envelope: Envelope, health: LocalHealth, seed: u64) -> Self {
        Self {
            envelope,
            health,
            nonces: StdRng::seed_from_u64(seed ^ 0x6e6f_6e63_6573),
            datagrams: Vec::new(),
            timers: Vec::new(),
            syncs: Vec::new(),
            notifications: Vec::new(),
        }
    }
}

impl Runtime<NodeId> for Effects {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        if self.health.observe(&notification) {
            return;
        }
        self.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        let nonce = self.nonces.random();
        self.datagrams
            .push((to.addr, self.envelope.seal(PayloadKind::Swim, data, nonce)));
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        let after = self.health.stretch(&event, after);
        self.timers.push((after, NodeTimer::Swim(event)));
    }
}

/// How a member looks from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    Alive,
    /// Suspected by someone; still counted as alive.
    Suspect,
    /// Announced its departure and is still reachable.
    Leaving,
    /// Left on purpose.
    Left,
    /// Declared down without having left.
    Failed,
}

impl MemberStatus {
    /// Consul's numeric member status (1 alive, 2 leaving, 3 left, 4 failed).
    pub fn consul_code(self) -> u8 {
        match self {
            MemberStatus::Alive | MemberStatus::Suspect => 1,
            MemberStatus::Leaving => 2,
            MemberStatus::Left => 3,
            MemberStatus::Failed => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// One row of the membership table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub status: MemberStatus,
    /// The member's record, once we have it (anti-entropy fetches it right
    /// after the member comes up).
    pub record: Option<NodeRecord>,
}

impl MemberView {
    /// The member's name, or its address while its record is on its way.
    pub fn name(&self) -> String {
        match &self.record {
            Some(record) => record.name.clone(),
            None => self.id.addr.to_string(),
        }
    }
}

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
    size_bucket: u32,
    rejoin_token: u32,
    rejoin_backoff: Duration,
    phase: Phase,
    changed: bool,
    renewed: Option<NodeId>,
    /// Identities we hold as down, by address, to answer their datagrams
    /// with `TurnUndead` (see [`Node::tell_if_declared_down`]).
    down: HashMap<SocketAddr, NodeId>,
    counters: Counters,
}

impl Node {
    /// A node that has not contacted anyone yet; call [`Node::start`].
    pub fn new(local: NodeRecord, config: GossipConfig, envelope: Envelope, seed: u64) -> Self {
        let state = Arc::new(Mutex::new(ClusterState::new(local.clone())));
        let health = LocalHealth::new(config.local_health, config.probe_rtt / 2);
        let swim = Foca::with_custom_broadcast(
            local.id,
            config.swim_config(1),
            StdRng::seed_from_u64(seed),
            SwimCodec,
            RumorHandler::new(state.clone()),
        );
        Self {
            swim,
            state,
            rejoin_backoff: config.rejoin_min,
            config,
            effects: Effects::new(envelope.clone(), health, seed),
            envelope,
            rng: StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x5348_4f4c),
            size_bucket: 1,
            rejoin_token: 0,
            phase: Phase::Running,
            changed: true,
            renewed: None,
            down: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// Starts joining through the seeds and schedules periodic work.
    pub fn start(&mut self) {
        self.effects
            .timers
            .push((Duration::ZERO, NodeTimer::Rejoin(self.rejoin_token)));
        let first_sync = self.jittered(self.config.anti_entropy_interval);
        self.effects
            .timers
            .push((first_sync, NodeTimer::AntiEntropy));
    }

    /// Feeds one received datagram (envelope included).
    pub fn handle_datagram(&mut self, packet: &[u8]) -> Result<(), DatagramError> {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += packet.len() as u64;
        let (kind, payload) = self.envelope.open(packet).inspect_err(|_| {
            self.counters.rejected_envelope += 1;
        })?;
        if kind != PayloadKind::Swim {
            self.counters.rejected_envelope += 1;
            return Err(DatagramError::WrongKind(kind));
        }
        self.tell_if_declared_down(&payload);
        let result = self.swim.handle_data(&payload, &mut self.effects);
        self.after_swim();
        let refused = self.lock_state().oversized();
        self.counters.refused_records = refused;
        result.map_err(|error| {
            self.counters.rejected_swim += 1;
            DatagramError::Swim(error)
        })
    }

    /// When a datagram comes from an identity we hold as down, foca drops it
    /// unread, and the sender never learns why: after a partition heals,
    /// both sides would ignore each other until `remove_down_after`. So we
    /// tell it with foca's own `TurnUndead`, which makes it renew its
    /// identity and rejoin. This is the receive path of foca's
    /// `notify_down_members`, without its suspect->down timer path, which
    /// also fires for members that refuted the suspicion (see
    /// [`GossipConfig::swim_config`]).
    fn tell_if_declared_down(&mut self, payload: &[u8]) {
        use foca::Codec;
        if self.down.is_empty() {
            return;
        }
        let Ok(header) = SwimCodec.decode_header(&mut &payload[..]) else {
            return;
        };
        if self.down.get(&header.src.addr) != Some(&header.src) {
            return;
        }
        let reply = foca::Header {
            src: self.identity(),
            src_incarnation: 0,
            dst: header.src,
            message: foca::Message::TurnUndead,
        };
        let mut bytes = Vec::new();
        if SwimCodec.encode_header(&reply, &mut bytes).is_ok() {
            self.effects.send_to(header.src, &bytes);
        }
    }

    /// Delivers a timer the node asked for.
    pub fn handle_timer(&mut self, timer: NodeTimer) {
        match timer {
            NodeTimer::Swim(timer) => {
                if let Err(error) = self.swim.handle_timer(timer, &mut self.effects) {
                    // foca only fails a timer on an encoding error of our own
                    // making; the timer is simply lost, as in foca's examples.
                    debug_assert!(false, "foca timer failed: {error}");
                }
            }
            NodeTimer::Rejoin(token) if token == self.rejoin_token => self.rejoin(),
            NodeTimer::Rejoin(_) => {}
            NodeTimer::AntiEntropy => {
                if let Some(peer) = self.random_member() {
                    self.effects.syncs.push(peer);
                }
                let next = self.jittered(self.config.anti_entropy_interval);
                self.effects.timers.push((next, NodeTimer::AntiEntropy));
            }
            NodeTimer::FinishLeave => {
                if self.phase == Phase::Leaving {
                    let _ = self.swim.leave_cluster(&mut self.effects);
                    self.phase = Phase::Left;
                    self.changed = true;
                }
            }
        }
        self.after_swim();
    }

    /// Changes our own record (bumping its version) and gossips it.
    pub fn update_local(&mut self, change: impl FnOnce(&mut NodeRecord)) {
        let record = self.lock_state().update_local(change).clone();
        self.changed = true;
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

    /// Starts a graceful leave: gossip a "left" record, then, after
    /// `leave_spread`, declare ourselves down. See [`Node::has_left`].
    pub fn begin_leave(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        self.update_local(|record| record.left = true);
        self.phase = Phase::Leaving;
        let spread = if self.swim.num_members() == 0 {
            Duration::ZERO
        } else {
            let _ = self.swim.gossip(&mut self.effects);
            self.config.leave_spread
        };
        self.effects.timers.push((spread, NodeTimer::FinishLeave));
        self.after_swim();
    }

    /// Adds members as alive without contacting them, as if a peer had
    /// told us about them. The simulator uses it to start from a converged
    /// cluster (joining 10,000 nodes one gossip at a time would dominate its
    /// run time); the agent joins through its seeds instead.
    pub fn assume_members(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        let members = ids.into_iter().map(foca::Member::alive);
        if let Err(error) = self.swim.apply_many(members, false, &mut self.effects) {
            debug_assert!(false, "foca refused assumed members: {error}");
        }
        self.after_swim();
    }

    /// Whether the leave finished: the driver may stop once the last
    /// datagrams are out.
    pub fn has_left(&self) -> bool {
        self.phase == Phase::Left
    }

    /// Our digest, to open an anti-entropy exchange.
    pub fn sync_digest(&self) -> Vec<DigestEntry> {
        self.lock_state().digest()
    }

    /// Answers a peer's digest: what it lacks, and what we want from it.
    pub fn sync_delta(&self, theirs: &[DigestEntry]) -> (Vec<NodeRecord>, Vec<String>) {
        self.lock_state().delta(theirs)
    }

    /// The records a peer asked for.
    pub fn sync_records(&self, names: &[String]) -> Vec<NodeRecord> {
        self.lock_state().records_named(names)
    }

    /// Merges records received by anti-entropy; returns how many were news.
    pub fn merge_records(&mut self, records: Vec<NodeRecord>) -> usize {
        let mut state = self.state.lock().expect("cluster state lock poisoned");
        let applied = records
            .into_iter()
            .filter(|record| state.merge(record.clone()) == Merge::Applied)
            .count();
        self.counters.refused_records = state.oversized();
        drop(state);
        self.counters.synced_records += applied as u64;
        applied
    }

    /// Opens an anti-entropy exchange (initiator): our digest.
    pub fn sync_open(&self) -> SyncMessage {
        let state = self.lock_state();
        SyncMessage::Digest {
            nodes: state.digest(),
            kv_root: state.kv().root(),
            kv_buckets: state.kv().bucket_hashes().to_vec(),
            members: self.alive_members(),
        }
    }

    /// Answers a peer's digest (responder): the records it lacks, the
    /// names we want, and our KV entries of every bucket that differs.
    pub fn sync_answer(
        &self,
        nodes: &[DigestEntry],
        kv_root: u64,
        kv_buckets: &[u64],
    ) -> SyncMessage {
        let state = self.lock_state();
        let (records, wanted) = state.delta(nodes);
        let kv_buckets = if kv_root == state.kv().root() {
            Vec::new()
        } else {
            state.kv().differing_buckets(kv_buckets)
        };
        let kv_entries = state.kv().entries_in(&kv_buckets);
        SyncMessage::Delta {
            records,
            wanted,
            kv_entries,
            kv_buckets,
            members: self.alive_members(),
        }
    }

    /// Applies the responder's delta (initiator) and returns the closing
    /// message: the records it asked for and our entries of the differing
    /// buckets (taken before merging, so nothing is sent back twice).
    pub fn sync_finish(
        &mut self,
        records: Vec<NodeRecord>,
        wanted: &[String],
        kv_entries: Vec<KvEntry>,
        kv_buckets: &[u16],
    ) -> SyncMessage {
        let reply = {
            let state = self.lock_state();
            SyncMessage::Records {
                records: state.records_named(wanted),
                kv_entries: state.kv().entries_in(kv_buckets),
            }
        };
        self.merge_records(records);
        self.merge_kv(kv_entries);
        reply
    }

    /// Applies the initiator's closing message (responder).
    pub fn sync_absorb(&mut self, records: Vec<NodeRecord>, kv_entries: Vec<KvEntry>) {
        self.merge_records(records);
        self.merge_kv(kv_entries);
    }

    /// Adds the members a peer holds alive that our SWIM table lacks (or
    /// knows only under an older generation). Members we hold as down stay
    /// down: the receive path tells them (see `tell_if_declared_down`).
    pub fn learn_members(&mut self, alive: &[NodeId]) {
        let me = self.identity().addr;
        let known: HashMap<SocketAddr, NodeId> = self
            .swim
            .iter_membership_state()
            .map(|member| (member.id().addr, *member.id()))
            .collect();
        let new: Vec<NodeId> = alive
            .iter()
            .filter(|id| {
                id.addr != me
                    && known
                        .get(&id.addr)
                        .is_none_or(|k| id.generation > k.generation)
            })
            .copied()
            .collect();
        if !new.is_empty() {
            self.assume_members(new);
        }
    }

    /// Ourselves and every member we hold active.
    fn alive_members(&self) -> Vec<NodeId> {
        std::iter::once(self.identity())
            .chain(self.swim.iter_members().map(|member| *member.id()))
            .collect()
    }

    /// Merges KV entries received by anti-entropy; returns how many won.
    pub fn merge_kv(&mut self, entries: Vec<KvEntry>) -> usize {
        let mut state = self.lock_state();
        let applied = entries
            .into_iter()
            .filter(|entry| state.apply_kv(Arc::new(entry.clone())))
            .count();
        let refused = state.oversized();
        drop(state);
        self.counters.refused_records = refused;
        self.counters.synced_records += applied as u64;
        applied
    }

    /// A local KV write (or delete): applied, then gossiped. Returns the
    /// stored form, or `None` when an entry already there wins (the caller
    /// chose a time that is not the newest).
    pub fn write_kv(&mut self, entry: KvEntry) -> Option<Stored> {
        let applied = self.lock_state().apply_kv(Arc::new(entry.clone()));
        if !applied {
            return None;
        }
        self.changed = true;
        let rumor = Rumor::encode_kv(&entry, self.identity().addr);
        if let Err(error) = self.swim.add_broadcast(&rumor) {
            debug_assert!(false, "our own KV rumor was refused: {error}");
        }
        self.lock_state().kv().get(&entry.key).cloned()
    }

    /// The KV store as of now (an O(1) copy).
    pub fn kv(&self) -> KvStore {
        self.lock_state().kv().clone()
    }

    /// Direct access to the KV store, for restoring it from disk and for
    /// collecting tombstones. Changes made here are not gossiped.
    pub fn with_kv<T>(&mut self, change: impl FnOnce(&mut KvStore) -> T) -> T {
        let result = change(self.lock_state().kv_mut());
        self.changed = true;
        result
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

    /// Whether the membership or any record changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        let mut state = self.lock_state();
        let state_changed = state.take_changed() | state.take_kv_changed();
        drop(state);
        std::mem::replace(&mut self.changed, false) | state_changed
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

    /// Tells local health that an event was handled `lag` late: a timer
    /// after its deadline, a datagram after it arrived. See
    /// [`crate::lifeguard`].
    pub fn note_lag(&mut self, lag: Duration) {
        self.effects.health.note_lag(lag);
    }

    /// The local health score and what fed it.
    pub fn local_health(&self) -> &LocalHealth {
        &self.effects.health
    }

    /// foca's view of the member at `addr`: its identity and SWIM state.
    /// Cheaper than [`Node::members`] (no records, no sorting).
    pub fn member_state(&self, addr: SocketAddr) -> Option<(NodeId, foca::State)> {
        self.swim
            .iter_membership_state()
            .find(|member| member.id().addr == addr)
            .map(|member| (*member.id(), member.state()))
    }

    /// Records that claimed our name with another identity.
    pub fn name_conflicts(&self) -> u64 {
        self.lock_state().name_conflicts()
    }

    /// The membership table, ourselves included, sorted by name.
    pub fn members(&self) -> Vec<MemberView> {
        let state = self.lock_state();
        let mut by_addr: HashMap<SocketAddr, &NodeRecord> = HashMap::new();
        for record in state.records() {
            let entry = by_addr.entry(record.id.addr).or_insert(record);
            if record.id.generation > entry.id.generation {
                *entry = record;
            }
        }
        let local = state.local();
        let mut members = vec![MemberView {
            id: local.id,
            status: match self.phase {
                Phase::Running => MemberStatus::Alive,
                Phase::Leaving => MemberStatus::Leaving,
                Phase::Left => MemberStatus::Left,
            },
            record: Some(local.clone()),
        }];
        for member in self.swim.iter_membership_state() {
            let id = *member.id();
            let record = by_addr.get(&id.addr).copied();
            let left = record.is_some_and(|r| r.id == id && r.left);
            let status = match member.state() {
                foca::State::Alive if left => MemberStatus::Leaving,
                foca::State::Alive => MemberStatus::Alive,
                foca::State::Suspect => MemberStatus::Suspect,
                foca::State::Down if left => MemberStatus::Left,
                foca::State::Down => MemberStatus::Failed,
            };
            members.push(MemberView {
                id,
                status,
                record: record.cloned(),
            });
        }
        members.sort_by_key(MemberView::name);
        members
    }

    fn lock_state(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().expect("cluster state lock poisoned")
    }

    fn rejoin(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let me = self.identity().addr();
        let alone = self.swim.num_members() == 0;
        for seed in self.config.seeds.clone() {
            if seed != me {
                let _ = self.swim.announce(NodeId::seed(seed), &mut self.effects);
            }
        }
        let next = if alone {
            let next = self.rejoin_backoff;
            self.rejoin_backoff = (self.rejoin_backoff * 2).min(self.config.rejoin_max);
            next
        } else {
            self.rejoin_backoff = self.config.rejoin_min;
            self.config.seed_reannounce
        };
        self.effects
            .timers
            .push((next, NodeTimer::Rejoin(self.rejoin_token)));
    }

    /// Reacts to what foca reported during the last call.
    fn after_swim(&mut self) {
        let notifications = std::mem::take(&mut self.effects.notifications);
        for notification in notifications {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    self.down.remove(&id.addr);
                    // Fetch its record (and give it ours) right away.
                    self.effects.syncs.push(id.addr());
                    self.changed = true;
                }
                OwnedNotification::MemberDown(id) => {
                    self.down.insert(id.addr, id);
                    self.counters.members_down += 1;
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
                    // foca stops probing when alone: keep knocking on seeds.
                    self.rejoin_token = self.rejoin_token.wrapping_add(1);
                    self.rejoin_backoff = self.config.rejoin_min;
                    self.effects
                        .timers
                        .push((self.config.rejoin_min, NodeTimer::Rejoin(self.rejoin_token)));
                    self.changed = true;
                }
                OwnedNotification::Rejoin(id) => {
                    // The cluster declared us down; foca renewed our identity.
                    self.renewed = Some(id);
                    self.update_local(|record| record.id = id);
                    // Announce the new identity to the seeds right away.
                    self.rejoin_token = self.rejoin_token.wrapping_add(1);
                    self.rejoin_backoff = self.config.rejoin_min;
                    self.effects
                        .timers
                        .push((Duration::ZERO, NodeTimer::Rejoin(self.rejoin_token)));
                }
                OwnedNotification::Defunct => {
                    self.changed = true;
                }
            }
        }
        let size = self.swim.num_members() as u32 + 1;
        let bucket = size.next_power_of_two();
        if bucket != self.size_bucket {
            self.size_bucket = bucket;
            if let Err(error) = self.swim.set_config(self.config.swim_config(size)) {
                debug_assert!(false, "foca refused a resized config: {error}");
            }
        }
        let pulls = self.lock_state().take_pulls();
        self.effects.syncs.extend(pulls);
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

    fn jittered(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(self.rng.random_range(0.5..1.5))
    }
}
