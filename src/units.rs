//! Durations (`500ms`, `1m30s`, `1w`), sizes (`512KiB`, `10MB`, `1024`) and growth
//! rates (`10MiB/h`): the one grammar for reading them, in service files and on the
//! command line alike, and the one place that writes them back for people.
//!
//! Each parser returns a message that says what was expected, with an example, so
//! the caller only has to add the file, line and key (or the flag). Durations are
//! capped at 100 years: larger values would overflow `Instant + Duration` somewhere
//! downstream and are never what a person meant.
//!
//! Durations are written with the unit words they are read in, at one of three
//! precisions: exact, for a value a person configured (it reads back to the same
//! duration); the two largest units, for a measured value read at a glance (an
//! uptime, an age); and a fixed shape for a table column (how long each run lasted).
//! Sizes: exact for configured values, one decimal for measured ones.

use std::time::Duration;

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// The longest duration accepted anywhere (100 years, in seconds).
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

const DURATION_HELP: &str =
    "expected a number with a unit (ms, s, m, h, d, w), e.g. \"500ms\", \"10s\" or \"1m30s\"";

const SIZE_HELP: &str = "expected a whole number of bytes with a unit (B, KiB, MiB, GiB, TiB, \
     or decimal KB, MB, GB, TB), e.g. \"512KiB\" or \"10MiB\"";

/// Parses `500ms`, `10s`, `5m`, `2h`, `1d`, `1w` and combinations from largest to
/// smallest unit (`1h30m`, `1m30s`). `0s` parses; callers that need a positive value
/// check.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err(format!("empty duration: {DURATION_HELP}"));
    }
    if s.starts_with('-') {
        return Err(format!("`{s}` is negative: {DURATION_HELP}"));
    }
    // (unit, milliseconds per unit), largest first: the order a combination must follow.
    const UNITS: [(&str, u64); 6] = [
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut total_ms: u64 = 0;
    let mut rest = s;
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{s}` is not a duration: {DURATION_HELP}"));
        }
        let (num, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(if after.is_empty() {
                format!("`{s}` has no unit: {DURATION_HELP}")
            } else {
                format!("`{s}` is not a duration: {DURATION_HELP}")
            });
        }
        let Some(rank) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("unknown unit `{unit}` in `{s}`: {DURATION_HELP}"));
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(format!(
                "`{s}`: units must go from largest to smallest, each once, e.g. \"1h30m\""
            ));
        }
        last_rank = Some(rank);
        let too_large = || format!("`{s}` is too large: at most 36500d");
        let n: u64 = num.parse().map_err(|_| too_large())?;
        let ms = n.checked_mul(UNITS[rank].1).ok_or_else(too_large)?;
        total_ms = total_ms.checked_add(ms).ok_or_else(too_large)?;
        if total_ms > MAX_DURATION_SECS * 1000 {
            return Err(too_large());
        }
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a size: `512KiB`, `10MiB`, `1GiB`, `2TiB` (powers of 1024), `10KB`, `10MB`,
/// `1GB`, `1TB` (powers of 1000, as disks are sold), or plain bytes `1024` / `1024B`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err(format!("empty size: {SIZE_HELP}"));
    }
    if s.starts_with('-') {
        return Err(format!("`{s}` is negative: {SIZE_HELP}"));
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("`{s}` is not a size: {SIZE_HELP}"));
    }
    let (num, unit) = s.split_at(digits);
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ if unit.starts_with('.') => {
            return Err(format!(
                "`{s}`: fractions are not supported: {SIZE_HELP} (\"1536MiB\" for 1.5GiB)"
            ))
        }
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: {SIZE_HELP}")),
    };
    let too_large = || format!("`{s}` is too large");
    let n: u64 = num.parse().map_err(|_| too_large())?;
    n.checked_mul(multiplier).ok_or_else(too_large)
}

/// Parses a growth rate `SIZE/UNIT` (`10MiB/h`, `512KiB/m`, `1GiB/d`) into bytes per
/// second. Units: `s`, `m`, `h`, `d`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    const RATE_HELP: &str =
        "expected a size per time unit (s, m, h, d), e.g. \"10MiB/h\" or \"512KiB/m\"";
    let Some((size, per)) = s.split_once('/') else {
        return Err(format!("`{s}` is not a rate: {RATE_HELP}"));
    };
    let bytes = parse_size(size).map_err(|e| format!("{e}; {RATE_HELP}"))?;
    let seconds: f64 = match per {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        _ => return Err(format!("unknown time unit `{per}` in `{s}`: {RATE_HELP}")),
    };
    if bytes == 0 {
        return Err(format!("`{s}` is zero: {RATE_HELP}"));
    }
    Ok(bytes as f64 / seconds)
}

/// The units a duration is written in, largest first, in milliseconds. Weeks are read
/// but never written: `14d` says the same as `2w` to everyone.
const WRITTEN_UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Renders a duration exactly, the way a person would write it in a service file
/// (`1m30s`, `500ms`, `1d`); what it returns parses back to the same duration (to the
/// millisecond). For echoing configured values: timeouts, intervals, limits.
pub fn format_duration(d: Duration) -> String {
    write_duration(d, WRITTEN_UNITS.len())
}

/// Renders a duration in its two largest units, cut down (never up): `3d4h`, `5m12s`,
/// `1h` for an hour and five seconds, `850ms`. For measured values read at a glance:
/// uptimes, ages, how long a run lasted.
pub fn format_duration_rounded(d: Duration) -> String {
    write_duration(d, 2)
}

/// Renders a duration for a table column, where every row has the same shape: the
/// two largest units with the second zero-padded (`3m12s`, `2h05m`, `1d03h`, `1m00s`),
/// tenths below a minute (`12.3s`) and milliseconds below a second (`850ms`).
pub fn format_duration_column(d: Duration) -> String {
    let ms = d.as_millis();
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..=3_599_999 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Up to `units` consecutive units, starting at the largest one that is not zero.
fn write_duration(d: Duration, units: usize) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let first = WRITTEN_UNITS
        .iter()
        .position(|(_, per)| ms >= *per)
        .unwrap_or(WRITTEN_UNITS.len() - 1);
    let mut out = String::new();
    let mut rest = ms;
    for (unit, per) in WRITTEN_UNITS.iter().skip(first).take(units) {
        if rest >= *per {
            out.push_str(&format!("{}{unit}", rest / per));
            rest %= per;
        }
    }
    out
}

/// Renders a byte count exactly, with the largest binary unit that divides it
/// (`10MiB`, `1000B`), the way a service file writes it. For configured values.
pub fn format_size(bytes: u64) -> String {
    for (unit, per) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= per && bytes % per == 0 {
            return format!("{}{unit}", bytes / per);
        }
    }
    format!("{bytes}B")
}

/// Renders a byte count to one decimal in the largest binary unit that fits:
/// `512 B`, `12.3 MiB`, `1.0 GiB`. For measured values (RSS).
pub fn format_size_rounded(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// What `--since` accepts, for its error messages.
pub const SINCE_HELP: &str = "expected a duration back from now (30m, 2h, 1d, 1w, 1h30m), a date \
    (2026-11-24, local midnight) or a time (2026-11-24T08:00:00Z, or without an offset for local time)";

/// Parses `--since` (`ledger` and `logs` alike): a duration back from `now`, a local
/// date, or a date and time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let bad = || format!("`{text}`: {SINCE_HELP}");
    if text.is_empty() {
        return Err(bad());
    }
    if text.as_bytes()[0].is_ascii_digit() && !text.contains(['-', ':']) {
        let back = parse_duration(text).map_err(|_| bad())?;
        let back = chrono::Duration::from_std(back).map_err(|_| bad())?;
        return now
            .checked_sub_signed(back)
            .ok_or_else(|| format!("`{text}`: too far back"));
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).ok_or_else(bad)?;
        return local(midnight).ok_or_else(bad);
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return local(naive).ok_or_else(bad);
        }
    }
    Err(bad())
}

/// A local wall-clock time as UTC; on a DST fold, the earlier of the two.
fn local(naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn durations_count_back_from_now() {
        let at = |s| parse_since(s, now()).unwrap().to_rfc3339();
        assert_eq!(at("2h"), "2026-11-24T10:00:00+00:00");
        assert_eq!(at("1d"), "2026-11-23T12:00:00+00:00");
        assert_eq!(at("30m"), "2026-11-24T11:30:00+00:00");
        assert_eq!(at("1h30m"), "2026-11-24T10:30:00+00:00");
        assert_eq!(at("1500ms"), "2026-11-24T11:59:58.500+00:00");
        assert_eq!(at("1w"), "2026-11-17T12:00:00+00:00");
        assert_eq!(at("1w1d"), "2026-11-16T12:00:00+00:00");
    }

    #[test]
    fn absolute_times_parse_with_and_without_offsets() {
        let at = |s| parse_since(s, now()).unwrap();
        assert_eq!(
            at("2026-11-20T08:00:00+01:00").to_rfc3339(),
            "2026-11-20T07:00:00+00:00"
        );
        let local_midnight = Local
            .from_local_datetime(
                &NaiveDate::from_ymd_opt(2026, 11, 20)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap(),
            )
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(at("2026-11-20"), local_midnight);
        assert_eq!(at("2026-11-20 00:00"), local_midnight);
    }

    #[test]
    fn nonsense_is_an_error_that_shows_the_grammar() {
        for bad in [
            "",
            "2x",
            "h",
            "-1h",
            "1h-",
            "99999999999999999999d",
            "2026-13-01",
            "yesterday",
            "1 h",
            "9223372036854775807w",
            "5215w",
            "1m1h",
        ] {
            let err = parse_since(bad, now()).unwrap_err();
            assert!(
                err.contains("expected") || err.contains("too far"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn durations_parse() {
        let cases: &[(&str, u64)] = &[
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1w", 7 * 86_400_000),
            ("2w3d", 17 * 86_400_000),
            ("1w1ms", 7 * 86_400_000 + 1),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("1s500ms", 1_500),
            ("0s", 0),
            ("0ms", 0),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(*ms)), "{s}");
        }
    }

    #[test]
    fn bad_durations_say_what_was_expected() {
        for s in [
            "",
            "10",
            "-5s",
            "5 s",
            "5sec",
            "1.5s",
            "s",
            "10x",
            "30s1m",
            "1s1s",
            "99999999999999999999s",
            "36501d",
            "5215w",
            "1d1w",
            "1w1w",
            "1W",
            "1wk",
            "1d ",
        ] {
            let err = parse_duration(s).expect_err(s);
            assert!(
                err.contains("e.g.") || err.contains("at most"),
                "{s}: {err}"
            );
        }
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("36500d").is_ok());
        assert!(parse_duration("5214w").is_ok());
        assert!(parse_duration("5214w2d").is_ok());
        assert!(parse_duration("5214w3d")
            .unwrap_err()
            .contains("at most 36500d"));
        assert!(parse_duration("1d1w")
            .unwrap_err()
            .contains("largest to smallest"));
        assert!(parse_duration("1y")
            .unwrap_err()
            .contains("unknown unit `y`"));
    }

    #[test]
    fn sizes_parse() {
        let cases: &[(&str, u64)] = &[
            ("1024", 1024),
            ("1024B", 1024),
            ("512KiB", 512 << 10),
            ("10MiB", 10 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("10KB", 10_000),
            ("10MB", 10_000_000),
            ("1GB", 1_000_000_000),
            ("0", 0),
        ];
        for (s, n) in cases {
            assert_eq!(parse_size(s), Ok(*n), "{s}");
        }
        for s in [
            "",
            "-1",
            "1.5GiB",
            "10mb",
            "10M",
            "GiB",
            "99999999999TiB",
            "10 MiB",
        ] {
            assert!(parse_size(s).is_err(), "{s}");
        }
    }

    #[test]
    fn rates_parse_to_bytes_per_second() {
        assert_eq!(parse_rate("10MiB/h"), Ok((10u64 << 20) as f64 / 3600.0));
        assert_eq!(parse_rate("512KiB/m"), Ok((512u64 << 10) as f64 / 60.0));
        assert_eq!(parse_rate("1GiB/d"), Ok((1u64 << 30) as f64 / 86_400.0));
        assert_eq!(parse_rate("1KB/s"), Ok(1000.0));
        for s in ["10MiB", "10MiB/w", "/h", "0MiB/h", "10MiB/hour", "x/h"] {
            assert!(parse_rate(s).is_err(), "{s}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["500ms", "10s", "1m30s", "1d", "0s", "1h1ms", "400d1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(format_duration(parse_duration("2w").unwrap()), "14d");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn rounded_durations_show_two_units() {
        let secs = |n| format_duration_rounded(Duration::from_secs(n));
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(42), "42s");
        assert_eq!(secs(312), "5m12s");
        assert_eq!(secs(300), "5m");
        assert_eq!(secs(3 * 86_400 + 4 * 3_600 + 59), "3d4h");
        assert_eq!(secs(86_400 + 30), "1d");
        assert_eq!(secs(3_600 + 5), "1h");
        let ms = |n| format_duration_rounded(Duration::from_millis(n));
        assert_eq!(ms(850), "850ms");
        assert_eq!(ms(12_345), "12s345ms");
        assert_eq!(ms(7_500_000), "2h5m");
        // What it writes is a duration that parses.
        for n in [1, 999, 61_001, 90_061_001] {
            assert!(parse_duration(&ms(n)).is_ok(), "{n}");
        }
    }

    #[test]
    fn column_durations_keep_one_shape() {
        let ms = |n| format_duration_column(Duration::from_millis(n));
        assert_eq!(ms(0), "0ms");
        assert_eq!(ms(850), "850ms");
        assert_eq!(ms(12_345), "12.3s");
        assert_eq!(ms(60_000), "1m00s");
        assert_eq!(ms(192_000), "3m12s");
        assert_eq!(ms(7_500_000), "2h05m");
        assert_eq!(ms(97_200_000), "1d03h");
    }

    #[test]
    fn rounded_sizes_use_binary_units() {
        assert_eq!(format_size_rounded(512), "512 B");
        assert_eq!(format_size_rounded(1024), "1.0 KiB");
        assert_eq!(format_size_rounded(12_897_485), "12.3 MiB");
        assert_eq!(format_size_rounded(1 << 30), "1.0 GiB");
        assert_eq!(format_size_rounded(u64::MAX), "16384.0 PiB");
    }
}
