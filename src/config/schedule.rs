//! Cron schedules in a time zone: validation with messages that point at the bad
//! field, and the next run times, DST included.
//!
//! The supervisor's task runner reuses [`Schedule`] for its timers and catch-up, so
//! the rules live here once: croner matches the expression against *wall-clock* times
//! (it is handed them as if they were UTC, where nothing is skipped or repeated), and
//! this file maps each matching wall-clock time to a real instant. A time that does not
//! exist (the hour skipped when clocks go forward) runs once, at the first instant
//! after the gap; a time that exists twice (clocks go back) runs once, at its first
//! occurrence. Pure: the current time is always passed in.

use std::str::FromStr;

use chrono::{
    DateTime, Duration as ChronoDuration, FixedOffset, LocalResult, NaiveDateTime, TimeZone,
    Timelike, Utc,
};
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A problem with `schedule` or `tz`, with an optional hint for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub help: Option<String>,
}

impl Invalid {
    fn new(message: impl Into<String>, help: Option<String>) -> Invalid {
        Invalid {
            message: message.into(),
            help,
        }
    }
}

const NICKNAMES: [&str; 6] = [
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

const FIELDS_HELP: &str = "5 fields: minute hour day-of-month month day-of-week (e.g. \"0 7 * * *\"), \
     or 6 with seconds first (e.g. \"*/10 * * * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly";

/// The time zone a schedule is read in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// The machine's local time (`TZ`, `/etc/localtime`), read when runs are computed.
    Local,
    Named(chrono_tz::Tz),
}

/// A parsed schedule and its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    zone: Zone,
}

impl Schedule {
    /// Parses `expr` (5 or 6 fields, or a nickname) and the optional IANA zone.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, Invalid> {
        let cron = parse_cron(expr)?;
        let zone = match tz {
            Some(name) => Zone::Named(parse_tz(name)?),
            None => Zone::Local,
        };
        Ok(Schedule {
            expr: expr.to_string(),
            cron,
            zone,
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The first run strictly after `after`, or `None` if the schedule never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<FixedOffset>> {
        match self.zone {
            Zone::Local => next_in(&self.cron, &chrono::Local, after).map(|t| t.fixed_offset()),
            Zone::Named(tz) => next_in(&self.cron, &tz, after).map(|t| t.fixed_offset()),
        }
    }

    /// Up to `n` runs strictly after `after`, in order.
    pub fn runs_after(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<FixedOffset>> {
        let mut out = Vec::with_capacity(n.min(64));
        let mut cursor = after;
        while out.len() < n {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            cursor = next.with_timezone(&Utc);
            out.push(next);
        }
        out
    }
}

/// Validates a cron expression: 5 fields, 6 with seconds, or a nickname. The error
/// names the field croner rejects and its allowed range, and a schedule that can
/// never fire (`0 0 30 2 *`) is an error too.
pub fn parse_cron(expr: &str) -> Result<Cron, Invalid> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(Invalid::new(
            "empty schedule",
            Some(FIELDS_HELP.to_string()),
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    if trimmed.starts_with('@') {
        if !NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(trimmed)) {
            return Err(Invalid::new(
                format!("`{trimmed}` is not a supported nickname"),
                Some("use @hourly, @daily, @weekly, @monthly or @yearly".to_string()),
            ));
        }
    } else {
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() != 5 && fields.len() != 6 {
            return Err(Invalid::new(
                format!("schedule has {} fields", fields.len()),
                Some(FIELDS_HELP.to_string()),
            ));
        }
        if let Err(e) = parser.parse(trimmed) {
            return Err(locate_field_error(&parser, &fields, &e));
        }
    }
    let cron = parser.parse(trimmed).map_err(|e| {
        Invalid::new(
            format!("invalid schedule: {e}"),
            Some(FIELDS_HELP.to_string()),
        )
    })?;
    let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    let never = match reference {
        Some(r) => matches!(
            cron.find_next_occurrence(&r, false),
            Err(CronError::TimeSearchLimitExceeded)
        ),
        None => false,
    };
    if never {
        return Err(Invalid::new(
            format!("`{trimmed}` never fires (no date matches all its fields)"),
            Some("check day-of-month against month, e.g. there is no 30 February".to_string()),
        ));
    }
    Ok(cron)
}

/// Finds which field croner rejects by parsing each one alone inside a pattern that
/// is valid everywhere else: croner's own messages do not say where.
fn locate_field_error(parser: &CronParser, fields: &[&str], whole: &CronError) -> Invalid {
    const NAMES: [(&str, &str); 6] = [
        ("second", "0-59"),
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day-of-month", "1-31, L, W"),
        ("month", "1-12 or JAN-DEC"),
        ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday), L, #"),
    ];
    let offset = 6 - fields.len();
    for (i, field) in fields.iter().enumerate() {
        let mut probe = ["0", "0", "0", "1", "1", "*"];
        probe[i + offset] = field;
        if let Err(e) = parser.parse(&probe.join(" ")) {
            let (name, range) = NAMES[i + offset];
            return Invalid::new(
                format!("field {} ({name}) `{field}`: {}", i + 1, croner_message(&e)),
                Some(format!("{name} takes {range}")),
            );
        }
    }
    Invalid::new(
        format!("invalid schedule: {}", croner_message(whole)),
        Some(FIELDS_HELP.to_string()),
    )
}

fn croner_message(e: &CronError) -> String {
    let text = match e {
        CronError::IllegalCharacters(_) => {
            return "contains a character cron does not allow".into()
        }
        CronError::ComponentError(m) | CronError::InvalidPattern(m) => m.clone(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Validates an IANA zone name; an unknown one gets the closest known name as a hint.
pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz, Invalid> {
    if let Ok(tz) = chrono_tz::Tz::from_str(name) {
        return Ok(tz);
    }
    let known = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
    let help = match crate::names::closest(name, known) {
        Some(best) => format!("did you mean `{best}`?"),
        None => {
            "use an IANA zone name such as \"Europe/Berlin\" or \"America/New_York\"".to_string()
        }
    };
    Err(Invalid::new(
        format!("unknown time zone `{name}`"),
        Some(help),
    ))
}

/// Croner walks wall-clock times; this bounds how many of them one search may skip
/// (a per-second schedule in a repeated hour skips 3600).
const MAX_SKIPS: usize = 20_000;

fn next_in<Z: TimeZone>(cron: &Cron, zone: &Z, after: DateTime<Utc>) -> Option<DateTime<Z>> {
    let after = after.with_nanosecond(0)?;
    let mut wall = zone.from_utc_datetime(&after.naive_utc()).naive_local();
    for _ in 0..MAX_SKIPS {
        let matched = cron
            .find_next_occurrence(&Utc.from_utc_datetime(&wall), false)
            .ok()?
            .naive_utc();
        let instant = match zone.from_local_datetime(&matched) {
            LocalResult::Single(t) => t,
            LocalResult::Ambiguous(first, _) => first,
            LocalResult::None => gap_end(zone, matched)?,
        };
        if instant.with_timezone(&Utc) > after {
            return Some(instant);
        }
        // Already past: a repeated wall time whose first occurrence was before `after`,
        // or a skipped one that maps onto a gap end not after `after`.
        wall = matched.max(instant.naive_local());
    }
    None
}

/// The first instant after a wall-clock time that does not exist in `zone`.
fn gap_end<Z: TimeZone>(zone: &Z, missing: NaiveDateTime) -> Option<DateTime<Z>> {
    let exists = |t: NaiveDateTime| match zone.from_local_datetime(&t) {
        LocalResult::Single(d) => Some(d),
        LocalResult::Ambiguous(d, _) => Some(d),
        LocalResult::None => None,
    };
    // Gaps are whole minutes in practice (at most a day, when Samoa skipped one); step
    // by minutes to the far side, then back by seconds for zones with odd offsets.
    let mut t = missing.with_second(0)?;
    let mut found = None;
    for _ in 0..(2 * 24 * 60) {
        t = t.checked_add_signed(ChronoDuration::minutes(1))?;
        if let Some(d) = exists(t) {
            found = Some((t, d));
            break;
        }
    }
    let (mut t, mut d) = found?;
    for _ in 0..60 {
        let earlier = t.checked_sub_signed(ChronoDuration::seconds(1))?;
        if earlier <= missing {
            break;
        }
        match exists(earlier) {
            Some(e) => {
                t = earlier;
                d = e;
            }
            None => break,
        }
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn runs(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        Schedule::parse(expr, Some(tz))
            .unwrap()
            .runs_after(utc(after), n)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn daily_and_weekly_in_a_zone() {
        assert_eq!(
            runs("0 7 * * *", "Europe/Berlin", "2026-01-10T12:00:00Z", 3),
            [
                "2026-01-11T07:00:00+01:00",
                "2026-01-12T07:00:00+01:00",
                "2026-01-13T07:00:00+01:00"
            ]
        );
        // 2026-01-12 is a Monday.
        assert_eq!(
            runs("0 8 * * 1", "UTC", "2026-01-10T00:00:00Z", 2),
            ["2026-01-12T08:00:00+00:00", "2026-01-19T08:00:00+00:00"]
        );
        assert_eq!(
            runs("*/10 * * * * *", "UTC", "2026-01-10T00:00:05.5Z", 2),
            ["2026-01-10T00:00:10+00:00", "2026-01-10T00:00:20+00:00"]
        );
    }

    #[test]
    fn strictly_after_the_given_instant() {
        assert_eq!(
            runs("0 7 * * *", "UTC", "2026-01-10T07:00:00Z", 1),
            ["2026-01-11T07:00:00+00:00"]
        );
        assert_eq!(
            runs("0 7 * * *", "UTC", "2026-01-10T06:59:59.999Z", 1),
            ["2026-01-10T07:00:00+00:00"]
        );
    }

    #[test]
    fn skipped_wall_time_runs_once_at_the_end_of_the_gap() {
        // Berlin skips 02:00-03:00 on 2026-03-29.
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
        // Every 20 minutes: 02:00, 02:20, 02:40 collapse into one run at 03:00.
        assert_eq!(
            runs("*/20 * * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", 4),
            [
                "2026-03-29T01:40:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:20:00+02:00",
                "2026-03-29T03:40:00+02:00"
            ]
        );
    }

    #[test]
    fn repeated_wall_time_runs_once() {
        // Berlin repeats 02:00-03:00 on 2026-10-25 (first +02:00, then +01:00).
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        assert_eq!(
            runs("0,30 * * * *", "Europe/Berlin", "2026-10-24T23:45:00Z", 4),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:30:00+01:00"
            ]
        );
        // Asked from inside the second pass: its times already ran in the first.
        assert_eq!(
            runs("0,30 * * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 1),
            ["2026-10-25T03:00:00+01:00"]
        );
    }

    #[test]
    fn new_york_gap_and_overlap_run_once() {
        // New York skips 02:00-03:00 on 2026-03-08: the 02:30 run happens at 03:00 EDT.
        assert_eq!(
            runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        // New York repeats 01:00-02:00 on 2026-11-01: 01:30 runs once, in EDT.
        assert_eq!(
            runs("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        // Half-hourly through the repeated hour: its second pass adds no runs.
        assert_eq!(
            runs(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T04:45:00Z",
                4
            ),
            [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-01T02:00:00-05:00",
                "2026-11-01T02:30:00-05:00"
            ]
        );
    }

    #[test]
    fn nicknames_and_never() {
        assert_eq!(
            runs("@daily", "UTC", "2026-01-10T12:00:00Z", 1),
            ["2026-01-11T00:00:00+00:00"]
        );
        assert!(parse_cron("@WEEKLY").is_ok());
        let never = parse_cron("0 0 30 2 *").unwrap_err();
        assert!(never.message.contains("never fires"), "{never:?}");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            ("61 * * * *", "field 1 (minute) `61`"),
            ("0 25 * * *", "field 2 (hour) `25`"),
            ("0 0 32 * *", "field 3 (day-of-month) `32`"),
            ("0 0 * 13 *", "field 4 (month) `13`"),
            ("0 0 * * 8", "field 5 (day-of-week) `8`"),
            ("61 0 0 * * *", "field 1 (second) `61`"),
            ("0 */0 * * *", "field 2 (hour) `*/0`"),
            ("0 x * * *", "field 2 (hour) `x`: contains a character"),
            ("0 0 * * 8", "out of bounds"),
            ("* * * *", "4 fields"),
            ("0 0 1 1 * 2030 1", "7 fields"),
            ("@reboot", "not a supported nickname"),
            ("", "empty"),
        ];
        for (expr, want) in cases {
            let err = parse_cron(expr).unwrap_err();
            assert!(err.message.contains(want), "{expr}: {err:?}");
        }
    }

    #[test]
    fn unknown_zone_suggests_the_closest() {
        let err = parse_tz("Europe/Berln").unwrap_err();
        assert!(err.message.contains("Europe/Berln"));
        assert_eq!(err.help.as_deref(), Some("did you mean `Europe/Berlin`?"));
        let err = parse_tz("america/new_york").unwrap_err();
        assert_eq!(
            err.help.as_deref(),
            Some("did you mean `America/New_York`?")
        );
        assert!(parse_tz("UTC").is_ok());
    }
}
