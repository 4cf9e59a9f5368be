//! The `[kv]` table: the replicated KV store, and the top-level
//! `max_clock_drift` that bounds the times peers' entries carry.

use std::time::Duration;

use shoal_protocol::clock::DEFAULT_MAX_CLOCK_DRIFT;
pub use shoal_protocol::state::DEFAULT_KV_MAX_BYTES;

use super::file::FileKv;
use super::{ConfigError, invalid, parse_duration};

/// Default time KV tombstones are kept: three days, as Consul reaps nodes.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(72 * 3600);

/// The KV settings, checked against each other.
pub(super) struct KvSettings {
    pub tombstone_grace: Duration,
    pub max_bytes: u64,
    pub max_clock_drift: Duration,
}

pub(super) fn kv_settings(
    file: Option<&FileKv>,
    max_clock_drift: Option<&str>,
) -> Result<KvSettings, ConfigError> {
    let tombstone_grace = match file.and_then(|kv| kv.tombstone_grace.as_deref()) {
        Some(text) => parse_duration("kv.tombstone_grace", text)?,
        None => DEFAULT_TOMBSTONE_GRACE,
    };
    let max_bytes = match file.and_then(|kv| kv.max_bytes.as_ref()) {
        Some(value) => parse_bytes("kv.max_bytes", value)?,
        None => DEFAULT_KV_MAX_BYTES,
    };
    let max_clock_drift = match max_clock_drift {
        Some(text) => parse_duration("max_clock_drift", text)?,
        None => DEFAULT_MAX_CLOCK_DRIFT,
    };
    // A fresh write from a peer whose clock lags by up to the drift must
    // stay newer than any tombstone we collected (see shoal_protocol::kv).
    if tombstone_grace <= max_clock_drift {
        return Err(invalid(
            "kv.tombstone_grace",
            format!(
                "must be longer than max_clock_drift ({}), or fresh writes from a peer with a \
                 slow clock could be taken for deleted ones",
                humantime::format_duration(max_clock_drift)
            ),
        ));
    }
    Ok(KvSettings {
        tombstone_grace,
        max_bytes,
        max_clock_drift,
    })
}

/// A size: a positive integer (bytes) or a string with a unit, such as
/// "512KiB", "256MiB" or "1GiB" ("B", "KiB", "MiB", "GiB"; "KB", "MB",
/// "GB" are taken as the same powers of 1024).
fn parse_bytes(key: &str, value: &toml::Value) -> Result<u64, ConfigError> {
    let bytes = match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(text) => {
            let text = text.trim();
            let split = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (digits, unit) = text.split_at(split);
            let scale: Option<u64> = match unit.trim() {
                "" | "B" => Some(1),
                "KiB" => Some(1 << 10),
                "MiB" => Some(1 << 20),
                "GiB" => Some(1 << 30),
                // "1GB" is 10^9 bytes to a disk vendor and 2^30 to many
                // programs: refused rather than guessed.
                ambiguous @ ("KB" | "K" | "MB" | "M" | "GB" | "G") => {
                    let binary = format!("{}iB", &ambiguous[..1]);
                    return Err(invalid(
                        key,
                        format!(
                            "`{text}` is ambiguous (is a {ambiguous} a power of 1000 or of 1024?): \
                             write \"{digits}{binary}\" (KiB, MiB, GiB: powers of 1024) or a number of bytes"
                        ),
                    ));
                }
                _ => None,
            };
            digits
                .parse::<u64>()
                .ok()
                .zip(scale)
                .and_then(|(n, scale)| n.checked_mul(scale))
        }
        _ => None,
    };
    match bytes {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(invalid(
            key,
            format!("`{value}` is not a size: use bytes (268435456) or a unit (\"256MiB\")"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(grace: &str, max_bytes: Option<toml::Value>) -> FileKv {
        FileKv {
            tombstone_grace: Some(grace.into()),
            max_bytes,
        }
    }

    #[test]
    fn sizes_take_bytes_or_units() {
        let parse = |value: toml::Value| parse_bytes("kv.max_bytes", &value);
        assert_eq!(parse(toml::Value::Integer(4096)).unwrap(), 4096);
        assert_eq!(
            parse(toml::Value::String("256MiB".into())).unwrap(),
            256 << 20
        );
        assert_eq!(parse(toml::Value::String("2 GiB".into())).unwrap(), 2 << 30);
        for bad in ["", "0", "-1", "12 parsecs", "MiB"] {
            let error = parse(toml::Value::String(bad.into())).unwrap_err();
            assert!(error.to_string().contains("kv.max_bytes"), "{error}");
        }
        assert!(parse(toml::Value::Integer(-5)).is_err());
        for ambiguous in ["1GB", "512MB", "64 K"] {
            let error = parse(toml::Value::String(ambiguous.into())).unwrap_err();
            assert!(error.to_string().contains("ambiguous"), "{error}");
        }
    }

    #[test]
    fn the_grace_must_outlast_the_drift() {
        let defaults = kv_settings(None, None).unwrap();
        assert_eq!(defaults.max_bytes, DEFAULT_KV_MAX_BYTES);
        assert_eq!(defaults.max_clock_drift, DEFAULT_MAX_CLOCK_DRIFT);
        let error = kv_settings(Some(&file("20s", None)), None)
            .err()
            .expect("20s is within the default 30s drift");
        assert!(error.to_string().contains("kv.tombstone_grace"), "{error}");
        assert!(error.to_string().contains("max_clock_drift"), "{error}");
        let short = kv_settings(
            Some(&file("20s", Some(toml::Value::Integer(10)))),
            Some("2s"),
        )
        .unwrap();
        assert_eq!(
            (short.max_bytes, short.max_clock_drift),
            (10, Duration::from_secs(2))
        );
    }
}
