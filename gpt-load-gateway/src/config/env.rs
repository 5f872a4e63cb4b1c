//! Typed reading of environment variables.
//!
//! Variables come from an [`EnvSource`]: the process environment in production
//! ([`ProcessEnv`]), a map or a closure in tests, so tests never touch the real environment.
//! [`Vars`] reads them through typed helpers and collects every problem and warning, so that all
//! of them can be reported together.
//!
//! Rules shared by every variable (gpt-load's, except that bad values are errors here):
//!
//! - surrounding whitespace is trimmed, and an empty value counts as unset (the default applies);
//! - booleans: `true`, `1`, `yes`, `on` / `false`, `0`, `no`, `off`, in any case;
//! - integers: unsigned decimal;
//! - lists: comma-separated, entries trimmed, empty entries dropped; an empty list is unset.

use std::{collections::HashMap, hash::BuildHasher, num::NonZeroUsize, str::FromStr, time::Duration};

use super::error::{ConfigError, InvalidVar, quote};

/// Where variables are read from.
pub(crate) trait EnvSource {
    /// The raw value of `name`, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment. Values that are not valid UTF-8 are read lossily, so they fail the
/// variable's own validation instead of being taken as unset.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
    }
}

impl<S: BuildHasher> EnvSource for HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<F> EnvSource for F
where
    F: Fn(&str) -> Option<String>,
{
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Reads variables through typed helpers, collecting problems and warnings.
pub(crate) struct Vars<'a> {
    source: &'a dyn EnvSource,
    problems: Vec<InvalidVar>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vars")
            .field("problems", &self.problems)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl<'a> Vars<'a> {
    pub(crate) fn new(source: &'a dyn EnvSource) -> Self {
        Self {
            source,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The trimmed value of `name`; `None` when unset or blank.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        let value = self.source.var(name)?;
        let trimmed = value.trim();
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == value.len() {
            Some(value)
        } else {
            Some(trimmed.to_owned())
        }
    }

    /// The value of `name`, or `default`.
    pub(crate) fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    /// Parses `name` with `parse` (which returns the message after `NAME: ` on failure), or
    /// returns `default` when unset. On failure the problem is recorded and `default` returned,
    /// so that loading goes on and reports every problem.
    pub(crate) fn parse_with<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let Some(value) = self.get(name) else {
            return default;
        };
        match parse(&value) {
            Ok(parsed) => parsed,
            Err(message) => {
                self.invalid(name, message);
                default
            }
        }
    }

    /// A boolean (`true/1/yes/on`, `false/0/no/off`, any case).
    pub(crate) fn flag(&mut self, name: &'static str, default: bool) -> bool {
        self.parse_with(name, default, |value| {
            parse_bool(value)
                .ok_or_else(|| expected_message(value, "a boolean (true/false, 1/0, yes/no, on/off)"))
        })
    }

    /// An unsigned integer described as `expected` in messages ("a whole number of seconds").
    pub(crate) fn number<T: FromStr>(&mut self, name: &'static str, default: T, expected: &str) -> T {
        self.parse_with(name, default, |value| {
            parse_unsigned(value).ok_or_else(|| expected_message(value, expected))
        })
    }

    /// A duration given in whole seconds.
    pub(crate) fn seconds(&mut self, name: &'static str, default_secs: u64) -> Duration {
        Duration::from_secs(self.number(name, default_secs, "a whole number of seconds"))
    }

    /// A duration in whole seconds, at least one.
    pub(crate) fn positive_seconds(&mut self, name: &'static str, default_secs: u64) -> Duration {
        self.parse_with(name, Duration::from_secs(default_secs), |value| {
            parse_unsigned::<u64>(value)
                .filter(|secs| *secs > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| expected_message(value, "a whole number of seconds, at least 1"))
        })
    }

    /// A duration in whole seconds where `0` means "no limit" (`None`).
    pub(crate) fn seconds_or_unlimited(&mut self, name: &'static str, default_secs: u64) -> Option<Duration> {
        let secs = self.number(name, default_secs, "a whole number of seconds (0 = no limit)");
        (secs > 0).then(|| Duration::from_secs(secs))
    }

    /// A count of at least one.
    pub(crate) fn count(&mut self, name: &'static str, default: NonZeroUsize) -> NonZeroUsize {
        self.parse_with(name, default, |value| {
            parse_unsigned::<usize>(value)
                .and_then(NonZeroUsize::new)
                .ok_or_else(|| expected_message(value, "a whole number of at least 1"))
        })
    }

    /// A comma-separated list; `default` when unset or when it holds no entries.
    pub(crate) fn list(&self, name: &str, default: &[&str]) -> Vec<String> {
        let entries = self.get(name).map(|value| split_list(&value)).unwrap_or_default();
        if entries.is_empty() {
            default.iter().map(|entry| (*entry).to_owned()).collect()
        } else {
            entries
        }
    }

    /// Records a problem with `name`; `message` is the text after `NAME: `.
    pub(crate) fn invalid(&mut self, name: &'static str, message: impl Into<String>) {
        self.problems.push(InvalidVar::new(name, message));
    }

    /// Records a warning line for the caller to log.
    pub(crate) fn warn(&mut self, line: impl Into<String>) {
        self.warnings.push(line.into());
    }

    /// The warnings, or every problem found.
    pub(crate) fn finish(self) -> Result<Vec<String>, ConfigError> {
        if self.problems.is_empty() {
            Ok(self.warnings)
        } else {
            Err(ConfigError::Invalid(self.problems))
        }
    }
}

/// `"value" is not <expected>`.
pub(crate) fn expected_message(value: &str, expected: &str) -> String {
    format!("{} is not {expected}", quote(value))
}

/// gpt-load's boolean forms, case-insensitive.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// An unsigned decimal integer: digits only (no sign, no spaces inside).
fn parse_unsigned<T: FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Comma-separated entries, trimmed, empty ones dropped.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads one part of the configuration from `pairs` with `read`: the warnings (or the problems,
/// as one message) and what `read` built.
#[cfg(test)]
pub(crate) fn read_with<T>(
    pairs: &[(&str, &str)],
    read: impl FnOnce(&mut Vars<'_>) -> T,
) -> (Result<Vec<String>, String>, T) {
    let env = map(pairs);
    let mut vars = Vars::new(&env);
    let value = read(&mut vars);
    (vars.finish().map_err(|e| e.to_string()), value)
}

#[cfg(test)]
pub(crate) fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_gpt_load_forms_in_any_case() {
        for yes in ["true", "TRUE", "1", "yes", "Yes", "on", "ON"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["false", "False", "0", "no", "NO", "off", "Off"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        for bad in ["", "2", "y", "enabled", "truee"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn blank_values_are_unset_and_values_are_trimmed() {
        let env = map(&[("A", "   "), ("B", "  on "), ("C", " 7 ")]);
        let mut vars = Vars::new(&env);
        assert_eq!(vars.get("A"), None);
        assert!(!vars.flag("A", false));
        assert!(vars.flag("B", false));
        assert_eq!(vars.number::<u32>("C", 1, "n"), 7);
        assert!(vars.finish().unwrap().is_empty());
    }

    #[test]
    fn bad_values_are_collected_and_defaults_returned() {
        let env = map(&[("F", "maybe"), ("N", "-3"), ("S", "10s"), ("Z", "0")]);
        let mut vars = Vars::new(&env);
        assert!(vars.flag("F", true));
        assert_eq!(vars.number::<u32>("N", 5, "a whole number"), 5);
        assert_eq!(vars.seconds("S", 9), Duration::from_secs(9));
        assert_eq!(vars.count("Z", NonZeroUsize::MIN), NonZeroUsize::MIN);
        let text = vars.finish().unwrap_err().to_string();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "F: \"maybe\" is not a boolean (true/false, 1/0, yes/no, on/off)",
                "N: \"-3\" is not a whole number",
                "S: \"10s\" is not a whole number of seconds",
                "Z: \"0\" is not a whole number of at least 1",
            ]
        );
    }

    #[test]
    fn zero_seconds_means_no_limit() {
        let env = map(&[("T", "0")]);
        let mut vars = Vars::new(&env);
        assert_eq!(vars.seconds_or_unlimited("T", 5), None);
        assert_eq!(vars.seconds_or_unlimited("U", 5), Some(Duration::from_secs(5)));
    }

    #[test]
    fn lists_are_split_trimmed_and_default_when_empty() {
        let env = map(&[("L", " a, b ,,c ,"), ("E", " , ,")]);
        let vars = Vars::new(&env);
        assert_eq!(vars.list("L", &["x"]), ["a", "b", "c"]);
        assert_eq!(vars.list("E", &["x"]), ["x"]);
        assert_eq!(vars.list("MISSING", &["x", "y"]), ["x", "y"]);
    }

    #[test]
    fn closures_are_sources() {
        let source = |name: &str| (name == "PORT").then(|| "8080".to_owned());
        let vars = Vars::new(&source);
        assert_eq!(vars.get("PORT").as_deref(), Some("8080"));
        assert_eq!(vars.get("HOST"), None);
    }

    #[test]
    fn overflowing_numbers_are_errors() {
        let env = map(&[("N", "99999999999999999999999")]);
        let mut vars = Vars::new(&env);
        assert_eq!(vars.number::<u64>("N", 1, "a whole number"), 1);
        assert!(vars.finish().is_err());
    }
}
