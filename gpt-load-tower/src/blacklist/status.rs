use std::{fmt, str::FromStr};

use http::StatusCode;

/// The set of upstream status codes that count as a failed attempt (retry on another key, count
/// toward the blacklist), in gpt-load's grammar.
///
/// The spec is a comma- (or newline-) separated list of codes and inclusive ranges, each code
/// 100–999, whitespace allowed around tokens and around `-`: `400-403, 405-999` (the default:
/// every error except `404`). The empty spec matches nothing.
///
/// ```
/// use gpt_load_tower::blacklist::StatusMatcher;
///
/// let m: StatusMatcher = "400-403,405-999".parse().unwrap();
/// assert!(m.matches(500) && m.matches(429) && !m.matches(404) && !m.matches(200));
/// assert!("500-400".parse::<StatusMatcher>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    /// One bit per code 0..1024.
    bits: [u64; 16],
    ranges: Vec<(u16, u16)>,
}

/// A failover status spec that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSpecError {
    token: String,
    reason: &'static str,
}

impl fmt::Display for StatusSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid failover status codes: `{}` {}",
            self.token, self.reason
        )
    }
}

impl std::error::Error for StatusSpecError {}

impl StatusMatcher {
    /// gpt-load's default, `400-403,405-999`.
    pub fn gpt_load_default() -> Self {
        "400-403,405-999".parse().expect("the default spec is valid")
    }

    /// A matcher that matches nothing.
    pub fn none() -> Self {
        Self {
            bits: [0; 16],
            ranges: Vec::new(),
        }
    }

    /// Whether `status` is a failover status.
    #[inline]
    pub fn matches(&self, code: u16) -> bool {
        code < 1024 && self.bits[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    /// Whether `status` is a failover status.
    pub fn matches_status(&self, status: StatusCode) -> bool {
        self.matches(status.as_u16())
    }

    /// The merged ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }
}

impl Default for StatusMatcher {
    fn default() -> Self {
        Self::gpt_load_default()
    }
}

fn code(token: &str, whole: &str) -> Result<u16, StatusSpecError> {
    let err = |reason| StatusSpecError {
        token: whole.to_owned(),
        reason,
    };
    let value: u16 = token
        .trim()
        .parse()
        .map_err(|_| err("is not a status code or range"))?;
    if (100..=999).contains(&value) {
        Ok(value)
    } else {
        Err(err("is outside 100-999"))
    }
}

impl FromStr for StatusMatcher {
    type Err = StatusSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut ranges = Vec::new();
        for token in spec
            .split([',', '\n', '\r'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let range = match token.split('-').collect::<Vec<_>>()[..] {
                [single] => {
                    let c = code(single, token)?;
                    (c, c)
                }
                [start, end] => {
                    let (start, end) = (code(start, token)?, code(end, token)?);
                    if start > end {
                        return Err(StatusSpecError {
                            token: token.to_owned(),
                            reason: "starts after it ends",
                        });
                    }
                    (start, end)
                }
                _ => {
                    return Err(StatusSpecError {
                        token: token.to_owned(),
                        reason: "has more than one `-`",
                    });
                }
            };
            ranges.push(range);
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let mut bits = [0u64; 16];
        for &(start, end) in &merged {
            for c in start..=end {
                bits[usize::from(c / 64)] |= 1 << (c % 64);
            }
        }
        Ok(Self { bits, ranges: merged })
    }
}

impl fmt::Display for StatusMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (start, end)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if start == end {
                write!(f, "{start}")?
            } else {
                write!(f, "{start}-{end}")?
            }
        }
        Ok(())
    }
}

impl fmt::Debug for StatusMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusMatcher({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<StatusMatcher, StatusSpecError> {
        spec.parse()
    }

    #[test]
    fn default_spec() {
        let m = StatusMatcher::default();
        for code in [400, 401, 403, 405, 429, 500, 503, 999] {
            assert!(m.matches(code), "{code}");
        }
        for code in [100, 200, 204, 301, 399, 404] {
            assert!(!m.matches(code), "{code}");
        }
        assert!(!m.matches(1000));
        assert_eq!(m.to_string(), "400-403,405-999");
    }

    #[test]
    fn whitespace_newlines_singles_and_merging() {
        let m = parse(" 500 - 502 ,\n 429,503-504\r\n, 400-400 ").unwrap();
        assert_eq!(m.ranges(), [(400, 400), (429, 429), (500, 504)]);
        assert!(m.matches(StatusCode::GATEWAY_TIMEOUT.as_u16()));
        let overlapping = parse("500-510,505-520,521").unwrap();
        assert_eq!(overlapping.ranges(), [(500, 521)]);
    }

    #[test]
    fn empty_matches_nothing() {
        for spec in ["", "  ", ",,", "\n"] {
            let m = parse(spec).unwrap();
            assert!(m.ranges().is_empty());
            assert!(!m.matches(500));
        }
        assert_eq!(StatusMatcher::none(), parse("").unwrap());
    }

    #[test]
    fn errors_name_the_token() {
        for (spec, reason) in [
            ("abc", "is not a status code"),
            ("500-", "is not a status code"),
            ("-500", "is not a status code"),
            ("99", "outside 100-999"),
            ("1000", "outside 100-999"),
            ("500-400", "starts after it ends"),
            ("400-450-500", "more than one"),
            ("4 00", "is not a status code"),
            ("400;500", "is not a status code"),
        ] {
            let err = parse(spec).unwrap_err();
            assert!(err.to_string().contains(reason), "{spec}: {err}");
            assert!(err.to_string().contains(spec.trim()), "{spec}: {err}");
        }
    }
}
