//! The KV pages of an anti-entropy exchange (see [`crate::anti_entropy`]): each side
//! walks its entries in the differing buckets in key order, from a key it
//! picked at random, a page of at most [`PAGE_BYTES`] at a time, and learns
//! where its walk stands from the page it answers.

use std::ops::Bound;

use rand::RngExt;

use super::Node;
use crate::anti_entropy::{KvCursor, KvPage, PAGE_BYTES, Records, SyncMessage};
use crate::kv::{BUCKETS, KvEntry, KvStore, bucket_of};

/// What an entry counts for against a page's budget: its strings and value,
/// plus room for the fixed fields.
fn page_cost(entry: &KvEntry) -> usize {
    entry.key.len() + entry.value.len() + entry.writer.len() + 32
}

/// The bucket list a peer sent, made safe: in range, sorted, each once.
fn sanitize(mut buckets: Vec<u16>) -> Vec<u16> {
    buckets.retain(|&bucket| usize::from(bucket) < BUCKETS);
    buckets.sort_unstable();
    buckets.dedup();
    buckets
}

/// The next page of `kv`'s entries in the buckets `mask` selects, walking
/// from `cursor` (whose `start` is set), at most `budget` bytes but at least
/// one entry; and where the walk continues (`None` once it is back at
/// `start`).
pub(crate) fn next_page(
    kv: &KvStore,
    mask: &[bool; BUCKETS],
    cursor: &KvCursor,
    budget: usize,
) -> (Vec<KvEntry>, Option<KvCursor>) {
    let Some(start) = cursor.start.as_deref() else {
        return (Vec::new(), None);
    };
    let mut entries: Vec<KvEntry> = Vec::new();
    let mut used = 0;
    let mut wrapped = cursor.wrapped;
    let mut after = cursor.after.clone();
    loop {
        // From `start` to the end, then from the beginning up to `start`.
        let (from, to) = match (&after, wrapped) {
            (Some(key), false) => (Bound::Excluded(key.as_str()), Bound::Unbounded),
            (None, false) => (Bound::Included(start), Bound::Unbounded),
            (Some(key), true) => (Bound::Excluded(key.as_str()), Bound::Excluded(start)),
            (None, true) => (Bound::Unbounded, Bound::Excluded(start)),
        };
        let mut last = None;
        for stored in kv.range(from, to) {
            let entry = &stored.entry;
            if !mask[bucket_of(&entry.key)] {
                continue;
            }
            let cost = page_cost(entry);
            if !entries.is_empty() && used + cost > budget {
                let next = KvCursor {
                    start: Some(start.to_string()),
                    after: last.or_else(|| after.clone()),
                    wrapped,
                };
                return (entries, Some(next));
            }
            used += cost;
            last = Some(entry.key.clone());
            entries.push((**entry).clone());
        }
        if wrapped {
            return (entries, None);
        }
        wrapped = true;
        after = None;
    }
}

/// Which buckets a (sanitized) list names.
fn mask_of(buckets: &[u16]) -> [bool; BUCKETS] {
    let mut mask = [false; BUCKETS];
    for &bucket in buckets {
        mask[usize::from(bucket)] = true;
    }
    mask
}

/// Our next page of an exchange: the entries, where our walk continues,
/// where this page began, and the buckets it walks. It is a function of a
/// KV store and the message it answers (see [`build_page`]), so it can be
/// built apart from the node, from any recent copy of its store: the agent
/// builds it off the core loop from the published snapshot, and the loop
/// only merges (see [`Node::on_sync_with`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OurPage {
    pub buckets: Vec<u16>,
    pub entries: Vec<KvEntry>,
    pub next: Option<KvCursor>,
    pub from: Option<KvCursor>,
}

/// The page we send in answer to `message`, built from `kv`; `None` when
/// the answer carries none (a summary digest, a resend request, the last
/// page). A walk not begun starts at a random key, `pick(len)` of the
/// store's `len` (at "" in an empty store: one empty page that shows
/// everything, i.e. that we hold nothing).
///
/// A copy of the store older than the node's own is as good as building
/// the page a moment earlier: every page already sees the store as it was
/// when it was built, and the store moves between the steps of an exchange.
pub fn build_page(
    kv: &KvStore,
    message: &SyncMessage,
    pick: impl FnOnce(usize) -> usize,
) -> Option<OurPage> {
    let (buckets, cursor) = match message {
        SyncMessage::Digest(digest) if digest.summary => return None,
        SyncMessage::Digest(digest) => {
            let buckets = if digest.kv_root == kv.root() {
                Vec::new()
            } else {
                kv.differing_buckets(&digest.kv_bucket_hashes)
            };
            (buckets, Some(KvCursor::default()))
        }
        SyncMessage::Delta(delta) if delta.resend => return None,
        SyncMessage::Delta(delta) => (sanitize(delta.kv.buckets.clone()), delta.kv.yours.clone()),
        SyncMessage::Records(Records { kv: page, .. }) | SyncMessage::Kv(page) => {
            if page.is_last() {
                return None;
            }
            (sanitize(page.buckets.clone()), page.yours.clone())
        }
    };
    let Some(mut cursor) = cursor.filter(|_| !buckets.is_empty()) else {
        return Some(OurPage {
            buckets,
            ..OurPage::default()
        });
    };
    if cursor.start.is_none() {
        let start = match kv.len() {
            0 => String::new(),
            len => kv.nth_key(pick(len)).map(String::from).unwrap_or_default(),
        };
        cursor = KvCursor {
            start: Some(start),
            after: None,
            wrapped: false,
        };
    }
    let (entries, next) = next_page(kv, &mask_of(&buckets), &cursor, PAGE_BYTES);
    Some(OurPage {
        buckets,
        entries,
        next,
        from: Some(cursor),
    })
}

impl Node {
    /// Our page for `message` (see [`build_page`]), from our own store.
    pub(super) fn own_page(&mut self, message: &SyncMessage) -> Option<OurPage> {
        let kv = self.kv();
        let rng = &mut self.rng;
        build_page(&kv, message, |len| rng.random_range(0..len))
    }

    /// The first page of an exchange (the responder's, in its Delta): the
    /// peer's walk is still to begin.
    pub(super) fn first_page(ours: OurPage) -> KvPage {
        let yours = (!ours.buckets.is_empty()).then(KvCursor::default);
        KvPage {
            buckets: ours.buckets,
            entries: ours.entries,
            next: ours.next,
            yours,
            from: ours.from,
            // Version 1's collection horizon: see `Node::sync_open_full`.
            horizon: 0,
        }
    }

    /// Answers a page with ours (built before the peer's page is merged,
    /// so nothing it just sent goes back), then merges the peer's.
    pub(super) fn answer_page(&mut self, incoming: KvPage, ours: OurPage) -> KvPage {
        self.merge_kv(incoming.entries);
        KvPage {
            buckets: ours.buckets,
            entries: ours.entries,
            next: ours.next,
            yours: incoming.next,
            from: ours.from,
            horizon: 0,
        }
    }

    /// A page after the Delta: merged, and answered with `ours` unless it
    /// was the last.
    pub(super) fn continue_pages(
        &mut self,
        page: KvPage,
        ours: Option<OurPage>,
    ) -> Option<SyncMessage> {
        match ours {
            Some(ours) if !page.is_last() => Some(SyncMessage::Kv(self.answer_page(page, ours))),
            _ => {
                self.merge_kv(page.entries);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store(keys: usize, value: usize) -> KvStore {
        let mut kv = KvStore::default();
        for i in 0..keys {
            kv.apply(Arc::new(KvEntry {
                key: format!("k{i:04}"),
                value: vec![b'v'; value],
                flags: 0,
                time: 1,
                writer: "w".into(),
                deleted: false,
            }));
        }
        kv
    }

    /// Walks the whole store from `start`, page by page.
    fn walk(kv: &KvStore, mask: &[bool; BUCKETS], start: &str, budget: usize) -> Vec<Vec<String>> {
        let mut cursor = Some(KvCursor {
            start: Some(start.into()),
            after: None,
            wrapped: false,
        });
        let mut pages = Vec::new();
        while let Some(at) = cursor {
            let (entries, next) = next_page(kv, mask, &at, budget);
            pages.push(entries.into_iter().map(|e| e.key).collect());
            cursor = next;
            assert!(pages.len() < 10_000, "the walk does not end");
        }
        pages
    }

    #[test]
    fn a_walk_covers_every_entry_once_from_any_start_within_the_budget() {
        let kv = store(300, 1000);
        let all = [true; BUCKETS];
        for start in ["k0000", "k0150", "k0299", "a", "z"] {
            let pages = walk(&kv, &all, start, 10_000);
            for page in &pages {
                assert!(page.len() <= 10_000 / 1000, "a page over the budget");
            }
            let mut keys: Vec<String> = pages.concat();
            assert_eq!(keys.len(), 300, "from {start}");
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 300, "from {start}: a key twice");
        }
    }

    #[test]
    fn a_walk_skips_other_buckets_and_always_moves() {
        let kv = store(200, 10);
        let mut mask = [false; BUCKETS];
        mask[3] = true;
        mask[200] = true;
        let expected = kv.iter().filter(|s| mask[bucket_of(&s.entry.key)]).count();
        // A budget smaller than one entry still sends one per page.
        let pages = walk(&kv, &mask, "k0100", 1);
        assert_eq!(pages.concat().len(), expected);
        assert!(pages.iter().all(|page| page.len() <= 1));
    }

    #[test]
    fn each_key_is_shown_whole_by_exactly_one_page_of_a_walk() {
        let kv = store(120, 1000);
        let mut mask = [false; BUCKETS];
        for bucket in (0..BUCKETS).step_by(3) {
            mask[bucket] = true;
        }
        let probes: Vec<String> = (0..130)
            .map(|i| format!("k{i:04}"))
            .chain(["a".into(), "k0050x".into(), "z".into()])
            .collect();
        for start in ["k0000", "k0060", "k0119", "a", "z"] {
            let mut cursor = KvCursor {
                start: Some(start.into()),
                after: None,
                wrapped: false,
            };
            let mut shown = vec![0; probes.len()];
            loop {
                let (entries, next) = next_page(&kv, &mask, &cursor, 5_000);
                let page = KvPage {
                    entries,
                    next: next.clone(),
                    from: Some(cursor.clone()),
                    ..KvPage::default()
                };
                assert!(page.entries.iter().all(|e| page.covers(&e.key)));
                for (count, probe) in shown.iter_mut().zip(&probes) {
                    *count += usize::from(page.covers(probe));
                }
                match next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            assert!(
                shown.iter().all(|&count| count == 1),
                "from {start}: {shown:?}"
            );
        }
    }

    #[test]
    fn bucket_lists_from_peers_are_cleaned() {
        assert_eq!(sanitize(vec![9, 3, 9, 300, 65535, 3]), [3, 9]);
    }
}
