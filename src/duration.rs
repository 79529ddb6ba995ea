//! Durations as operators write them on the command line: `30s`, `100ms`,
//! `2m`, `1h`, `1.5s`; a bare number means seconds. Durations shown to a
//! person (progress, logs, status) are written the same way, rounded to what
//! matters (`53ms`, `1.2s`), never `53.355207ms`.

use std::time::Duration;

/// Parses a duration such as `250ms`, `30s`, `1.5s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration '{text}' (write e.g. 500ms, 30s, 2m or 1h)");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(invalid()),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| invalid())
}

/// Writes `duration` as the flags take it: milliseconds below a second
/// (one decimal below 10ms), then seconds, minutes or hours with at most
/// one decimal.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_secs_f64() * 1000.0;
    if millis < 10.0 {
        return format!("{}ms", one_decimal(millis));
    }
    if millis < 999.5 {
        return format!("{}ms", millis.round());
    }
    let seconds = millis / 1000.0;
    if seconds < 120.0 {
        format!("{}s", one_decimal(seconds))
    } else if seconds < 7200.0 {
        format!("{}m", one_decimal(seconds / 60.0))
    } else {
        format!("{}h", one_decimal(seconds / 3600.0))
    }
}

/// `value` rounded to one decimal, without a trailing `.0`.
fn one_decimal(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

/// Whole milliseconds, for JSON fields in a fixed unit.
pub fn as_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_understood() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn nonsense_is_rejected_with_an_example() {
        for bad in ["", "s", "10x", "-1s", "1..2s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("e.g. 500ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_are_shown_as_the_flags_take_them() {
        let cases = [
            (Duration::from_nanos(53_355_207), "53ms"),
            (Duration::from_micros(460), "0.5ms"),
            (Duration::from_micros(1_220), "1.2ms"),
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(999), "999ms"),
            (Duration::from_micros(999_600), "1s"),
            (Duration::from_millis(1_234), "1.2s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(150), "2.5m"),
            (Duration::from_secs(3600), "60m"),
            (Duration::from_secs(3 * 3600), "3h"),
        ];
        for (duration, shown) in cases {
            assert_eq!(format_duration(duration), shown, "{duration:?}");
        }
    }

    #[test]
    fn a_shown_duration_parses_back_to_about_the_same() {
        for millis in [0, 3, 17, 250, 999, 1_000, 1_234, 59_999, 150_000, 9_000_000] {
            let duration = Duration::from_millis(millis);
            let shown = format_duration(duration);
            let back = parse_duration(&shown).unwrap();
            let error = back.abs_diff(duration).as_secs_f64();
            assert!(
                error <= duration.as_secs_f64() * 0.05 + 0.0005,
                "{millis}ms shown as {shown}"
            );
        }
    }
}
