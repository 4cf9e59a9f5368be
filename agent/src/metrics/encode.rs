//! The two shapes an [`Exposition`] is shown in:
//!
//! - the Prometheus text format (version 0.0.4), written by the
//!   `prometheus-client` crate, which owns the escaping and the layout of
//!   counters and histograms;
//! - Consul's `/v1/agent/metrics` JSON: `{Timestamp, Gauges, Points,
//!   Counters, Samples}`. Consul reports the last 10-second interval; Shoal
//!   keeps no intervals, so `Counters` carry the totals since the agent
//!   started (`Count` and `Sum`; `Rate` is per second since start) and
//!   `Samples` (histograms) the totals of their observations, with `Mean`.
//!   Names are the Prometheus names; labels are `Labels`.

use std::fmt;
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value as Json, json};

use super::{Exposition, Kind, Value};

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl Exposition {
    /// The Prometheus text format.
    pub fn to_prometheus_text(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(TextCollector(self.clone())));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Consul's JSON shape; `uptime` turns totals into rates.
    pub fn to_consul_json(&self, now: SystemTime, uptime: Duration) -> Json {
        let uptime = uptime.as_secs_f64().max(1.0);
        let mut gauges = Vec::new();
        let mut counters = Vec::new();
        let mut samples = Vec::new();
        for family in &self.families {
            for series in &family.series {
                let labels: Map<String, Json> = series
                    .labels
                    .iter()
                    .map(|(name, value)| (name.to_string(), Json::from(value.as_str())))
                    .collect();
                match &series.value {
                    Value::Gauge(value) => gauges.push(json!({
                        "Name": family.name, "Value": value, "Labels": labels,
                    })),
                    Value::Counter(total) => {
                        counters.push(sampled(family.name, *total, *total as f64, uptime, labels))
                    }
                    Value::FloatCounter(total) => {
                        counters.push(sampled(family.name, *total as u64, *total, uptime, labels))
                    }
                    Value::Histogram(histogram) => samples.push(sampled(
                        family.name,
                        histogram.count,
                        histogram.sum,
                        uptime,
                        labels,
                    )),
                }
            }
        }
        json!({
            "Timestamp": go_timestamp(now),
            "Gauges": gauges,
            "Points": [],
            "Counters": counters,
            "Samples": samples,
        })
    }

    /// The families as a subsystem's section of `/v1/agent/self` shows
    /// them: each under its name without `prefix` (or, for a name outside
    /// it, without `shoal_`) and `_total`; a
    /// labelled family as an object by label value (one level per label);
    /// a histogram as `{count, sum, buckets: [[upper bound, observations
    /// in that bucket], ...]}` (sum in the histogram's unit, seconds for
    /// durations; observations past the last bound are `count` less the
    /// buckets).
    pub fn to_stats_json(&self, prefix: &str) -> Json {
        let mut section = Map::new();
        for family in &self.families {
            let name = family
                .name
                .strip_prefix(prefix)
                .or_else(|| family.name.strip_prefix("shoal_"))
                .unwrap_or(family.name);
            let key = name.strip_suffix("_total").unwrap_or(name);
            let value = match family.series.as_slice() {
                [only] if only.labels.is_empty() => stats_value(&only.value),
                series => {
                    let mut by_label = Json::Object(Map::new());
                    for one in series {
                        let mut slot = &mut by_label;
                        for (_, label) in &one.labels {
                            slot = slot
                                .as_object_mut()
                                .expect("an object per label level")
                                .entry(label.clone())
                                .or_insert_with(|| Json::Object(Map::new()));
                        }
                        *slot = stats_value(&one.value);
                    }
                    by_label
                }
            };
            section.insert(key.to_string(), value);
        }
        Json::Object(section)
    }
}

/// One value as `/v1/agent/self` shows it: whole numbers stay integers.
fn stats_value(value: &Value) -> Json {
    match value {
        Value::Counter(total) => json!(total),
        Value::FloatCounter(total) => json!(total),
        Value::Gauge(level) if level.fract() == 0.0 && (0.0..9e15).contains(level) => {
            json!(*level as u64)
        }
        Value::Gauge(level) => json!(level),
        Value::Histogram(histogram) => json!({
            "count": histogram.count,
            "sum": histogram.sum,
            "buckets": histogram.buckets,
        }),
    }
}

/// One of Consul's `SampledValue`s. Shoal keeps no minimum, maximum or
/// deviation: they are 0.
fn sampled(name: &str, count: u64, sum: f64, uptime: f64, labels: Map<String, Json>) -> Json {
    let mean = if count == 0 { 0.0 } else { sum / count as f64 };
    json!({
        "Name": name,
        "Count": count,
        "Rate": sum / uptime,
        "Sum": sum,
        "Min": 0,
        "Max": 0,
        "Mean": mean,
        "Stddev": 0,
        "Labels": labels,
    })
}

/// Go's `time.Time.String()` in UTC, as Consul writes `Timestamp`:
/// `2026-11-30 01:02:03 +0000 UTC`.
fn go_timestamp(now: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(now).to_string();
    // `2026-11-30T01:02:03Z`
    let trimmed = rfc3339.trim_end_matches('Z');
    format!("{} +0000 UTC", trimmed.replacen('T', " ", 1))
}

/// Hands an exposition to `prometheus-client`'s encoder.
#[derive(Debug)]
struct TextCollector(Exposition);

impl Collector for TextCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for family in &self.0.families {
            if family.series.is_empty() {
                continue;
            }
            // The encoder adds `_total` to counters itself.
            let (name, metric_type) = match family.kind {
                Kind::Counter => (
                    family.name.strip_suffix("_total").unwrap_or(family.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (family.name, MetricType::Gauge),
                Kind::Histogram => (family.name, MetricType::Histogram),
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, metric_type)?;
            for series in &family.series {
                let labels: Vec<(&str, &str)> = series
                    .labels
                    .iter()
                    .map(|(name, value)| (*name, value.as_str()))
                    .collect();
                if labels.is_empty() {
                    encode_value(&mut metric, &series.value)?;
                } else {
                    encode_value(&mut metric.encode_family(&labels)?, &series.value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(target: &mut MetricEncoder<'_>, value: &Value) -> Result<(), fmt::Error> {
    match value {
        Value::Counter(value) => target.encode_counter::<NoLabelSet, _, u64>(value, None),
        Value::FloatCounter(value) => target.encode_counter::<NoLabelSet, _, u64>(value, None),
        Value::Gauge(value) => target.encode_gauge(value),
        Value::Histogram(histogram) => target.encode_histogram::<NoLabelSet>(
            histogram.sum,
            histogram.count,
            &histogram.buckets,
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::HistogramSnapshot;

    fn sample() -> Exposition {
        let mut out = Exposition::default();
        out.counter("shoal_things_total", "Things seen.", 3);
        out.gauge("shoal_level", "A level.", 1.5);
        out.family("shoal_requests_total", "Requests.", Kind::Counter)
            .push(
                &[("route", "/v1/kv/{*key}"), ("code", "200")],
                Value::Counter(7),
            )
            .push(&[("route", "a\"b\\c"), ("code", "404")], Value::Counter(1));
        out.histogram(
            "shoal_wait_seconds",
            "Waits.",
            HistogramSnapshot {
                buckets: vec![(0.1, 2), (1.0, 1)],
                sum: 1.25,
                count: 4,
            },
        );
        out
    }

    #[test]
    fn prometheus_text_has_types_totals_and_cumulative_buckets() {
        let text = sample().to_prometheus_text();
        for line in [
            "# TYPE shoal_things_total counter",
            "shoal_things_total 3",
            "# TYPE shoal_level gauge",
            "shoal_level 1.5",
            r#"shoal_requests_total{route="/v1/kv/{*key}",code="200"} 7"#,
            r#"shoal_requests_total{route="a\"b\\c",code="404"} 1"#,
            "# TYPE shoal_wait_seconds histogram",
            r#"shoal_wait_seconds_bucket{le="0.1"} 2"#,
            r#"shoal_wait_seconds_bucket{le="1"} 3"#,
            r#"shoal_wait_seconds_bucket{le="+Inf"} 4"#,
            "shoal_wait_seconds_sum 1.25",
            "shoal_wait_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }

    #[test]
    fn stats_json_names_each_family_once_without_prefix_and_total() {
        let stats = sample().to_stats_json("shoal_");
        assert_eq!(stats["things"], 3);
        assert_eq!(stats["level"], 1.5);
        assert_eq!(stats["requests"]["/v1/kv/{*key}"]["200"], 7);
        assert_eq!(stats["wait_seconds"]["count"], 4);
        assert_eq!(stats["wait_seconds"]["buckets"][1], json!([1.0, 1]));
    }

    #[test]
    fn consul_json_has_consuls_shape() {
        let json = sample().to_consul_json(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Duration::from_secs(10),
        );
        assert_eq!(json["Timestamp"], "2027-01-15 08:00:00 +0000 UTC");
        assert_eq!(json["Points"], json!([]));
        assert_eq!(json["Gauges"][0]["Name"], "shoal_level");
        assert_eq!(json["Gauges"][0]["Value"], 1.5);
        let requests = &json["Counters"][1];
        assert_eq!(requests["Name"], "shoal_requests_total");
        assert_eq!(requests["Count"], 7);
        assert_eq!(requests["Labels"]["route"], "/v1/kv/{*key}");
        assert_eq!(requests["Rate"], 0.7);
        let wait = &json["Samples"][0];
        assert_eq!(wait["Count"], 4);
        assert_eq!(wait["Sum"], 1.25);
    }
}
