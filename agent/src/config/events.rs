//! The `[events]` table: how fast user events may be fired through this
//! agent's API (`PUT /v1/event/fire/:name`, enforced by `crate::events`).
//! Changing it needs a restart.

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Default `fire_rate`: events per second, sustained.
pub const DEFAULT_EVENT_FIRE_RATE: f64 = 10.0;
/// Default `fire_burst`: events fired at once after a quiet spell.
pub const DEFAULT_EVENT_FIRE_BURST: u32 = 50;
/// Largest `fire_burst` (and `fire_rate`) accepted.
const MAX_EVENT_FIRE: f64 = 1_000_000.0;

/// The `[events]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEvents {
    pub fire_rate: Option<f64>,
    pub fire_burst: Option<u32>,
}

/// The validated fire budget: a token bucket of `fire_burst` tokens that
/// refills at `fire_rate` a second; a fire past it answers 429.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventsConfig {
    /// Events per second fired through this agent, sustained.
    pub fire_rate: f64,
    /// Events fired at once after a quiet spell.
    pub fire_burst: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            fire_rate: DEFAULT_EVENT_FIRE_RATE,
            fire_burst: DEFAULT_EVENT_FIRE_BURST,
        }
    }
}

/// Validates the `[events]` table.
pub(super) fn events_config(file: Option<&FileEvents>) -> Result<EventsConfig, ConfigError> {
    let defaults = EventsConfig::default();
    let Some(file) = file else {
        return Ok(defaults);
    };
    let fire_rate = file.fire_rate.unwrap_or(defaults.fire_rate);
    if !(fire_rate > 0.0 && fire_rate <= MAX_EVENT_FIRE) {
        return Err(invalid(
            "events.fire_rate",
            format!("must be more than 0 and at most {MAX_EVENT_FIRE} events per second"),
        ));
    }
    let fire_burst = file.fire_burst.unwrap_or(defaults.fire_burst);
    if fire_burst == 0 || f64::from(fire_burst) > MAX_EVENT_FIRE {
        return Err(invalid(
            "events.fire_burst",
            format!("must be 1 to {MAX_EVENT_FIRE} events"),
        ));
    }
    Ok(EventsConfig {
        fire_rate,
        fire_burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EventsConfig, ConfigError> {
        let file: FileEvents = toml::from_str(text).map_err(|error| ConfigError::Invalid {
            key: "events".into(),
            message: error.to_string(),
        })?;
        events_config(Some(&file))
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(events_config(None).unwrap(), EventsConfig::default());
        let parsed = parse("fire_rate = 2.5\nfire_burst = 7").unwrap();
        assert_eq!((parsed.fire_rate, parsed.fire_burst), (2.5, 7));
        for (text, key) in [
            ("fire_rate = 0.0", "events.fire_rate"),
            ("fire_rate = -1.0", "events.fire_rate"),
            ("fire_rate = nan", "events.fire_rate"),
            ("fire_burst = 0", "events.fire_burst"),
            ("fire_burst = 2000000", "events.fire_burst"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
        let unknown = parse("rate = 1.0").unwrap_err().to_string();
        assert!(unknown.contains("rate"), "{unknown}");
    }
}
