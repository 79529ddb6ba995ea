//! Sizes in bytes as operators write them (`--worker-max-rss 512M`) and as
//! log lines show them. The suffixes are systemd's (`MemoryMax=`): K, M, G
//! and T are powers of 1024; a bare number is bytes.

/// Parses `512M`, `2G`, `1048576`: a whole number with an optional suffix
/// K, M, G or T (either case), at least one byte and at most 2^63 - 1.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid size '{text}' (use a whole number of bytes, or one with K, M, G or T, e.g. 512M)"
        )
    };
    let (digits, shift) = match text.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => {
            let shift = match unit.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(invalid()),
            };
            (&text[..at], shift)
        }
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let count: u64 = digits.parse().map_err(|_| invalid())?;
    let bytes = count
        .checked_mul(1u64 << shift)
        .filter(|bytes| *bytes <= i64::MAX as u64)
        .ok_or_else(|| format!("size '{text}' is too large"))?;
    if bytes == 0 {
        return Err(format!("size '{text}' is zero; give at least one byte"));
    }
    Ok(bytes)
}

/// `612 MiB`, `1.5 GiB`, `800 KiB`, `12 B`: for log lines.
pub fn format_byte_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 || value.fract() < 0.05 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_powers_of_1024_as_in_systemd() {
        assert_eq!(parse_byte_size("512M"), Ok(512 << 20));
        assert_eq!(parse_byte_size("2G"), Ok(2 << 30));
        assert_eq!(parse_byte_size("2g"), Ok(2 << 30));
        assert_eq!(parse_byte_size("64k"), Ok(64 << 10));
        assert_eq!(parse_byte_size("1T"), Ok(1 << 40));
        assert_eq!(parse_byte_size("1048576"), Ok(1 << 20));
    }

    #[test]
    fn a_bad_size_names_the_value_and_the_form() {
        for text in ["", "M", "12X", "1.5G", "-1M", " 5M", "5 M", "5MB", "0x10"] {
            let err = parse_byte_size(text).unwrap_err();
            assert!(err.contains(&format!("'{text}'")), "{err}");
        }
        assert!(parse_byte_size("0").unwrap_err().contains("zero"));
        assert!(parse_byte_size("0M").unwrap_err().contains("zero"));
        assert!(
            parse_byte_size("9999999999T")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_byte_size("99999999999999999999")
                .unwrap_err()
                .contains("'99999999999999999999'")
        );
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(format_byte_size(12), "12 B");
        assert_eq!(format_byte_size(800 << 10), "800 KiB");
        assert_eq!(format_byte_size(612 << 20), "612 MiB");
        assert_eq!(format_byte_size(3 << 29), "1.5 GiB");
    }
}
