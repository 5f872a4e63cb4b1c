//! What a rate-limited answer says about when its key recovers.
//!
//! Providers say it in different places:
//!
//! - `Retry-After` (seconds or an HTTP date), from any provider;
//! - OpenAI: `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` as durations (`1s`,
//!   `6m0s`, `20ms`), with `x-ratelimit-remaining-*` saying which limit ran out;
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset` as
//!   RFC 3339 times, with the matching `-remaining` headers;
//! - Gemini: a `RESOURCE_EXHAUSTED` body whose details hold a `QuotaFailure` (quota ids such as
//!   `GenerateRequestsPerDayPerProjectPerModel-FreeTier`, and the model among the dimensions)
//!   and a `RetryInfo` (`retryDelay`). A per-day quota recovers at Google's daily reset,
//!   midnight in California, whatever the delay says; per-model quotas rest only that model.
//!
//! [`quota_signal`] reads them all; the [`Backoff`](crate::keys::Backoff) caps what it finds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, header};
use serde_json::Value;

/// Which quota window an answer says ran out.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuotaWindow {
    /// The answer does not say.
    #[default]
    Unknown,
    /// A per-minute (or shorter) limit.
    Minute,
    /// A per-day quota: recovers at the provider's daily reset.
    Day,
}

impl QuotaWindow {
    /// A label for logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Minute => "minute",
            Self::Day => "day",
        }
    }
}

/// When a rate-limited key recovers, as far as the answer says.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QuotaSignal {
    /// How long from now until the provider lets the key through again; `None` when the answer
    /// does not say (the backoff decides).
    pub retry_in: Option<Duration>,
    /// The window that ran out.
    pub window: QuotaWindow,
    /// The quota is per model (Gemini): other models may still be served by the key.
    pub per_model: bool,
}

impl QuotaSignal {
    /// A signal that only says how long to wait.
    pub fn after(retry_in: Duration) -> Self {
        Self {
            retry_in: Some(retry_in),
            ..Self::default()
        }
    }
}

/// Reads the provider's word on when a rate-limited key recovers from its answer's `headers` and
/// error `body`, as of `now`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use gpt_load_tower::blacklist::{QuotaWindow, quota_signal};
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-tokens", "1200".parse().unwrap());
/// headers.insert("x-ratelimit-reset-tokens", "20ms".parse().unwrap());
/// let signal = quota_signal(&headers, None, SystemTime::now());
/// assert_eq!(signal.retry_in, Some(Duration::from_secs(360)));
///
/// let gemini = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
///   {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{
///     "quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier",
///     "quotaDimensions":{"location":"global","model":"gemini-2.0-flash"}}]},
///   {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"21s"}]}}"#;
/// let signal = quota_signal(&HeaderMap::new(), Some(gemini), SystemTime::now());
/// assert_eq!((signal.window, signal.per_model), (QuotaWindow::Day, true));
/// assert!(signal.retry_in.unwrap() > Duration::from_secs(21), "until the daily reset");
/// ```
pub fn quota_signal(headers: &HeaderMap, body: Option<&str>, now: SystemTime) -> QuotaSignal {
    let mut signal = body.map(|b| gemini_signal(b, now)).unwrap_or_default();
    if signal.window == QuotaWindow::Day {
        return signal;
    }
    let from_headers = retry_after_at(headers, now)
        .or_else(|| openai_reset(headers))
        .or_else(|| anthropic_reset(headers, now));
    if let Some(retry_in) = from_headers {
        signal.retry_in = Some(retry_in);
    }
    signal
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// The `Retry-After` header as a duration from now.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Of several limits' reset times, the one that matters: the latest among the limits that ran
/// out, else (none says so) the earliest.
fn pick_reset(resets: impl Iterator<Item = (Duration, bool)>) -> Option<Duration> {
    let mut exhausted: Option<Duration> = None;
    let mut earliest: Option<Duration> = None;
    for (reset, ran_out) in resets {
        if ran_out {
            exhausted = Some(exhausted.map_or(reset, |e| e.max(reset)));
        }
        earliest = Some(earliest.map_or(reset, |e| e.min(reset)));
    }
    exhausted.or(earliest)
}

fn openai_reset(headers: &HeaderMap) -> Option<Duration> {
    pick_reset(["requests", "tokens"].into_iter().filter_map(|limit| {
        let reset = header_str(headers, &format!("x-ratelimit-reset-{limit}")).and_then(parse_duration)?;
        let remaining = header_str(headers, &format!("x-ratelimit-remaining-{limit}"));
        Some((reset, remaining == Some("0")))
    }))
}

fn anthropic_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let limits = ["requests", "tokens", "input-tokens", "output-tokens"];
    pick_reset(limits.into_iter().filter_map(|limit| {
        let at =
            header_str(headers, &format!("anthropic-ratelimit-{limit}-reset")).and_then(parse_rfc3339)?;
        let remaining = header_str(headers, &format!("anthropic-ratelimit-{limit}-remaining"));
        Some((
            at.duration_since(now).unwrap_or(Duration::ZERO),
            remaining == Some("0"),
        ))
    }))
}

fn gemini_signal(body: &str, now: SystemTime) -> QuotaSignal {
    let mut signal = QuotaSignal::default();
    // Only Google's error shape carries these details; anything else is left to the headers.
    if !body.contains("google.rpc") {
        return signal;
    }
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return signal;
    };
    let details = value
        .pointer("/error/details")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for detail in details {
        let kind = detail.get("@type").and_then(Value::as_str).unwrap_or_default();
        if kind.ends_with("google.rpc.RetryInfo") {
            if let Some(delay) = detail
                .get("retryDelay")
                .and_then(Value::as_str)
                .and_then(parse_duration)
            {
                signal.retry_in = Some(delay);
            }
        } else if kind.ends_with("google.rpc.QuotaFailure") {
            let violations = detail.get("violations").and_then(Value::as_array);
            for violation in violations.into_iter().flatten() {
                let id = violation
                    .get("quotaId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if id.contains("PerDay") {
                    signal.window = QuotaWindow::Day;
                } else if signal.window == QuotaWindow::Unknown && id.contains("PerMinute") {
                    signal.window = QuotaWindow::Minute;
                }
                if id.contains("PerModel") || violation.pointer("/quotaDimensions/model").is_some() {
                    signal.per_model = true;
                }
            }
        }
    }
    if signal.window == QuotaWindow::Day {
        signal.retry_in = Some(until_pacific_midnight(now));
    }
    signal
}

/// The model whose quota ran out, from a Gemini `QuotaFailure` (its `model` dimension).
///
/// ```
/// use gpt_load_tower::blacklist::exhausted_model;
///
/// let body = r#"{"error":{"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure",
///   "violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"model":"gemini-2.0-flash"}}]}]}}"#;
/// assert_eq!(exhausted_model(body).as_deref(), Some("gemini-2.0-flash"));
/// assert_eq!(exhausted_model("slow down"), None);
/// ```
pub fn exhausted_model(body: &str) -> Option<String> {
    if !body.contains("google.rpc") {
        return None;
    }
    let value = serde_json::from_str::<Value>(body).ok()?;
    value
        .pointer("/error/details")?
        .as_array()?
        .iter()
        .filter_map(|detail| detail.get("violations")?.as_array())
        .flatten()
        .find_map(|violation| violation.pointer("/quotaDimensions/model")?.as_str())
        .map(str::to_owned)
}

/// A Go- or protobuf-style duration: `1s`, `6m0s`, `1h2m3.5s`, `20ms`, `0.5s`.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86_400.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += Duration::try_from_secs_f64(seconds).ok()?;
    }
    Some(total)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year of a day count from 1970-01-01.
fn year_of_days(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    year_of_era + era * 400 + i64::from(month_index >= 10)
}

/// An RFC 3339 time such as `2026-12-04T20:45:00Z` or `2026-12-04T12:45:00.5-08:00`.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[3..4], ":") => {
            let sign = match &rest[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (i64::from(rest[1..3].parse::<u32>().ok()?) * 3600
                + i64::from(rest[4..6].parse::<u32>().ok()?) * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(i64::from(year), month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The weekday of a day count from 1970-01-01 (a Thursday), 0 = Sunday.
fn weekday(days: i64) -> i64 {
    (days + 4).rem_euclid(7)
}

/// Seconds from 1970 of the `nth` Sunday of `month` in `year`, at `hour_utc`.
fn nth_sunday(year: i64, month: u32, nth: i64, hour_utc: i64) -> i64 {
    let first = days_from_civil(year, month, 1);
    let first_sunday = first + (7 - weekday(first)) % 7;
    (first_sunday + 7 * (nth - 1)) * 86_400 + hour_utc * 3600
}

/// Pacific time's offset from UTC at `secs` from 1970: UTC−7 from the second Sunday of March
/// to the first Sunday of November (switching at 2:00 local), else UTC−8.
fn pacific_offset(secs: i64) -> i64 {
    let year = year_of_days(secs.div_euclid(86_400));
    let summer = nth_sunday(year, 3, 2, 10) <= secs && secs < nth_sunday(year, 11, 1, 9);
    if summer { -7 * 3600 } else { -8 * 3600 }
}

/// How long until midnight in California (Google's daily quota reset).
fn until_pacific_midnight(now: SystemTime) -> Duration {
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let offset = pacific_offset(now_secs);
    let next_local_midnight = ((now_secs + offset).div_euclid(86_400) + 1) * 86_400;
    // The offset may change between now and midnight (on the night of a switch).
    let at_midnight = pacific_offset(next_local_midnight - offset);
    Duration::from_secs((next_local_midnight - at_midnight - now_secs) as u64)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn at(text: &str) -> SystemTime {
        parse_rfc3339(text).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn durations_in_go_and_protobuf_form() {
        for (text, millis) in [
            ("1s", 1000),
            ("6m0s", 360_000),
            ("20ms", 20),
            ("1h2m3.5s", 3_723_500),
            ("0.5s", 500),
            ("3.000001s", 3000),
            ("2d", 172_800_000),
        ] {
            assert_eq!(
                parse_duration(text).map(|d| d.as_millis()),
                Some(millis),
                "{text}"
            );
        }
        for bad in ["", "s", "5", "5x", "-1s", "1s2"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(
            at("1970-01-02T00:00:00Z").duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(at("2026-12-04T12:45:00-08:00"), at("2026-12-04T20:45:00Z"));
        assert_eq!(
            at("2026-12-04T20:45:00.25Z")
                .duration_since(at("2026-12-04T20:45:00Z"))
                .unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            at("2024-03-01T00:00:00Z")
                .duration_since(at("2024-02-28T00:00:00Z"))
                .unwrap(),
            Duration::from_secs(2 * 86_400),
            "a leap year"
        );
        for bad in [
            "2026-12-04",
            "2026-13-04T00:00:00Z",
            "2026-12-04T20:45:00",
            "yesterday at noon!!",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn pacific_midnight_follows_daylight_saving() {
        // Winter: UTC−8, midnight is 08:00 UTC.
        let winter = at("2026-12-04T20:45:00Z");
        assert_eq!(
            until_pacific_midnight(winter),
            Duration::from_secs(11 * 3600 + 15 * 60)
        );
        // Summer: UTC−7, midnight is 07:00 UTC.
        let summer = at("2026-07-01T06:59:00Z");
        assert_eq!(until_pacific_midnight(summer), Duration::from_secs(60));
        // Just after midnight: a whole day to go.
        assert_eq!(
            until_pacific_midnight(at("2026-07-01T07:00:00Z")),
            Duration::from_secs(86_400)
        );
        // 2026's switches: 8 March and 1 November; either side of 2:00 local, the next midnight
        // is already in the new offset.
        assert_eq!(
            until_pacific_midnight(at("2026-03-08T09:59:00Z")),
            Duration::from_secs(21 * 3600 + 60)
        );
        assert_eq!(
            until_pacific_midnight(at("2026-03-08T10:00:00Z")),
            Duration::from_secs(21 * 3600)
        );
        assert_eq!(
            until_pacific_midnight(at("2026-11-01T08:59:00Z")),
            Duration::from_secs(23 * 3600 + 60)
        );
        assert_eq!(
            until_pacific_midnight(at("2026-11-01T09:00:00Z")),
            Duration::from_secs(23 * 3600)
        );
    }

    #[test]
    fn retry_after_wins_over_reset_headers() {
        let now = at("2026-12-04T20:45:00Z");
        let h = headers(&[("retry-after", "7"), ("x-ratelimit-reset-requests", "6m0s")]);
        assert_eq!(
            quota_signal(&h, None, now),
            QuotaSignal::after(Duration::from_secs(7))
        );
        let h = headers(&[("retry-after", "Fri, 04 Dec 2026 20:46:00 GMT")]);
        assert_eq!(
            quota_signal(&h, None, now).retry_in,
            Some(Duration::from_secs(60))
        );
        assert_eq!(quota_signal(&HeaderMap::new(), None, now), QuotaSignal::default());
    }

    #[test]
    fn openai_resets_follow_the_limit_that_ran_out() {
        let now = SystemTime::now();
        let tokens_out = headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "1m30s"),
        ]);
        assert_eq!(
            quota_signal(&tokens_out, None, now).retry_in,
            Some(Duration::from_secs(90))
        );
        let unclear = headers(&[
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-reset-tokens", "1m"),
        ]);
        assert_eq!(
            quota_signal(&unclear, None, now).retry_in,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn anthropic_resets_are_times() {
        let now = at("2026-12-04T20:45:00Z");
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-12-04T20:45:40Z"),
            ("anthropic-ratelimit-tokens-remaining", "5000"),
            ("anthropic-ratelimit-tokens-reset", "2026-12-04T20:45:02Z"),
            ("anthropic-ratelimit-input-tokens-reset", "2026-12-04T20:44:00Z"),
        ]);
        assert_eq!(
            quota_signal(&h, None, now).retry_in,
            Some(Duration::from_secs(40))
        );
    }

    fn gemini(quota_id: &str, model: Option<&str>, delay: &str) -> String {
        let dimensions = model.map_or(String::new(), |m| {
            format!(r#","quotaDimensions":{{"location":"global","model":"{m}"}}"#)
        });
        format!(
            r#"{{"error":{{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[
              {{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"{quota_id}"{dimensions},"quotaValue":"50"}}]}},
              {{"@type":"type.googleapis.com/google.rpc.Help","links":[]}},
              {{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}"#
        )
    }

    #[test]
    fn gemini_per_day_quotas_rest_until_the_daily_reset() {
        let now = at("2026-12-04T20:45:00Z");
        let body = gemini(
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            Some("gemini-2.0-flash"),
            "21s",
        );
        let signal = quota_signal(&headers(&[("retry-after", "21")]), Some(&body), now);
        assert_eq!(
            signal,
            QuotaSignal {
                retry_in: Some(Duration::from_secs(11 * 3600 + 15 * 60)),
                window: QuotaWindow::Day,
                per_model: true,
            }
        );
    }

    #[test]
    fn gemini_per_minute_quotas_follow_the_retry_delay() {
        let now = SystemTime::now();
        let body = gemini(
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            Some("gemini-2.0-flash"),
            "43.5s",
        );
        let signal = quota_signal(&HeaderMap::new(), Some(&body), now);
        assert_eq!(
            signal,
            QuotaSignal {
                retry_in: Some(Duration::from_millis(43_500)),
                window: QuotaWindow::Minute,
                per_model: true,
            }
        );
        let project_wide = gemini("GenerateRequestsPerMinutePerProject", None, "5s");
        assert!(!quota_signal(&HeaderMap::new(), Some(&project_wide), now).per_model);
        // Not Google's shape, or not JSON: nothing from the body.
        for other in [
            "Resource has been exhausted",
            r#"{"error":{"message":"slow down"}}"#,
            "{google.rpc",
        ] {
            assert_eq!(
                quota_signal(&HeaderMap::new(), Some(other), now),
                QuotaSignal::default(),
                "{other}"
            );
        }
    }
}
