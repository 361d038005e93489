//! Byte sizes as people write them (`64M`, `1.5G`) and as they are shown
//! (`64 MiB`), for exec resource limits.

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a size (a number of bytes with an optional K, M, G or T suffix, powers of 1024)")]
pub struct SizeError {
    pub input: String,
}

/// Parses `N`, `N[KMGT]`, `N[KMGT]i?B?` (powers of 1024); fractions allowed
/// with a suffix (`1.5G`).
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let bad = || SizeError {
        input: input.to_string(),
    };
    let s = input.trim();
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() {
        return Err(bad());
    }
    let suffix = suffix.trim().to_ascii_uppercase();
    let suffix = suffix.trim_end_matches('B').trim_end_matches('I');
    let shift = match suffix {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift).ok_or_else(bad);
    }
    if shift == 0 {
        return Err(bad());
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * (1u64 << shift) as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// `64 MiB`, `1.5 GiB`, `512 B`: the largest unit that keeps the number ≥ 1.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        let s = format!("{v:.1}");
        format!("{} {}", s.trim_end_matches(".0"), UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        for bad in ["", "M", "64X", "-1", "1.5", "1..5G", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_with_binary_units() {
        assert_eq!(format_bytes(64 << 20), "64 MiB");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(0), "0 B");
    }
}
