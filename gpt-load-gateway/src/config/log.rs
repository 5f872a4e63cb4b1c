//! Application logging.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `LOG_LEVEL` | `info` | `error`, `warn` (or `warning`), `info`, `debug`, `trace`, in any case; gpt-load's `fatal` and `panic` mean `error`. |
//! | `LOG_FORMAT` | `text` | `text` (human-readable) or `json` (one object per line). |
//! | `LOG_ENABLE_FILE` | `false` | Also append logs to `LOG_FILE_PATH` (its directory is created). |
//! | `LOG_FILE_PATH` | `<DATA_DIR>/logs/app.log`, i.e. `./data/logs/app.log` | The log file. |
//!
//! An unknown level or format is an error (gpt-load silently falls back to `info` / `text`).

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use tracing::level_filters::LevelFilter;

use super::env::{Vars, expected_message};

pub(crate) const LOG_LEVEL: &str = "LOG_LEVEL";
pub(crate) const LOG_FORMAT: &str = "LOG_FORMAT";
pub(crate) const LOG_ENABLE_FILE: &str = "LOG_ENABLE_FILE";
pub(crate) const LOG_FILE_PATH: &str = "LOG_FILE_PATH";

/// Logging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogConfig {
    /// `LOG_LEVEL`.
    pub(crate) level: LogLevel,
    /// `LOG_FORMAT`.
    pub(crate) format: LogFormat,
    /// `LOG_ENABLE_FILE`.
    pub(crate) enable_file: bool,
    /// `LOG_FILE_PATH`.
    pub(crate) file_path: PathBuf,
}

impl LogConfig {
    pub(crate) fn from_vars(vars: &mut Vars<'_>, data_dir: &Path) -> Self {
        Self {
            level: vars.parse_with(LOG_LEVEL, LogLevel::Info, |value| {
                value
                    .parse()
                    .map_err(|_| expected_message(value, "a log level (error, warn, info, debug, trace)"))
            }),
            format: vars.parse_with(LOG_FORMAT, LogFormat::Text, |value| {
                value
                    .parse()
                    .map_err(|_| expected_message(value, "a log format (text or json)"))
            }),
            enable_file: vars.flag(LOG_ENABLE_FILE, false),
            file_path: vars
                .get(LOG_FILE_PATH)
                .map_or_else(|| data_dir.join("logs").join("app.log"), PathBuf::from),
        }
    }
}

/// The most verbose level logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation (default).
    Info,
    /// Diagnostics, including SQL.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The lower-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// The matching `tracing` filter.
    pub(crate) fn level_filter(self) -> LevelFilter {
        match self {
            Self::Error => LevelFilter::ERROR,
            Self::Warn => LevelFilter::WARN,
            Self::Info => LevelFilter::INFO,
            Self::Debug => LevelFilter::DEBUG,
            Self::Trace => LevelFilter::TRACE,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown log level or format name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown name")]
pub(crate) struct UnknownName;

impl FromStr for LogLevel {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "panic" | "fatal" | "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" => Ok(Self::Debug),
            "trace" => Ok(Self::Trace),
            _ => Err(UnknownName),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(UnknownName),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::read_with;

    fn load(pairs: &[(&str, &str)]) -> (Result<Vec<String>, String>, LogConfig) {
        read_with(pairs, |vars| LogConfig::from_vars(vars, Path::new("./data")))
    }

    #[test]
    fn defaults() {
        let (result, config) = load(&[]);
        assert!(result.unwrap().is_empty());
        assert_eq!(
            config,
            LogConfig {
                level: LogLevel::Info,
                format: LogFormat::Text,
                enable_file: false,
                file_path: PathBuf::from("./data/logs/app.log"),
            }
        );
    }

    #[test]
    fn every_variable() {
        let (result, config) = load(&[
            (LOG_LEVEL, "DEBUG"),
            (LOG_FORMAT, "Json"),
            (LOG_ENABLE_FILE, "true"),
            (LOG_FILE_PATH, "/var/log/gpt-load.log"),
        ]);
        assert!(result.unwrap().is_empty());
        assert_eq!(config.level, LogLevel::Debug);
        assert_eq!(config.level.level_filter(), LevelFilter::DEBUG);
        assert_eq!(config.format, LogFormat::Json);
        assert!(config.enable_file);
        assert_eq!(config.file_path, PathBuf::from("/var/log/gpt-load.log"));
    }

    #[test]
    fn level_names() {
        for (name, level) in [
            ("panic", LogLevel::Error),
            ("fatal", LogLevel::Error),
            ("error", LogLevel::Error),
            ("warning", LogLevel::Warn),
            ("WARN", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("trace", LogLevel::Trace),
        ] {
            assert_eq!(name.parse::<LogLevel>(), Ok(level), "{name}");
        }
        assert_eq!(LogLevel::Warn.to_string(), "warn");
        assert!(LogLevel::Error < LogLevel::Trace);
    }

    #[test]
    fn unknown_level_and_format_are_errors() {
        let (result, config) = load(&[(LOG_LEVEL, "verbose"), (LOG_FORMAT, "xml")]);
        assert_eq!(
            result.unwrap_err(),
            "LOG_LEVEL: \"verbose\" is not a log level (error, warn, info, debug, trace)\n\
             LOG_FORMAT: \"xml\" is not a log format (text or json)"
        );
        assert_eq!((config.level, config.format), (LogLevel::Info, LogFormat::Text));
    }
}
