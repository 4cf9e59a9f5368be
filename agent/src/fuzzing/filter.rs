//! The `?filter=` language: text from any HTTP client, lexed, parsed (with
//! its regular expressions compiled within the filter budget), checked
//! against the element type of every endpoint that takes a filter, then
//! evaluated over that endpoint's example element and a hollow one (empty
//! lists, maps and strings, so absent keys and empty lists are walked too).

use std::sync::OnceLock;

use serde_json::Value;

use crate::api::filter::{Filter, Shape};

const SHAPES: [Shape; 6] = [
    Shape::AgentService,
    Shape::AgentCheck,
    Shape::CatalogService,
    Shape::Node,
    Shape::ServiceEntry,
    Shape::HealthCheck,
];

/// Parses `data` as a filter for every endpoint, and runs what parses.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (sample, hollow) in samples() {
        if let Ok(filter) = Filter::parse(text, sample) {
            filter.matches(sample);
            filter.matches(hollow);
        }
    }
}

/// Each shape's example element, and the same emptied.
fn samples() -> &'static [(Value, Value)] {
    static SAMPLES: OnceLock<Vec<(Value, Value)>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        SHAPES
            .iter()
            .map(|shape| {
                let sample = shape.sample();
                let hollow = hollowed(&sample);
                (sample, hollow)
            })
            .collect()
    })
}

/// `element` with its fields kept and their values emptied: lists, maps
/// and strings empty, so every nested key is absent.
fn hollowed(element: &Value) -> Value {
    let empty = |value: &Value| match value {
        Value::Object(_) => Value::Object(Default::default()),
        Value::Array(_) => Value::Array(Vec::new()),
        Value::String(_) => Value::String(String::new()),
        other => other.clone(),
    };
    match element {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), empty(value)))
                .collect(),
        ),
        other => empty(other),
    }
}
