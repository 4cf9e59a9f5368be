//! Go's duration syntax, the one every duration in Shoal is written in:
//! config keys (`probe_interval = "500ms"`), check fields (`"Interval":
//! "1.5s"`) and the API's `?wait=`. Consul and its clients write durations
//! this way, so a value copied from a Consul setup means the same here.
//!
//! The grammar is Go's `time.ParseDuration`: one or more decimal numbers,
//! each with an optional fraction and a unit, such as `300ms`, `1.5h` or
//! `1h2m3.5s`; units `ns`, `us` (or `µs`, with either micro sign), `ms`,
//! `s`, `m`, `h`; a bare `0` is zero. Two differences, both refusals: a
//! sign (`-1s`, `+1s`) is an error, as no setting means anything by a
//! negative duration, and surrounding whitespace is ignored. Arithmetic is
//! exact (integer nanoseconds); digits below a nanosecond are dropped, as
//! Go does.

use std::time::Duration;

/// The longest duration Go can represent, and so the longest accepted:
/// 2^63 - 1 ns, about 292 years.
pub const MAX: Duration = Duration::from_nanos(i64::MAX as u64);

/// Units in the order shown in errors, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 MICRO SIGN
    ("μs", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Fraction digits kept: enough that the dropped ones are worth less than
/// a nanosecond even for hours, and small enough for `u128` arithmetic.
const MAX_FRACTION_DIGITS: u32 = 18;

/// What is wrong with a duration. Each message quotes the text it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: write e.g. \"10s\" or \"500ms\"")]
    Empty,
    #[error("`{text}`: a duration cannot have a sign (write e.g. \"10s\")")]
    Signed { text: String },
    #[error("`{text}`: expected a number at `{at}`")]
    ExpectedNumber { text: String, at: String },
    #[error(
        "`{text}`: `{number}` has no unit: write e.g. \"{number}s\" (units: ns, us, ms, s, m, h)"
    )]
    NoUnit { text: String, number: String },
    #[error("`{text}`: unknown unit `{unit}` (use ns, us, µs, ms, s, m or h)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{text}` is too long: at most 2562047h47m16.854775807s")]
    TooLong { text: String },
}

/// Parses a Go duration (see the module docs for the grammar).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let owned = || trimmed.to_string();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    if trimmed.starts_with(['-', '+']) {
        return Err(DurationError::Signed { text: owned() });
    }
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    let max = MAX.as_nanos();
    let too_long = || DurationError::TooLong { text: owned() };
    let mut total: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(DurationError::ExpectedNumber {
                text: owned(),
                at: rest.to_string(),
            });
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos = match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, nanos)) => *nanos,
            None if unit.is_empty() && after.is_empty() => {
                return Err(DurationError::NoUnit {
                    text: owned(),
                    number: number.to_string(),
                });
            }
            None if unit.is_empty() => {
                return Err(DurationError::ExpectedNumber {
                    text: owned(),
                    at: after.to_string(),
                });
            }
            None => {
                return Err(DurationError::UnknownUnit {
                    text: owned(),
                    unit: unit.to_string(),
                });
            }
        };
        let whole = digits_value(whole, max).ok_or_else(too_long)?;
        let (numerator, scale) = fraction_value(fraction);
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|nanos| nanos.checked_add(numerator * unit_nanos / scale))
            .and_then(|nanos| nanos.checked_add(total))
            .filter(|nanos| *nanos <= max)
            .ok_or_else(too_long)?;
        rest = after;
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Splits off the leading `digits[.digits]` of `text`.
fn split_number(text: &str) -> (&str, &str) {
    let whole = text.bytes().take_while(u8::is_ascii_digit).count();
    let mut end = whole;
    if text[end..].starts_with('.') {
        end += 1 + text[end + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
    }
    text.split_at(end)
}

/// The value of a run of ASCII digits; `None` past `max`.
fn digits_value(digits: &str, max: u128) -> Option<u128> {
    digits.bytes().try_fold(0u128, |value, digit| {
        let value = value * 10 + u128::from(digit - b'0');
        (value <= max).then_some(value)
    })
}

/// A fraction's digits as `numerator / scale`, keeping the first
/// [`MAX_FRACTION_DIGITS`].
fn fraction_value(digits: &str) -> (u128, u128) {
    digits
        .bytes()
        .take(MAX_FRACTION_DIGITS as usize)
        .fold((0, 1), |(numerator, scale), digit| {
            (numerator * 10 + u128::from(digit - b'0'), scale * 10)
        })
}

/// Formats a duration as Go prints one (`1h2m3.5s`, `1.5ms`, `0s`), so that
/// what Shoal shows can be pasted back where a duration is expected.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
    let rest = decimal(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{rest}s"),
        (0, _) => format!("{minutes}m{rest}s"),
        _ => format!("{hours}h{minutes}m{rest}s"),
    }
}

/// `value / unit` in decimal, without trailing zeros in the fraction.
fn decimal(value: u128, unit: u128) -> String {
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn parses_every_unit_and_fractions() {
        assert_eq!(parse("10s"), Ok(MS(10_000)));
        assert_eq!(parse("500ms"), Ok(MS(500)));
        assert_eq!(parse("1.5s"), Ok(MS(1500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("120000ms"), Ok(MS(120_000)));
        assert_eq!(parse("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse("1m"), Ok(MS(60_000)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        for micro in ["250us", "250µs", "250μs"] {
            assert_eq!(parse(micro), Ok(Duration::from_micros(250)), "{micro}");
        }
        assert_eq!(parse(".5s"), Ok(MS(500)));
        assert_eq!(parse("5.s"), Ok(MS(5000)));
        assert_eq!(parse(" 15s "), Ok(MS(15_000)));
    }

    #[test]
    fn parses_sequences_and_zero() {
        assert_eq!(parse("1h2m3.5s"), Ok(MS(3_723_500)));
        assert_eq!(parse("1m30s"), Ok(MS(90_000)));
        assert_eq!(parse("1s500ms"), Ok(MS(1500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("0.000s"), Ok(Duration::ZERO));
    }

    #[test]
    fn fractions_are_exact_and_truncate_below_a_nanosecond() {
        assert_eq!(parse("0.1s"), Ok(MS(100)));
        assert_eq!(parse("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse("1.5ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            parse("0.33333333333333333333333h"),
            Ok(Duration::from_nanos(1_199_999_999_999))
        );
    }

    #[test]
    fn the_longest_go_duration_parses_and_longer_ones_do_not() {
        assert_eq!(parse("2562047h47m16.854775807s"), Ok(MAX));
        assert_eq!(parse("9223372036854775807ns"), Ok(MAX));
        for long in [
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999999999999999999999999h",
            "2562047h47m16.854775808s",
        ] {
            assert!(
                matches!(parse(long), Err(DurationError::TooLong { .. })),
                "{long}: {:?}",
                parse(long)
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |text: &str| parse(text).unwrap_err().to_string();
        assert!(message("").contains("empty"));
        assert!(message("  ").contains("empty"));
        assert!(message("-1s").contains("sign"));
        assert!(message("+1s").contains("sign"));
        assert!(message("10").contains("`10` has no unit"));
        assert!(message("1h30").contains("`30` has no unit"));
        assert!(message("10x").contains("unknown unit `x`"));
        assert!(message("1 hour").contains("unknown unit ` hour`"));
        assert!(message("2days").contains("unknown unit `days`"));
        assert!(message("soon").contains("expected a number at `soon`"));
        assert!(message("s").contains("expected a number"));
        assert!(message(".s").contains("expected a number at `.s`"));
        assert!(message("1..5s").contains("expected a number at `.5s`"));
        assert!(message("1h 2m").contains("unknown unit `h `"));
    }

    #[test]
    fn formats_as_go_does() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_nanos(7)), "7ns");
        assert_eq!(format(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(format(MS(1)), "1ms");
        assert_eq!(format(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(format(MS(500)), "500ms");
        assert_eq!(format(MS(1500)), "1.5s");
        assert_eq!(format(MS(90_000)), "1m30s");
        assert_eq!(format(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format(MS(3_723_500)), "1h2m3.5s");
        assert_eq!(format(MAX), "2562047h47m16.854775807s");
    }

    proptest! {
        #[test]
        fn format_then_parse_gives_the_duration_back(nanos in 0..=MAX.as_nanos() as u64) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn whole_numbers_with_units_add_up(
            parts in prop::collection::vec((0u64..100_000, 0usize..UNITS.len()), 1..5)
        ) {
            let text: String = parts
                .iter()
                .map(|(value, unit)| format!("{value}{}", UNITS[*unit].0))
                .collect();
            let nanos: u128 = parts
                .iter()
                .map(|(value, unit)| u128::from(*value) * UNITS[*unit].1)
                .sum();
            prop_assert_eq!(parse(&text), Ok(Duration::from_nanos(nanos as u64)));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn duration_like_text_never_panics(text in "[0-9.]{0,25}(ns|us|µs|μs|ms|s|m|h|x|)[0-9.]{0,25}[a-zµμ]{0,3}") {
            let _ = parse(&text);
        }
    }
}
