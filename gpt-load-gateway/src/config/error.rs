//! The error returned when the configuration cannot be used.
//!
//! Every problem is one line that names the variable, shows the offending value (masked for
//! secrets, never shown at all for `AUTH_KEY` and `ENCRYPTION_KEY`) and says what is expected.
//! All problems found in one pass are reported together.

use std::fmt;

/// Longest value (in characters) quoted in a message; longer values are cut.
const MAX_SHOWN_CHARS: usize = 80;

/// One unusable variable: its name and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InvalidVar {
    var: &'static str,
    message: String,
}

impl InvalidVar {
    /// A problem with `var`; `message` is the text after `VAR: ` and must not contain a secret.
    pub(crate) fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }

    /// `VAR: "value" is not <expected>`. `shown` must already be masked when it can hold a
    /// secret.
    #[cfg(test)]
    pub(crate) fn value(var: &'static str, shown: &str, expected: &str) -> Self {
        Self::new(var, format!("{} is not {expected}", quote(shown)))
    }

    /// The variable's name.
    #[cfg(test)]
    pub(crate) fn var(&self) -> &'static str {
        self.var
    }

    /// What is wrong, without the variable's name.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InvalidVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The `.env` file exists but cannot be read or parsed (one line).
    #[error("{0}")]
    DotEnv(String),
    /// Variables hold values that cannot be used: one line per problem.
    #[error("{}", Lines(.0))]
    Invalid(Vec<InvalidVar>),
}

impl ConfigError {
    /// The variables in error (empty for a `.env` problem).
    #[cfg(test)]
    pub(crate) fn problems(&self) -> &[InvalidVar] {
        match self {
            Self::DotEnv(_) => &[],
            Self::Invalid(problems) => problems,
        }
    }
}

/// Displays problems one per line.
struct Lines<'a>(&'a [InvalidVar]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A value as shown in a message: quoted, control characters escaped (so the message stays on
/// one line) and cut after [`MAX_SHOWN_CHARS`] characters.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_problem() {
        let err = ConfigError::Invalid(vec![
            InvalidVar::value("PORT", "70000", "a port (1-65535)"),
            InvalidVar::new("ALLOWED_ORIGINS", "must not be empty when ENABLE_CORS is on"),
        ]);
        assert_eq!(
            err.to_string(),
            "PORT: \"70000\" is not a port (1-65535)\n\
             ALLOWED_ORIGINS: must not be empty when ENABLE_CORS is on"
        );
        assert_eq!(err.problems().len(), 2);
        assert_eq!(err.problems()[0].var(), "PORT");
        assert_eq!(
            err.problems()[1].message(),
            "must not be empty when ENABLE_CORS is on"
        );
    }

    #[test]
    fn quoted_values_stay_on_one_line_and_short() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(200);
        let shown = quote(&long);
        assert!(shown.ends_with('…'));
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), MAX_SHOWN_CHARS);
        assert_eq!(quote("ключ"), "\"ключ\"");
    }
}
