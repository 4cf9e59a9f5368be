//! Go's duration syntax, as Consul clients send it: `10s`, `500ms`, `1m30s`,
//! `1.5s`, `0`. humantime accepts neither fractions nor a bare `0`.

use std::time::Duration;

/// Parses a Go duration. Negative durations are rejected: no check field
/// means anything by them.
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = text;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like \"10s\" or \"500ms\""))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("`{text}` has no unit: write e.g. \"{number}s\"")),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ns, us, ms, s, m or h)"
                ));
            }
        };
        total_nanos += value * nanos_per_unit;
        rest = after;
    }
    // Ten years is far beyond any sensible check setting; it keeps the
    // float-to-integer conversion exact enough and in range.
    if total_nanos > 10.0 * 365.0 * 86400e9 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_go_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_go_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_go_duration("120000ms"), Ok(ms(120_000)));
        assert_eq!(parse_go_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_go_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "10", "ten seconds", "10x", "-1s", "s", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
