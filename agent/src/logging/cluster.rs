//! The task that turns what the core loop publishes into the lines an
//! operator follows: members ([`super::members`]), local checks
//! ([`super::checks`]), this agent's local health, and seeds that don't
//! let it join ([`super::seeds`]). It reads the published snapshots, so
//! the core loop neither formats nor writes any of these lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_protocol::envelope::Envelope;
use shoal_protocol::{MemberStatus, MemberView};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Level;

use super::checks::{CheckDiff, CheckEvent};
use super::members::{LineBudget, MemberDiff, MemberEvent};
use super::seeds;
use crate::core_counters::CoreCounters;
use crate::snapshot::Snapshot;

/// Member lines per second at most; the rest are summed up in one line.
pub const MEMBER_LINES_PER_SECOND: u32 = 10;
/// Check lines per second at most (a flapping check).
pub const CHECK_LINES_PER_SECOND: u32 = 10;
/// Alone this long despite seeds: a warning, with why each seed is silent.
pub const ALONE_WARNING_AFTER: Duration = Duration::from_secs(10);
/// The warning is repeated this often while alone.
pub const ALONE_WARNING_EVERY: Duration = Duration::from_secs(60);
/// A seed out of the member list this long while the agent is connected
/// is probed and logged, then again at this interval.
pub const SILENT_SEED_EVERY: Duration = Duration::from_secs(600);
/// The local-health score from which this agent says it is degraded: a
/// dead peer alone raises the score by one or two (its probes fail), so
/// lower scores are no news for an operator.
pub const DEGRADED_SCORE: u32 = 3;
/// How often the task looks at the time (suppressed counts, warnings).
const TICK: Duration = Duration::from_secs(1);

/// What the task needs besides the published state.
pub struct ClusterLog {
    /// `join`: the seeds.
    pub seeds: Vec<SocketAddr>,
    /// Our own gossip address (advertised).
    pub local: SocketAddr,
    /// Seals the probes of silent seeds as our traffic is sealed.
    pub envelope: Envelope,
}

/// Starts the task, its lines logged in `span` (the WAN pool's are in
/// `wan`); it stops with `stop`.
pub fn spawn(
    setup: ClusterLog,
    snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    status_rx: watch::Receiver<Arc<CoreCounters>>,
    tracker: &TaskTracker,
    stop: CancellationToken,
    span: tracing::Span,
) {
    use tracing::Instrument;
    let task = ClusterLogTask::new(setup, tracker.clone());
    tracker.spawn(task.run(snapshot_rx, status_rx, stop).instrument(span));
}

struct ClusterLogTask {
    setup: ClusterLog,
    tracker: TaskTracker,
    members: MemberDiff,
    last_members: Option<Arc<Vec<MemberView>>>,
    member_budget: LineBudget,
    checks: CheckDiff,
    check_budget: LineBudget,
    /// Whether local health was degraded at the last look.
    degraded: bool,
    started: Instant,
    /// Since when no other member is alive.
    alone_since: Option<Instant>,
    next_alone_warning: Option<Instant>,
    warned_alone: bool,
    /// Seeds out of the member list while connected: when to probe next.
    silent_seeds: HashMap<SocketAddr, Instant>,
}

impl ClusterLogTask {
    fn new(setup: ClusterLog, tracker: TaskTracker) -> Self {
        let now = Instant::now();
        Self {
            setup,
            tracker,
            members: MemberDiff::default(),
            last_members: None,
            member_budget: LineBudget::new(MEMBER_LINES_PER_SECOND),
            checks: CheckDiff::default(),
            check_budget: LineBudget::new(CHECK_LINES_PER_SECOND),
            degraded: false,
            started: now,
            alone_since: Some(now),
            next_alone_warning: None,
            warned_alone: false,
            silent_seeds: HashMap::new(),
        }
    }

    async fn run(
        mut self,
        mut snapshot_rx: watch::Receiver<Arc<Snapshot>>,
        mut status_rx: watch::Receiver<Arc<CoreCounters>>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                changed = snapshot_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snapshot = snapshot_rx.borrow_and_update().clone();
                    self.on_members(&snapshot.members, false);
                }
                changed = status_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let status = status_rx.borrow_and_update().clone();
                    self.on_status(&status);
                }
                _ = tick.tick() => {
                    let snapshot = snapshot_rx.borrow().clone();
                    self.on_members(&snapshot.members, true);
                    self.on_seeds(&snapshot.members);
                }
            }
        }
    }

    fn on_members(&mut self, members: &Arc<Vec<MemberView>>, tick: bool) {
        let now = Instant::now();
        if let Some((count, level)) = self.member_budget.flush(now) {
            log_suppressed("member", count, level);
        }
        let same = self
            .last_members
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, members));
        if same && !(tick && self.members.waiting_for_names()) {
            return;
        }
        self.last_members = Some(members.clone());
        for event in self.members.observe(members, self.setup.local, now) {
            if self.member_budget.allow(event.change.level(), now) {
                log_member(&event);
            }
        }
    }

    fn on_status(&mut self, status: &CoreCounters) {
        let now = Instant::now();
        if let Some((count, level)) = self.check_budget.flush(now) {
            log_suppressed("check", count, level);
        }
        for event in self.checks.observe(&status.local_checks) {
            if self.check_budget.allow(event.level(), now) {
                log_check(&event);
            }
        }
        let degraded = if self.degraded {
            status.health_score > 0
        } else {
            status.health_score >= DEGRADED_SCORE
        };
        if degraded != self.degraded {
            self.degraded = degraded;
            let stats = &status.health;
            if degraded {
                tracing::warn!(
                    score = status.health_score,
                    max = shoal_protocol::lifeguard::MAX_MULTIPLIER,
                    probe_failures = stats.probe_failures,
                    refutations = stats.refutations,
                    lagging_cycles = stats.lagging_cycles,
                    "local health degraded (score {} of {}): this agent misses acks, refutes suspicions or runs late (CPU starvation, packet loss); it waits longer before accusing others",
                    status.health_score,
                    shoal_protocol::lifeguard::MAX_MULTIPLIER
                );
            } else {
                tracing::info!(score = 0, "local health recovered (score 0)");
            }
        }
    }

    /// The alone warning and the probes of silent seeds.
    fn on_seeds(&mut self, members: &[MemberView]) {
        let local = self.setup.local;
        let seeds: Vec<SocketAddr> = self
            .setup
            .seeds
            .iter()
            .copied()
            .filter(|seed| *seed != local)
            .collect();
        if seeds.is_empty() {
            return;
        }
        let now = Instant::now();
        let live = |addr: SocketAddr| {
            members.iter().any(|member| {
                member.id.addr == addr
                    && matches!(
                        member.status,
                        MemberStatus::Alive | MemberStatus::Suspect | MemberStatus::Leaving
                    )
            })
        };
        let alone = !members
            .iter()
            .any(|member| member.id.addr != local && live(member.id.addr));
        if !alone {
            if let Some(since) = self.alone_since.take()
                && self.warned_alone
            {
                tracing::info!(
                    alone_secs = now.duration_since(since).as_secs(),
                    "joined the cluster after {}s alone",
                    now.duration_since(since).as_secs()
                );
            }
            self.warned_alone = false;
            self.next_alone_warning = None;
            // A seed that stays out of the member list while we are
            // connected: probed, at a slow pace.
            let silent: Vec<SocketAddr> = seeds
                .iter()
                .copied()
                .filter(|seed| !live(*seed))
                .filter(|seed| {
                    let due = self
                        .silent_seeds
                        .entry(*seed)
                        .or_insert(now + ALONE_WARNING_EVERY);
                    if now >= *due {
                        *due = now + SILENT_SEED_EVERY;
                        true
                    } else {
                        false
                    }
                })
                .collect();
            self.silent_seeds.retain(|seed, _| !live(*seed));
            if !silent.is_empty() {
                self.probe_seeds(silent, Level::INFO);
            }
            return;
        }
        let since = *self.alone_since.get_or_insert(now);
        let alone_for = now.duration_since(since);
        if alone_for < ALONE_WARNING_AFTER || self.next_alone_warning.is_some_and(|next| now < next)
        {
            return;
        }
        self.next_alone_warning = Some(now + ALONE_WARNING_EVERY);
        self.warned_alone = true;
        let never = since == self.started;
        let list = seeds
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            alone_secs = alone_for.as_secs(),
            seeds = %list,
            "this agent is alone: {} for {}s despite {} seed(s) ({list}); still trying to join, next report in {}s",
            if never { "no member has answered" } else { "every other member is gone" },
            alone_for.as_secs(),
            seeds.len(),
            ALONE_WARNING_EVERY.as_secs()
        );
        self.probe_seeds(seeds, Level::WARN);
    }

    /// Probes `seeds` in the background and logs why each is silent.
    fn probe_seeds(&self, seeds: Vec<SocketAddr>, level: Level) {
        let envelope = self.setup.envelope.clone();
        self.tracker.spawn(async move {
            for seed in seeds {
                let problem = seeds::probe(seed, &envelope).await;
                let reason = problem.reason();
                let explain = problem.explain(seed);
                if level == Level::WARN {
                    tracing::warn!(%seed, reason, "cannot join through seed {seed}: {explain}");
                } else {
                    tracing::info!(%seed, reason, "seed {seed} is not a live member; re-announcing to it fails: {explain}");
                }
            }
        });
    }
}

fn log_member(event: &MemberEvent) {
    let MemberEvent {
        change,
        name,
        addr,
        was,
    } = event;
    let kind = change.event();
    let was = was.map_or("none", MemberStatus::as_str);
    let text = change.message(&format!("{name} ({addr})"));
    match change.level() {
        Level::WARN => tracing::warn!(member = %name, %addr, event = kind, was, "{text}"),
        _ => tracing::info!(member = %name, %addr, event = kind, was, "{text}"),
    }
}

fn log_check(event: &CheckEvent) {
    let CheckEvent {
        check_id,
        service,
        from,
        to,
        output,
    } = event;
    let (from, to) = (from.as_str(), to.as_str());
    let on = if service.is_empty() {
        String::new()
    } else {
        format!(" of service {service}")
    };
    match event.level() {
        Level::WARN => tracing::warn!(
            check = %check_id, %service, from, to, %output,
            "check {check_id}{on} is now {to} (was {from}): {output}"
        ),
        _ => tracing::info!(
            check = %check_id, %service, from, to, %output,
            "check {check_id}{on} is now {to} (was {from}): {output}"
        ),
    }
}

fn log_suppressed(what: &str, count: u64, level: Level) {
    let text = format!(
        "suppressed {count} {what} events in the last second (more than {} a second); `shoal members` and `shoal services` show the current state",
        if what == "member" {
            MEMBER_LINES_PER_SECOND
        } else {
            CHECK_LINES_PER_SECOND
        }
    );
    match level {
        Level::ERROR | Level::WARN => tracing::warn!(suppressed = count, kind = what, "{text}"),
        _ => tracing::info!(suppressed = count, kind = what, "{text}"),
    }
}
