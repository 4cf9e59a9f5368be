//! The agent's lookup cache as the lookup benchmark sees it: its hit and
//! miss counters (`shoal_api_cache_hits_total`, `shoal_api_cache_misses_total`
//! on `/metrics`, documented in docs/metrics.md), read before and after a
//! run, and the hit ratio of what happened in between.

use std::net::SocketAddr;

use anyhow::{Context, Result};

use crate::http::HttpClient;

const HITS: &str = "shoal_api_cache_hits_total";
const MISSES: &str = "shoal_api_cache_misses_total";

/// The two counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheReading {
    pub hits: u64,
    pub misses: u64,
}

impl CacheReading {
    /// Reads `/metrics` of the agent whose API is at `api`.
    pub async fn read(api: SocketAddr) -> Result<Self> {
        let response = HttpClient::new(api).get("/metrics").await?;
        anyhow::ensure!(
            response.status.is_success(),
            "/metrics on {api} answered {}",
            response.status
        );
        Self::parse(&String::from_utf8_lossy(&response.body))
            .with_context(|| format!("/metrics on {api}"))
    }

    /// Both counters from a Prometheus text exposition. A counter may carry
    /// labels (`name{..} value`); these two have none, but labelled series
    /// would be summed.
    pub fn parse(text: &str) -> Result<Self> {
        let counter = |name: &str| -> Result<u64> {
            let mut found = None;
            for line in text.lines().filter(|line| !line.starts_with('#')) {
                let Some((series, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let series_name = series.split_once('{').map_or(series, |(name, _)| name);
                if series_name.trim() != name {
                    continue;
                }
                // Shoal writes integers; Prometheus allows floats ("1.2e+06").
                let value = value.trim();
                let value = value
                    .parse::<u64>()
                    .or_else(|_| value.parse::<f64>().map(|float| float as u64))
                    .with_context(|| format!("`{line}`: the value is not a number"))?;
                *found.get_or_insert(0) += value;
            }
            found.with_context(|| format!("no `{name}` in the exposition"))
        };
        Ok(Self {
            hits: counter(HITS)?,
            misses: counter(MISSES)?,
        })
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &CacheReading) -> CacheDelta {
        CacheDelta {
            hits: self.hits.saturating_sub(before.hits),
            misses: self.misses.saturating_sub(before.misses),
        }
    }
}

/// Hits and misses over one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheDelta {
    pub hits: u64,
    pub misses: u64,
}

impl CacheDelta {
    /// Hits over cacheable lookups (hits + misses); `None` when there were
    /// none.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP shoal_api_cache_hits_total API reads answered from the lookup cache.
# TYPE shoal_api_cache_hits_total counter
shoal_api_cache_hits_total 120000
# HELP shoal_api_cache_misses_total Cacheable API reads computed because no current answer was kept.
# TYPE shoal_api_cache_misses_total counter
shoal_api_cache_misses_total 1.5e+03
shoal_api_cache_misses_total_other 7
shoal_api_cache_evictions_total 3
";

    #[test]
    fn reads_both_counters_and_nothing_that_only_starts_like_them() {
        let reading = CacheReading::parse(EXPOSITION).unwrap();
        assert_eq!(
            reading,
            CacheReading {
                hits: 120_000,
                misses: 1_500
            }
        );
        let labelled = "shoal_api_cache_hits_total{route=\"a\"} 2\nshoal_api_cache_hits_total{route=\"b\"} 3\nshoal_api_cache_misses_total 0\n";
        assert_eq!(CacheReading::parse(labelled).unwrap().hits, 5);
    }

    #[test]
    fn a_missing_or_garbled_counter_is_named() {
        let error = CacheReading::parse("shoal_api_cache_hits_total 1\n").unwrap_err();
        assert!(
            error.to_string().contains("shoal_api_cache_misses_total"),
            "{error}"
        );
        let error =
            CacheReading::parse("shoal_api_cache_hits_total x\nshoal_api_cache_misses_total 1\n")
                .unwrap_err();
        assert!(error.to_string().contains("not a number"), "{error}");
    }

    #[test]
    fn hit_ratio_of_a_run() {
        let before = CacheReading {
            hits: 10,
            misses: 5,
        };
        let after = CacheReading {
            hits: 100,
            misses: 35,
        };
        let delta = after.since(&before);
        assert_eq!(
            delta,
            CacheDelta {
                hits: 90,
                misses: 30
            }
        );
        assert_eq!(delta.hit_ratio(), Some(0.75));
        assert_eq!(before.since(&before).hit_ratio(), None);
        // All misses (the cache-busting runs).
        assert_eq!(CacheDelta { hits: 0, misses: 9 }.hit_ratio(), Some(0.0));
    }
}
