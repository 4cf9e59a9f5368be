//! Serialized answers to repeated reads, so that a lookup is a map hit and
//! a reference-counted copy of the body.
//!
//! A read handler whose answer depends only on the request URI and on
//! parts of the [`Snapshot`] it names in a [`ReadAt`] (the cluster, the KV
//! store, or both) attaches a [`Cacheable`] to its `200` response; the
//! front layer (`api::front`) stores it under the request's raw path and
//! query. The next request with the same URI is answered from the entry
//! while the snapshot's `cluster_index` / `kv_index` still equal the
//! stamp's: those indexes move with every change to what the answer
//! reads, so an entry is never stale. An entry of an older index is simply
//! a miss, recomputed and replaced.
//!
//! Only reads whose answer is the same for every caller allowed to make
//! them are cached, and only `Access::Read` routes mark answers: the front
//! layer still checks the `Host` header and, with `acl.protect_reads`, the
//! token on every hit, so a cached answer passes the same guard as a
//! computed one. Blocking queries (`?index=`) are never cached, and a URI
//! carrying `?token=` is never used as a key (secrets stay out of the map).
//!
//! Bounded: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of bodies;
//! answers over [`MAX_BODY`] are not kept. When full, entries of older
//! indexes go first, then everything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::HeaderValue;

use super::request_counters::MatchedRoute;
use crate::metrics::{Counters, Exposition, load};
use crate::reads::ReadAt;
use crate::snapshot::Snapshot;

/// Most entries kept at once.
pub const MAX_ENTRIES: usize = 1024;
/// Most body bytes kept at once.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Largest answer kept.
pub const MAX_BODY: usize = 256 * 1024;

/// Attached (as a response extension) by a handler to a `200` answer that
/// may be cached: the serialized body, its content type and its stamp.
#[derive(Clone, Debug)]
pub struct Cacheable {
    pub stamp: ReadAt,
    pub content_type: HeaderValue,
    pub body: Bytes,
    /// The route that computed it (set when it is kept), so that a hit is
    /// counted in `shoal_api_requests_total` under that route.
    pub route: Option<MatchedRoute>,
}

/// Counters of the cache, all monotonic (relaxed atomics).
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Requests answered from the cache.
    pub hits: AtomicU64,
    /// Cacheable answers computed because no current entry existed.
    pub misses: AtomicU64,
    /// Entries dropped to stay within the bounds.
    pub evictions: AtomicU64,
}

/// The cache itself, shared by every connection (behind [`crate::api::ApiState`]).
#[derive(Debug, Default)]
pub struct ResponseCache {
    entries: Mutex<Entries>,
    pub counters: CacheCounters,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Box<str>, Cacheable>,
    bytes: usize,
}

impl ResponseCache {
    /// The answer for `uri` if it is current in `snapshot`.
    pub fn get(&self, uri: &str, snapshot: &Snapshot) -> Option<Cacheable> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.map.get(uri)?;
        if !entry.stamp.is_current(&snapshot.indexes()) {
            return None;
        }
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry.clone())
    }

    /// Keeps `answer` for `uri`, if it may be kept (see the module docs).
    pub fn insert(&self, uri: &str, answer: Cacheable) {
        if !cacheable_uri(uri) || answer.body.len() > MAX_BODY {
            return;
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entries = &mut *entries;
        if let Some(old) = entries.map.remove(uri) {
            entries.bytes -= old.body.len();
        }
        if entries.map.len() >= MAX_ENTRIES || entries.bytes + answer.body.len() > MAX_BYTES {
            let before = entries.map.len();
            // Older indexes first: an entry whose stamp is behind the new
            // answer's can never be current again.
            let newest = answer.stamp;
            entries
                .map
                .retain(|_, entry| !entry.stamp.is_behind(&newest));
            entries.bytes = entries.map.values().map(|e| e.body.len()).sum();
            // Still half full (or too many bytes): start over rather than
            // scan the map again on every insert.
            if entries.map.len() >= MAX_ENTRIES / 2 || entries.bytes + answer.body.len() > MAX_BYTES
            {
                entries.map.clear();
                entries.bytes = 0;
            }
            self.counters
                .evictions
                .fetch_add((before - entries.map.len()) as u64, Ordering::Relaxed);
        }
        entries.bytes += answer.body.len();
        entries.map.insert(uri.into(), answer);
    }

    /// Entries and body bytes held now.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (entries.map.len(), entries.bytes)
    }
}

impl Counters for ResponseCache {
    fn prefix(&self) -> &'static str {
        "shoal_api_cache_"
    }

    fn visit(&self, out: &mut Exposition) {
        out.counter(
            "shoal_api_cache_hits_total",
            "API reads answered from the lookup cache.",
            load(&self.counters.hits),
        );
        out.counter(
            "shoal_api_cache_misses_total",
            "Cacheable API reads computed because no current answer was kept.",
            load(&self.counters.misses),
        );
        out.counter(
            "shoal_api_cache_evictions_total",
            "Lookup cache entries dropped to stay within its bounds.",
            load(&self.counters.evictions),
        );
        let (entries, bytes) = self.size();
        out.gauge(
            "shoal_api_cache_entries",
            "Answers kept in the lookup cache.",
            entries as f64,
        );
        out.gauge(
            "shoal_api_cache_bytes",
            "Body bytes kept in the lookup cache.",
            bytes as f64,
        );
    }
}

/// Whether answers to `uri` (path and query) may be cached: not blocking
/// queries, never a URI that carries a token, and nothing that reads
/// network coordinates (`/v1/coordinate/*`, `?near=`): they move with
/// every probe and invalidate nothing.
pub fn cacheable_uri(uri: &str) -> bool {
    if uri.starts_with("/v1/coordinate/") {
        return false;
    }
    let Some((_, query)) = uri.split_once('?') else {
        return true;
    };
    !query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        matches!(name, "index" | "wait" | "token" | "near")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reads::{Indexes, Reads};

    fn answer(cluster: Option<u64>, kv: Option<u64>, body: &'static str) -> Cacheable {
        let reads = Reads {
            cluster: cluster.is_some(),
            kv: kv.is_some(),
            events: false,
        };
        let at = Indexes {
            cluster: cluster.unwrap_or_default(),
            kv: kv.unwrap_or_default(),
            events: 0,
        };
        Cacheable {
            stamp: reads.at(at),
            content_type: HeaderValue::from_static("application/json"),
            body: Bytes::from_static(body.as_bytes()),
            route: None,
        }
    }

    #[test]
    fn blocking_and_token_uris_are_never_keys() {
        assert!(cacheable_uri("/v1/health/service/web?passing"));
        assert!(cacheable_uri("/v1/kv/a?raw"));
        assert!(cacheable_uri("/v1/kv/index"));
        assert!(cacheable_uri("/v1/flags/f?user=index"));
        assert!(!cacheable_uri("/v1/kv/a?index=3"));
        assert!(!cacheable_uri("/v1/kv/a?raw&wait=1s"));
        assert!(!cacheable_uri("/v1/kv/a?token=s3cret"));
        assert!(!cacheable_uri("/v1/kv/a?raw&token"));
        // Coordinates move with every probe and invalidate nothing.
        assert!(!cacheable_uri("/v1/coordinate/nodes"));
        assert!(!cacheable_uri("/v1/coordinate/node/a?dc=dc1"));
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let cache = ResponseCache::default();
        for i in 0..(3 * MAX_ENTRIES as u64) {
            cache.insert(&format!("/v1/kv/{i}?raw"), answer(None, Some(i), "x"));
            let (entries, bytes) = cache.size();
            assert!(
                entries <= MAX_ENTRIES && bytes == entries,
                "{entries} {bytes}"
            );
        }
        assert!(cache.counters.evictions.load(Ordering::Relaxed) > 0);
        let big = vec![b'x'; MAX_BODY];
        for i in 0..100 {
            let mut entry = answer(Some(1), None, "");
            entry.body = Bytes::from(big.clone());
            cache.insert(&format!("/v1/catalog/service/{i}"), entry);
            assert!(cache.size().1 <= MAX_BYTES);
        }
        let mut too_big = answer(Some(1), None, "");
        too_big.body = Bytes::from(vec![b'x'; MAX_BODY + 1]);
        cache.insert("/big", too_big);
        assert!(!cache.entries.lock().unwrap().map.contains_key("/big"));
    }
}
