//! Anti-entropy: the one step function the agent (over TCP) and the
//! simulator (on its virtual network) both drive. The messages are in
//! [`crate::anti_entropy`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::Node;
use super::pages::OurPage;
use crate::anti_entropy::{Delta, Digest, Records, SyncMessage};
use crate::identity::NodeId;
use crate::kv::KvEntry;
use crate::record::NodeRecord;
use crate::state::Merge;

impl Node {
    /// Opens an anti-entropy exchange (initiator): the summary of our
    /// digest (its hashes). Send it to the peer and feed its answer to
    /// [`Node::on_sync`]; a peer whose hashes differ asks for the full
    /// digest ([`Delta::resend`]) and gets it from there.
    pub fn sync_open(&self) -> SyncMessage {
        let SyncMessage::Digest(mut digest) = self.sync_open_full() else {
            unreachable!("a digest")
        };
        digest.nodes = Vec::new();
        digest.kv_bucket_hashes = Vec::new();
        digest.members = Vec::new();
        digest.summary = true;
        SyncMessage::Digest(digest)
    }

    /// Our full digest: what [`Node::sync_open`] summarizes.
    pub fn sync_open_full(&self) -> SyncMessage {
        let state = self.lock_state();
        let nodes = state.digest();
        let members = self.alive_members();
        SyncMessage::Digest(Digest {
            nodes_hash: crate::anti_entropy::nodes_hash(&nodes),
            members_hash: crate::anti_entropy::members_hash(&members),
            nodes,
            kv_root: state.kv().root(),
            kv_bucket_hashes: state.kv().bucket_hashes().to_vec(),
            members,
            // Version 1's collection horizon: 0 vouches for nothing, so an
            // earlier agent drops nothing because of us (see `crate::kv`).
            kv_horizon: 0,
            summary: false,
        })
    }

    /// One step of an anti-entropy exchange (see [`crate::anti_entropy`]): merges
    /// what the peer sent and returns the message to send back, if any.
    ///
    /// - `Digest` (we respond): the `Delta` for it, with our first KV page;
    ///   we learn its members.
    /// - `Delta` (we initiated): merges it, learns its members, and returns
    ///   `Records` with the records it wants and our first KV page.
    /// - `Records`, `Kv`: merges the page and answers with our next one,
    ///   unless neither side has more ([`crate::anti_entropy::KvPage::is_last`]).
    ///
    /// Stateless between steps (each page carries where both walks stand):
    /// the transport checks that the steps come in order
    /// ([`SyncMessage::expects`]). Nothing is dropped for what the peer
    /// lacks: an entry goes only when a newer write or tombstone for its
    /// key arrives (see [`crate::kv`], "Remembered deletes").
    pub fn on_sync(&mut self, message: SyncMessage) -> Option<SyncMessage> {
        self.on_sync_with(message, None)
    }

    /// [`Node::on_sync`] with our page built already, by [`build_page`](super::build_page)
    /// from a copy of our store for this very message (the agent builds it
    /// off the core loop, from the published snapshot); `None` builds it
    /// here.
    pub fn on_sync_with(
        &mut self,
        message: SyncMessage,
        ours: Option<OurPage>,
    ) -> Option<SyncMessage> {
        let ours = match ours {
            Some(ours) => Some(ours),
            None => self.own_page(&message),
        };
        let quota_refusals = self.lock_state().refusals().kv_quota;
        let (reply, whole) = match message {
            SyncMessage::Digest(digest) => {
                self.learn_members(&digest.members);
                if digest.summary {
                    return Some(SyncMessage::Delta(self.answer_summary(&digest)));
                }
                let delta = self.answer_digest(&digest, ours.unwrap_or_default());
                return Some(SyncMessage::Delta(delta));
            }
            // The responder's hashes differ: it wants our full digest.
            SyncMessage::Delta(delta) if delta.resend => return Some(self.sync_open_full()),
            SyncMessage::Delta(delta) => {
                let whole = delta.kv.is_whole();
                let mut records = self.records_named(&delta.wanted);
                let kv = self.answer_page(delta.kv, ours.unwrap_or_default());
                self.merge_records(delta.records);
                self.learn_members(&delta.members);
                // We hold the responder's records now.
                let claimed = self.name_claimed();
                self.check_name(true);
                // Our name is ours now: the responder, which could not ask
                // for our record (our digest left it out), gets it at once.
                if !claimed && self.name_claimed() {
                    records.push(self.local_record());
                }
                (Some(SyncMessage::Records(Records { records, kv })), whole)
            }
            SyncMessage::Records(records) => {
                let whole = records.kv.is_whole();
                self.merge_records(records.records);
                // We hold the initiator's records now (KV pages may follow).
                self.check_name(true);
                (self.continue_pages(records.kv, ours), whole)
            }
            SyncMessage::Kv(page) => {
                let whole = page.is_whole();
                (self.continue_pages(page, ours), whole)
            }
        };
        // We merged the peer's side of the exchange: we are in touch (see
        // `Node::collect_tombstones`); and if it showed us all it holds of
        // what differs and the quota refused none of it, we vouch for what
        // we lack again (a page of many can't tell: the quota may have
        // refused an earlier one).
        self.kv_in_touch = true;
        let mut state = self.lock_state();
        if whole && state.refusals().kv_quota == quota_refusals {
            state.set_kv_incomplete(false);
        }
        reply
    }

    /// The responder's answer to a summary digest: an empty delta when
    /// every hash matches ours (nothing differs: the exchange closes with
    /// the initiator's empty `Records`), else a request for the full digest.
    fn answer_summary(&mut self, digest: &Digest) -> Delta {
        let SyncMessage::Digest(ours) = self.sync_open_full() else {
            unreachable!("a digest")
        };
        let same = digest.nodes_hash == ours.nodes_hash
            && digest.members_hash == ours.members_hash
            && digest.kv_root == ours.kv_root;
        Delta {
            records: Vec::new(),
            wanted: Vec::new(),
            // Equal roots: no bucket differs, as in a full quiet exchange.
            kv: Self::first_page(OurPage::default()),
            members: Vec::new(),
            resend: !same,
        }
    }

    /// The responder's answer to a digest: the records the peer lacks, the
    /// names we want, and `ours`, our first KV page over the buckets that
    /// differ (see [`build_page`](super::build_page)).
    fn answer_digest(&mut self, digest: &Digest, ours: OurPage) -> Delta {
        let (records, wanted) = self.lock_state().delta(&digest.nodes);
        Delta {
            records,
            wanted,
            kv: Self::first_page(ours),
            members: self.alive_members(),
            resend: false,
        }
    }

    /// Merges records received by anti-entropy; returns how many were news.
    fn merge_records(&mut self, records: Vec<NodeRecord>) -> usize {
        let mut state = self.state.lock().expect("cluster state lock poisoned");
        let applied = records
            .into_iter()
            .filter(|record| state.merge(record.clone()) == Merge::Applied)
            .count();
        drop(state);
        self.copy_refusals();
        self.take_departures();
        self.counters.synced_records += applied as u64;
        applied
    }

    /// Merges KV entries received by anti-entropy; returns how many won.
    pub(super) fn merge_kv(&mut self, entries: Vec<KvEntry>) -> usize {
        let mut state = self.lock_state();
        let applied = entries
            .into_iter()
            .map(|entry| state.apply_kv(Arc::new(entry)))
            .filter(|&applied| applied)
            .count();
        drop(state);
        self.copy_refusals();
        self.counters.synced_records += applied as u64;
        applied
    }

    /// Adds the members a peer holds alive that our SWIM table lacks (or
    /// knows only under an older generation), at most
    /// [`max_learned`](super::max_learned) of them. Members we hold as down
    /// stay down: the receive path tells them (see `tell_if_declared_down`).
    fn learn_members(&mut self, alive: &[NodeId]) {
        let me = self.identity().addr;
        // A generation from the future would win its address for good.
        let newest = self.lock_state().clock().max_generation();
        let known: HashMap<SocketAddr, NodeId> = self
            .swim
            .iter_membership_state()
            .map(|member| (member.id().addr, *member.id()))
            .collect();
        let new: Vec<NodeId> = alive
            .iter()
            .filter(|id| {
                id.addr != me
                    && id.generation <= newest
                    && known
                        .get(&id.addr)
                        .is_none_or(|k| id.generation > k.generation)
            })
            .take(super::max_learned(known.len()))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anti_entropy::SyncStep;
    use crate::envelope::{Envelope, cluster_id};
    use crate::kv::{BUCKETS, KvStore};
    use crate::node::GossipConfig;
    use proptest::prelude::*;

    fn node(last: u8) -> Node {
        let id = NodeId {
            addr: SocketAddr::from(([127, 0, 0, last], 7946)),
            generation: 1,
        };
        let record = NodeRecord::new(id, format!("node-{last}"));
        let envelope = Envelope::new(cluster_id("test"));
        Node::new(record, GossipConfig::default(), envelope, u64::from(last))
    }

    fn entry(key: &str, value: &str, time: u64, writer: &str) -> KvEntry {
        KvEntry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            flags: 0,
            time,
            writer: writer.into(),
            deleted: value.is_empty(),
        }
    }

    /// Runs one whole exchange from `initiator` to `responder`, checking
    /// that each answer is the step the last message expects; returns the
    /// messages in the order sent.
    fn exchange(initiator: &mut Node, responder: &mut Node) -> Vec<SyncMessage> {
        let nodes = [initiator, responder];
        let mut message = nodes[0].sync_open();
        let mut sent = Vec::new();
        let mut to = 1;
        loop {
            let expected = message.expects();
            let answer = nodes[to].on_sync(message.clone());
            sent.push(message);
            assert_eq!(
                answer.as_ref().map(SyncMessage::step),
                expected,
                "the answer to step {} of the exchange",
                sent.len()
            );
            match answer {
                Some(next) => message = next,
                None => return sent,
            }
            to = 1 - to;
            assert!(sent.len() < 10_000, "the exchange does not end");
        }
    }

    /// Runs one whole exchange the agent's way: each side's page is built
    /// apart from the node ([`build_page`](super::super::build_page)) from
    /// a copy of its store taken before the previous step was merged (a
    /// snapshot that lags the node by one step), and `write(step, node)`
    /// lands a local write on a node between steps. Returns the messages.
    fn exchange_off_node(
        initiator: &mut Node,
        responder: &mut Node,
        mut write: impl FnMut(usize, &mut Node),
    ) -> Vec<SyncMessage> {
        let nodes = [initiator, responder];
        let mut copies = [nodes[0].kv(), nodes[1].kv()];
        let mut message = nodes[0].sync_open();
        let mut sent = Vec::new();
        let mut to = 1;
        loop {
            let ours = super::super::build_page(&copies[to], &message, |len| len / 2);
            copies[to] = nodes[to].kv();
            let answer = nodes[to].on_sync_with(message.clone(), ours);
            write(sent.len(), nodes[to]);
            sent.push(message);
            match answer {
                Some(next) => message = next,
                None => return sent,
            }
            to = 1 - to;
            assert!(sent.len() < 10_000, "the exchange does not end");
        }
    }

    fn steps(messages: &[SyncMessage]) -> Vec<SyncStep> {
        messages.iter().map(SyncMessage::step).collect()
    }

    fn kv_contents(node: &Node) -> Vec<KvEntry> {
        node.kv().iter().map(|s| (*s.entry).clone()).collect()
    }

    #[test]
    fn one_exchange_moves_records_kv_and_members_both_ways() {
        let (mut a, mut b) = (node(1), node(2));
        a.write_kv(entry("only/a", "1", 10, "node-1")).unwrap();
        b.write_kv(entry("only/b", "2", 11, "node-2")).unwrap();
        a.write_kv(entry("both", "old", 5, "node-1")).unwrap();
        b.write_kv(entry("both", "new", 6, "node-2")).unwrap();
        b.update_local(|record| {
            record.tags.insert("role".into(), "db".into());
        });

        let sent = exchange(&mut a, &mut b);
        assert_eq!(
            steps(&sent),
            [
                SyncStep::Digest,
                SyncStep::Delta,
                SyncStep::Digest,
                SyncStep::Delta,
                SyncStep::Records
            ],
            "the summary differs, so the full digest follows"
        );

        assert_eq!(kv_contents(&a), kv_contents(&b));
        assert_eq!(a.kv().root(), b.kv().root());
        let both = a.kv().get("both").unwrap().entry.clone();
        assert_eq!(both.value, b"new", "the later write wins on both sides");
        assert!(a.kv().get("only/b").is_some() && b.kv().get("only/a").is_some());
        let tags = &a.records_named(&["node-2".into()])[0].tags;
        assert_eq!(tags.get("role").map(String::as_str), Some("db"));
        assert_eq!(b.records_named(&["node-1".into()]).len(), 1);
        // Each side learned the other from the members in the exchange.
        assert_eq!(
            a.member_state(b.identity().addr).map(|m| m.0),
            Some(b.identity())
        );
        assert_eq!(
            b.member_state(a.identity().addr).map(|m| m.0),
            Some(a.identity())
        );
    }

    #[test]
    fn a_quiet_exchange_sends_no_kv_entries() {
        let (mut a, mut b) = (node(1), node(2));
        for n in [&mut a, &mut b] {
            n.with_kv(|kv| kv.apply(Arc::new(entry("k", "v", 1, "node-1"))));
        }
        let Some(SyncMessage::Delta(delta)) = b.on_sync(a.sync_open_full()) else {
            panic!("a digest is answered by a delta");
        };
        assert!(delta.kv.buckets.is_empty());
        assert!(delta.kv.entries.is_empty());
        assert!(delta.kv.yours.is_none() && delta.kv.next.is_none());
    }

    #[test]
    fn a_quiet_exchange_costs_the_same_whatever_the_cluster_size() {
        // Two nodes that hold the same members, records and KV: the summary
        // matches and the exchange closes in three small messages.
        let sizes: Vec<usize> = [2usize, 50, 500]
            .into_iter()
            .map(|extra| {
                let (mut a, mut b) = (node(1), node(2));
                let others: Vec<NodeId> = (0..extra)
                    .map(|i| NodeId {
                        addr: SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 7946)),
                        generation: 1_800_000_000_000,
                    })
                    .collect();
                a.assume_members(others.iter().copied().chain([b.identity()]));
                b.assume_members(others.iter().copied().chain([a.identity()]));
                exchange(&mut a, &mut b);
                let sent = exchange(&mut a, &mut b);
                assert_eq!(
                    steps(&sent),
                    [SyncStep::Digest, SyncStep::Delta, SyncStep::Records],
                    "with {extra} members"
                );
                sent.iter().map(crate::codec::encoded_len).sum()
            })
            .collect();
        assert!(sizes[0] < 128, "{} bytes", sizes[0]);
        assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    }

    #[test]
    fn a_resend_request_is_answered_with_the_full_digest() {
        let (mut a, mut b) = (node(1), node(2));
        let Some(SyncMessage::Delta(delta)) = b.on_sync(a.sync_open()) else {
            panic!("a summary is answered by a delta");
        };
        assert!(delta.resend, "the records differ");
        assert_eq!(
            SyncMessage::Delta(delta.clone()).expects(),
            Some(SyncStep::Digest)
        );
        let Some(SyncMessage::Digest(full)) = a.on_sync(SyncMessage::Delta(delta)) else {
            panic!("a resend is answered by a digest");
        };
        assert!(!full.summary && !full.nodes.is_empty() && !full.members.is_empty());
        assert_eq!(full.kv_bucket_hashes.len(), BUCKETS);
    }

    #[test]
    fn step_names_say_what_they_are() {
        let a = node(1);
        let digest = a.sync_open();
        assert_eq!(digest.step_name(), "Digest");
        assert_eq!(digest.expects(), Some(SyncStep::Delta));
        let last = SyncMessage::Kv(crate::anti_entropy::KvPage::default());
        assert_eq!(
            last.expects(),
            None,
            "a page after which neither side has more"
        );
        assert_eq!(SyncStep::Records.to_string(), "Records");
    }

    #[test]
    fn a_store_larger_than_a_frame_moves_in_bounded_pages() {
        // 40 values of 500 KB (20 MB) on one side, a few small ones on the
        // other: every message stays near one page, and both sides end
        // with everything, whichever side initiates.
        for a_initiates in [true, false] {
            let (mut a, mut b) = (node(1), node(2));
            for i in 0..40u8 {
                let value = vec![b'a' + i % 26; 500_000];
                a.with_kv(|kv| {
                    kv.apply(Arc::new(KvEntry {
                        value,
                        ..entry(&format!("big/{i:02}"), "", 10, "node-1")
                    }))
                });
            }
            for i in 0..10 {
                b.with_kv(|kv| kv.apply(Arc::new(entry(&format!("small/{i}"), "s", 11, "node-2"))));
            }
            let sent = if a_initiates {
                exchange(&mut a, &mut b)
            } else {
                exchange(&mut b, &mut a)
            };
            let largest = sent.iter().map(crate::codec::encoded_len).max().unwrap();
            assert!(
                largest <= crate::anti_entropy::PAGE_BYTES + 64 * 1024,
                "a message of {largest} bytes"
            );
            assert!(sent.len() > 10, "{} messages for 20 MB", sent.len());
            assert_eq!(a.kv().len(), 50);
            assert_eq!(kv_contents(&a), kv_contents(&b));
        }
    }

    fn arbitrary_entry() -> impl Strategy<Value = KvEntry> {
        (0usize..6, 0usize..3, 1u64..6, 0usize..3).prop_map(|(k, v, time, w)| {
            entry(
                ["a", "b", "c/d", "c/e", "f", "g"][k],
                ["x", "y", ""][v],
                time,
                ["node-1", "node-2", "node-3"][w],
            )
        })
    }

    #[test]
    fn pages_built_off_the_node_from_a_lagging_copy_move_a_large_store() {
        // 30 values of 200 KB on one side (several pages), and writes that
        // land on both sides while the exchange runs, which the copies the
        // pages are built from miss: the exchange still ends in bounded
        // pages, and the next one leaves both with everything.
        let (mut a, mut b) = (node(1), node(2));
        for i in 0..30u8 {
            a.write_kv(KvEntry {
                value: vec![b'a' + i % 26; 200_000],
                ..entry(&format!("big/{i:02}"), "", 10, "node-1")
            })
            .unwrap();
        }
        b.write_kv(entry("small", "b", 11, "node-2")).unwrap();
        let during = |step: usize, node: &mut Node| {
            let writer = node.identity().addr.ip().to_string();
            let key = format!("during/{step}");
            node.write_kv(entry(&key, "x", 20 + step as u64, &writer))
                .unwrap();
        };
        let sent = exchange_off_node(&mut a, &mut b, during);
        assert!(sent.len() > 4, "{} messages for 6 MB", sent.len());
        let largest = sent.iter().map(crate::codec::encoded_len).max().unwrap();
        assert!(
            largest <= crate::anti_entropy::PAGE_BYTES + 64 * 1024,
            "{largest} bytes"
        );
        assert!(b.kv().len() >= 31, "b holds {} keys", b.kv().len());
        exchange_off_node(&mut b, &mut a, |_, _| {});
        assert_eq!(kv_contents(&a), kv_contents(&b));
        assert_eq!(a.kv().root(), b.kv().root());
        assert!(a.kv().len() > 31 + sent.len() / 2, "{} keys", a.kv().len());
    }

    /// Two nodes holding `left` and `right`, and the LWW merge of both.
    fn seeded_pair(left: &[KvEntry], right: &[KvEntry]) -> (Node, Node, Vec<KvEntry>) {
        let (mut a, mut b) = (node(1), node(2));
        let mut expected = KvStore::default();
        for (node, entries) in [(&mut a, left), (&mut b, right)] {
            for entry in entries {
                node.with_kv(|kv| kv.apply(Arc::new(entry.clone())));
                expected.apply(Arc::new(entry.clone()));
            }
        }
        let expected = expected.iter().map(|s| (*s.entry).clone()).collect();
        (a, b, expected)
    }

    proptest! {
        /// Built apart from the node, from copies that lag it by a step,
        /// the pages of one exchange leave both sides with the LWW merge
        /// of the two maps, as [`Node::on_sync`]'s own pages do.
        #[test]
        fn pages_built_off_the_node_converge_to_the_merged_map(
            left in proptest::collection::vec(arbitrary_entry(), 0..12),
            right in proptest::collection::vec(arbitrary_entry(), 0..12),
        ) {
            let (mut a, mut b, expected) = seeded_pair(&left, &right);
            exchange_off_node(&mut a, &mut b, |_, _| {});
            prop_assert_eq!(kv_contents(&a), expected.clone());
            prop_assert_eq!(kv_contents(&b), expected);
        }
    }

    proptest! {
        /// Whatever each side holds, one exchange leaves both with the LWW
        /// merge of the two maps, whichever side initiates.
        #[test]
        fn one_exchange_converges_to_the_merged_map(
            left in proptest::collection::vec(arbitrary_entry(), 0..12),
            right in proptest::collection::vec(arbitrary_entry(), 0..12),
            a_initiates in any::<bool>(),
        ) {
            let (mut a, mut b, expected) = seeded_pair(&left, &right);
            if a_initiates {
                exchange(&mut a, &mut b);
            } else {
                exchange(&mut b, &mut a);
            }
            prop_assert_eq!(kv_contents(&a), expected.clone());
            prop_assert_eq!(kv_contents(&b), expected);
        }
    }
}
