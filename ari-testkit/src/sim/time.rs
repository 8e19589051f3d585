//! Asterisk-style timestamps (`2026-11-26T11:14:38.299+0000`) computed without a clock.

/// Formats milliseconds since the Unix epoch the way Asterisk prints event timestamps.
pub(crate) fn format_ms(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let ms = epoch_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}+0000",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Formats as `2026-11-26 11:06:00 UTC` (used by `asterisk/info` build date).
pub(crate) fn format_plain(epoch_ms: u64) -> String {
    let s = format_ms(epoch_ms);
    format!("{} {} UTC", &s[..10], &s[11..19])
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_asterisk() {
        // 2026-11-26T11:14:38.299Z
        assert_eq!(
            super::format_ms(1_795_691_678_299),
            "2026-11-26T11:14:38.299+0000"
        );
        assert_eq!(super::format_ms(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            super::format_plain(1_795_691_678_299),
            "2026-11-26 11:14:38 UTC"
        );
    }
}
