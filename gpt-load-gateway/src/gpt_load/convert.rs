//! Reading the values gpt-load's drivers wrote, every one of them fetched as text: timestamps
//! with or without zone offsets, numeric booleans, `1e+06`-style integers, NULL JSON columns.
//! Pure functions, so every odd spelling is unit-tested.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

/// How to read a timestamp written without a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NaiveZone {
    /// The value is UTC (PostgreSQL `timestamp`, our own tables).
    Utc,
    /// The value is wall-clock time of this process's zone (`TZ`): gpt-load's documented MySQL
    /// DSN has `loc=Local`, so its driver wrote local times.
    Local,
}

/// A timestamp as UTC with microsecond precision (what our tables hold), or `None` when the
/// text is no timestamp gpt-load's drivers write.
///
/// Accepted: `2025-08-01 10:00:00.123456789+08:00` (SQLite driver), `… +0800 CST` and a trailing
/// ` m=+…` (Go's `Time.String`), `…+08` (PostgreSQL `timestamptz` as text), `T` and `Z` (RFC 3339),
/// zone-less date-times (read in `naive`), a bare date, and Unix seconds.
pub(crate) fn timestamp(text: &str, naive: NaiveZone) -> Option<NaiveDateTime> {
    let mut text = text.trim();
    // Go's monotonic clock reading.
    if let Some(at) = text.find(" m=") {
        text = text[..at].trim_end();
    }
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return DateTime::<Utc>::from_timestamp(text.parse().ok()?, 0).map(|t| micros(t.naive_utc()));
    }
    let mut owned = text.to_owned();
    if owned.len() > 10 && owned.as_bytes()[10] == b'T' {
        owned.replace_range(10..11, " ");
    }
    // Go's `-0700 MST`: the numeric offset decides, the abbreviation is dropped.
    let parts: Vec<&str> = owned.split(' ').collect();
    if parts.len() == 4 && parts[3].chars().all(|c| c.is_ascii_alphabetic()) {
        owned = parts[..3].join(" ");
    }
    if let Some(stripped) = owned.strip_suffix('Z') {
        owned = format!("{stripped}+00:00");
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
        if let Ok(at) = DateTime::<FixedOffset>::parse_from_str(&owned, format) {
            return Some(micros(at.naive_utc()));
        }
    }
    let wall = NaiveDateTime::parse_from_str(&owned, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(&owned, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
        })?;
    Some(micros(match naive {
        NaiveZone::Utc => wall,
        // An ambiguous wall-clock time (the hour a clock goes back) takes the earlier instant;
        // one that does not exist (the hour skipped) is read as UTC rather than dropped.
        NaiveZone::Local => Local
            .from_local_datetime(&wall)
            .earliest()
            .map_or(wall, |t| t.naive_utc()),
    }))
}

/// `at` truncated to microseconds (the precision of our `TIMESTAMP`/`DATETIME(6)` columns).
fn micros(at: NaiveDateTime) -> NaiveDateTime {
    let nanos = at.nanosecond();
    at.with_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}

/// A boolean as SQLite (`1`/`0`, sometimes `true`), MySQL (`1`/`0`) or PostgreSQL
/// (`true`/`false`) returns it as text; NULL and anything else is false.
pub(crate) fn boolean(text: Option<&str>) -> bool {
    matches!(
        text.map(str::trim),
        Some("1" | "1.0" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// An integer, also when written as a float (`1e+06`, `12.0`); `None` for NULL, text, a
/// fraction or a value out of range.
pub(crate) fn integer(text: Option<&str>) -> Option<i64> {
    let text = text?.trim();
    if let Ok(value) = text.parse::<i64>() {
        return Some(value);
    }
    let float: f64 = text.parse().ok()?;
    let in_range = float.is_finite() && float.fract() == 0.0 && float.abs() < 9.0e15;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "integral and within ±9e15, checked above"
    )]
    in_range.then_some(float as i64)
}

/// What a JSON column holds, or `default` when it is NULL, empty, `null` or not JSON at all
/// (`false` in the second field then, so the caller can report it). Valid JSON is kept as it
/// is, except that integral floats such as `1e+06` become integers, as gpt-load meant them.
pub(crate) fn json(text: Option<&str>, default: &str) -> (String, bool) {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty() && *t != "null") else {
        return (default.to_owned(), true);
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut value) => {
            if integral_floats_to_integers(&mut value) {
                (value.to_string(), true)
            } else {
                (text.to_owned(), true)
            }
        }
        Err(_) => (default.to_owned(), false),
    }
}

/// Whether anything changed.
fn integral_floats_to_integers(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            match number.as_f64().and_then(|f| integer(Some(&f.to_string()))) {
                Some(int) => {
                    *value = serde_json::Value::from(int);
                    true
                }
                None => false,
            }
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| integral_floats_to_integers(item) | changed),
        serde_json::Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, item| integral_floats_to_integers(item) | changed),
        _ => false,
    }
}

/// `text` (NULL: empty) cut to at most `max` bytes on a character boundary, without NUL: our
/// `VARCHAR(n)` and `TEXT` limits, which gpt-load's wider columns (`longtext` on MySQL) may
/// exceed, and which PostgreSQL and strict MySQL enforce.
pub(crate) fn clip(text: Option<String>, max: usize) -> String {
    text.map_or_else(String::new, |text| crate::models::clip_text(text, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn timestamps_in_every_spelling_become_utc_microseconds() {
        let cases = [
            (
                "2025-08-01 10:00:00.123456789+08:00",
                "2025-08-01 02:00:00.123456",
            ),
            ("2025-08-01 10:00:00+08:00", "2025-08-01 02:00:00"),
            ("2025-08-01 10:00:00.5 +0800 CST", "2025-08-01 02:00:00.5"),
            (
                "2025-08-01 10:00:00.123456789 +0800 CST m=+0.001234",
                "2025-08-01 02:00:00.123456",
            ),
            ("2025-08-01 02:00:00.123456+00", "2025-08-01 02:00:00.123456"),
            ("2025-08-01 10:00:00-05:30", "2025-08-01 15:30:00"),
            ("2025-08-01T10:00:00Z", "2025-08-01 10:00:00"),
            ("2025-08-01T10:00:00.25+02:00", "2025-08-01 08:00:00.25"),
            ("2025-08-01 10:00:00.123", "2025-08-01 10:00:00.123"),
            ("2025-08-01", "2025-08-01 00:00:00"),
            ("1754013600", "2025-08-01 02:00:00"),
        ];
        for (text, expected) in cases {
            assert_eq!(timestamp(text, NaiveZone::Utc), Some(utc(expected)), "{text}");
        }
        for bad in [
            "",
            "   ",
            "yesterday",
            "2025-13-01 00:00:00",
            "2025-08-01 25:00:00+08:00",
        ] {
            assert_eq!(timestamp(bad, NaiveZone::Utc), None, "{bad}");
        }
    }

    #[test]
    fn zone_less_local_times_follow_the_process_zone() {
        // Whatever the zone this test runs in, local and UTC agree once the offset is applied.
        let wall = utc("2025-08-01 10:00:00");
        let expected = Local.from_local_datetime(&wall).earliest().unwrap().naive_utc();
        assert_eq!(timestamp("2025-08-01 10:00:00", NaiveZone::Local), Some(expected));
        // A value with an offset ignores the process zone.
        assert_eq!(
            timestamp("2025-08-01 10:00:00+08:00", NaiveZone::Local),
            Some(utc("2025-08-01 02:00:00"))
        );
    }

    #[test]
    fn booleans_and_integers_as_drivers_write_them() {
        for yes in ["1", "true", "t", "TRUE", " 1 "] {
            assert!(boolean(Some(yes)), "{yes}");
        }
        for no in ["0", "false", "f", "", "2", "yes"] {
            assert!(!boolean(Some(no)), "{no}");
        }
        assert!(!boolean(None));
        assert_eq!(integer(Some("42")), Some(42));
        assert_eq!(integer(Some("1e+06")), Some(1_000_000));
        assert_eq!(integer(Some("1.2e+06")), Some(1_200_000));
        assert_eq!(integer(Some("7.0")), Some(7));
        assert_eq!(integer(Some("-3")), Some(-3));
        for bad in [
            None,
            Some("1.5"),
            Some("NaN"),
            Some("inf"),
            Some("many"),
            Some("1e+300"),
        ] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_columns_get_defaults_and_integers() {
        assert_eq!(json(None, "{}"), ("{}".to_owned(), true));
        assert_eq!(json(Some("null"), "[]"), ("[]".to_owned(), true));
        assert_eq!(json(Some(""), "[]"), ("[]".to_owned(), true));
        assert_eq!(json(Some("{oops"), "{}"), ("{}".to_owned(), false));
        let parsed = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
        assert_eq!(
            parsed(
                json(
                    Some(r#"{"max_retries":3,"request_timeout":1e+06,"ratio":0.5}"#),
                    "{}"
                )
                .0
            ),
            serde_json::json!({"max_retries": 3, "request_timeout": 1_000_000, "ratio": 0.5})
        );
        assert_eq!(
            parsed(json(Some(r#"[{"url":"https://a","weight":2.0}]"#), "[]").0),
            serde_json::json!([{"url": "https://a", "weight": 2}])
        );
        // Untouched JSON keeps its exact text (key order, spacing).
        let verbatim = r#"{"z": 1, "a": [true]}"#;
        assert_eq!(json(Some(verbatim), "{}").0, verbatim);
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip(Some("héllo".to_owned()), 2), "h");
        assert_eq!(clip(Some("héllo".to_owned()), 3), "hé");
        assert_eq!(clip(Some("a\0b".to_owned()), 5), "ab");
        assert_eq!(clip(Some("abc".to_owned()), 5), "abc");
        assert_eq!(clip(None, 5), "");
    }
}
