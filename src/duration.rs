//! Durations as operators write them on the command line: `30s`, `100ms`,
//! `2m`, `1h`, `1.5s`; a bare number means seconds. Every duration flag and
//! option (`--ready delay=` included) is read here, and nothing longer than
//! [`MAX_DURATION`] gets through, so every deadline sockvisor computes from
//! one stays far inside what the clock can represent. Durations shown to a
//! person (progress, logs, status) are written the same way, rounded to what
//! matters (`53ms`, `1.2s`), never `53.355207ms`.

use std::time::Duration;

/// The longest duration any flag or option takes: one year (8760h). Longer
/// is a typo rather than a plan, and refusing it up front keeps
/// `now + duration` from overflowing the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration such as `250ms`, `30s`, `1.5s`, `2m` or `1h`, at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration '{text}' (write e.g. 500ms, 30s, 2m or 1h)");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| invalid())?;
    // Milliseconds divide rather than multiply by 0.001, so that the
    // maximum written in milliseconds is exactly the maximum.
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(invalid()),
    };
    // Also catches a number too long for f64 (infinity).
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "duration '{text}' is longer than the maximum, {} (one year)",
            format_duration(MAX_DURATION)
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid())
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
    fn the_maximum_is_one_year_whatever_the_unit() {
        for text in ["8760h", "525600m", "31536000", "31536000s", "31536000000ms"] {
            assert_eq!(parse_duration(text), Ok(MAX_DURATION), "{text}");
        }
        assert_eq!(MAX_DURATION, Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn longer_than_the_maximum_is_refused_naming_the_value_and_the_maximum() {
        let endless = format!("1{}", "0".repeat(400));
        for text in [
            "8760.1h",
            "525601m",
            "31536001",
            "31536000001ms",
            "9300000000000000000",
            "18446744073709551615",
            "18446744073709551616s",
            &endless,
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(&format!("'{text}'")), "{err}");
            assert!(err.contains("maximum, 8760h (one year)"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    /// The same pseudo-random sequence on every run, without a crate.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    #[test]
    fn arbitrary_text_is_a_bounded_duration_or_a_one_line_error() {
        let pieces = [
            "0",
            "1",
            "5",
            "9",
            ".",
            "..",
            "ms",
            "s",
            "m",
            "min",
            "h",
            "-",
            "+",
            "e",
            "E",
            " ",
            "_",
            "x",
            "inf",
            "NaN",
            "\u{e9}",
            "\u{663}",
            "\u{fffd}",
            "99999999999",
        ];
        let mut random = Xorshift(0x5eed_d0c0_ffee);
        let (mut accepted, mut refused_as_too_long) = (0, 0);
        for _ in 0..500 {
            let mut text = String::new();
            if random.below(2) == 0 {
                // Shaped like a duration: up to 24 digits, maybe a
                // fraction, maybe a unit.
                for _ in 0..random.below(25) {
                    text.push(char::from(b'0' + random.below(10) as u8));
                }
                if random.below(4) == 0 {
                    text.push('.');
                    text.push(char::from(b'0' + random.below(10) as u8));
                }
                text.push_str(["", "ms", "s", "m", "min", "h"][random.below(6) as usize]);
            } else {
                for _ in 0..random.below(8) {
                    text.push_str(pieces[random.below(pieces.len() as u64) as usize]);
                }
            }
            match parse_duration(&text) {
                Ok(duration) => {
                    assert!(duration <= MAX_DURATION, "{text:?}: {duration:?}");
                    accepted += 1;
                }
                Err(err) => {
                    assert!(err.contains(&format!("'{text}'")), "{text:?}: {err}");
                    assert!(!err.contains('\n'), "{text:?}: {err}");
                    refused_as_too_long += usize::from(err.contains("maximum"));
                }
            }
        }
        // The sequence reaches both sides of the bound, not only nonsense.
        assert!(accepted >= 10, "only {accepted} accepted");
        assert!(
            refused_as_too_long >= 10,
            "only {refused_as_too_long} too long"
        );
    }

    #[test]
    fn every_shown_duration_up_to_the_maximum_parses_back() {
        let max_nanos = MAX_DURATION.as_nanos() as u64;
        let mut random = Xorshift(0x0d0e_5ca1_ab1e);
        let mut durations = vec![Duration::ZERO, MAX_DURATION];
        for _ in 0..500 {
            // Spread over every order of magnitude, not just the largest.
            let scale = 10u64.pow(random.below(17) as u32 + 1);
            durations.push(Duration::from_nanos(random.below(scale.min(max_nanos))));
        }
        for duration in durations {
            let shown = format_duration(duration);
            let back = parse_duration(&shown).unwrap_or_else(|e| panic!("{duration:?}: {e}"));
            let error = back.abs_diff(duration).as_secs_f64();
            assert!(
                error <= duration.as_secs_f64() * 0.05 + 0.0005,
                "{duration:?} shown as {shown} reads back as {back:?}"
            );
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
