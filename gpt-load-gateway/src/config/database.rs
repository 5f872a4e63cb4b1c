//! The database (`DATABASE_DSN`).
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `DATABASE_DSN` | `<DATA_DIR>/gpt-load.db`, i.e. `./data/gpt-load.db` | Which database to use, detected from the value's form (below). |
//! | `ADOPT_GPT_LOAD` | `false` | `true` → a gpt-load database on PostgreSQL or MySQL is converted in place at start (as `--adopt`); see docs/MIGRATING.md. SQLite files are always adopted, after a backup copy. |
//!
//! Detection, first match wins:
//!
//! 1. empty or unset → SQLite at the default path;
//! 2. `postgres://…` or `postgresql://…` → PostgreSQL, the URL kept as it is;
//! 3. `mysql://…` (or `mariadb://…`, rewritten to `mysql://`) → MySQL / MariaDB;
//! 4. gpt-load's Go form `user:password@tcp(host:port)/dbname?params` → MySQL, converted to a
//!    `mysql://` URL (see [`go_mysql`](super::go_mysql));
//! 5. `sqlite://relative/path`, `sqlite:///absolute/path`, `sqlite:path`, `file:path` or a plain
//!    path → a SQLite file. A `?…` query (gpt-load appends `?_busy_timeout=5000`) is stripped:
//!    busy timeout, WAL and foreign keys are always set by the gateway.
//!
//! Errors (gpt-load would have taken any of these as a SQLite file name): another `scheme://`,
//! a value containing `@` that matches none of the forms above, a PostgreSQL `key=value`
//! string, an empty SQLite path. Messages and `Debug`/`Display` mask the password.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use super::{
    env::Vars,
    error::InvalidVar,
    go_mysql,
    url::{mask_credentials, not_a, scheme_of},
};

pub(crate) const DATABASE_DSN: &str = "DATABASE_DSN";
pub(crate) const ADOPT_GPT_LOAD: &str = "ADOPT_GPT_LOAD";

/// File name of the default SQLite database inside `DATA_DIR`.
pub(crate) const DEFAULT_SQLITE_FILE: &str = "gpt-load.db";

/// What the accepted forms are, for error messages.
const EXPECTED: &str = "a database DSN (a SQLite file path, sqlite:path, postgres://…, mysql://… \
                        or user:password@tcp(host:port)/dbname)";

/// SQLite query parameters that the gateway sets itself, ignored without a warning.
const SQLITE_BUILT_IN_PARAMS: &[&str] = &[
    "_busy_timeout",
    "_journal_mode",
    "_journal",
    "_foreign_keys",
    "_fk",
];

/// Database settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DatabaseConfig {
    /// The database to connect to.
    pub(crate) dsn: DatabaseDsn,
    /// `ADOPT_GPT_LOAD`: convert a gpt-load database on a server in place at start.
    pub(crate) adopt_gpt_load: bool,
}

impl DatabaseConfig {
    pub(crate) fn from_vars(vars: &mut Vars<'_>, data_dir: &Path) -> Self {
        let default = DatabaseDsn::Sqlite {
            path: data_dir.join(DEFAULT_SQLITE_FILE),
        };
        let adopt_gpt_load = vars.flag(ADOPT_GPT_LOAD, false);
        let Some(raw) = vars.get(DATABASE_DSN) else {
            return Self {
                dsn: default,
                adopt_gpt_load,
            };
        };
        match parse(&raw) {
            Ok((dsn, ignored)) => {
                if !ignored.is_empty() {
                    vars.warn(format!(
                        "{DATABASE_DSN}: ignoring parameters the gateway does not use: {}",
                        ignored.join(", ")
                    ));
                }
                Self { dsn, adopt_gpt_load }
            }
            Err(message) => {
                vars.invalid(DATABASE_DSN, message);
                Self {
                    dsn: default,
                    adopt_gpt_load,
                }
            }
        }
    }
}

/// Which database, and where. `Debug` and `Display` mask passwords.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum DatabaseDsn {
    /// A SQLite file (created with its parent directory when missing).
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// PostgreSQL.
    Postgres {
        /// A `postgres://` or `postgresql://` URL, with its credentials.
        url: String,
    },
    /// MySQL or MariaDB.
    Mysql {
        /// A `mysql://` URL, with its credentials.
        url: String,
    },
}

impl DatabaseDsn {
    /// `"sqlite"`, `"postgres"` or `"mysql"`.
    pub(crate) fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
            Self::Mysql { .. } => "mysql",
        }
    }

    /// Why a build without this DSN's backend (its cargo feature off) cannot open it.
    pub(crate) fn not_built_in(&self) -> String {
        format!(
            "this build does not include the {0} backend (cargo feature `{0}`)",
            self.backend_name()
        )
    }

    /// The DSN with its password masked, safe for logs.
    #[cfg(test)]
    pub(crate) fn masked(&self) -> String {
        self.to_string()
    }
}

impl FromStr for DatabaseDsn {
    type Err = InvalidVar;

    /// Parses a non-empty `DATABASE_DSN` value (ignored parameters are dropped silently).
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        parse(raw.trim())
            .map(|(dsn, _)| dsn)
            .map_err(|message| InvalidVar::new(DATABASE_DSN, message))
    }
}

impl fmt::Display for DatabaseDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "sqlite:{}", path.display()),
            Self::Postgres { url } | Self::Mysql { url } => f.write_str(&mask_credentials(url)),
        }
    }
}

impl fmt::Debug for DatabaseDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Self::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &mask_credentials(url))
                .finish(),
            Self::Mysql { url } => f
                .debug_struct("Mysql")
                .field("url", &mask_credentials(url))
                .finish(),
        }
    }
}

/// Parses a non-empty, trimmed DSN into the database and the names of ignored parameters. The
/// error is the message after `DATABASE_DSN: ` and never contains a password.
fn parse(raw: &str) -> Result<(DatabaseDsn, Vec<String>), String> {
    if let Some(scheme) = scheme_of(raw) {
        let rest = &raw[scheme.len() + 3..];
        return match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" if rest.is_empty() => Err(not_a(
                raw,
                "a PostgreSQL URL (postgres://user:password@host:port/dbname)",
            )),
            "postgres" | "postgresql" => Ok((DatabaseDsn::Postgres { url: raw.to_owned() }, Vec::new())),
            "mysql" | "mariadb" => {
                mysql_url(rest).map_err(|why| not_a(raw, format_args!("a MySQL DSN ({why})")))
            }
            "sqlite" | "file" => sqlite(rest).map_err(|why| not_a(raw, format_args!("a SQLite DSN ({why})"))),
            _ => Err(not_a(raw, EXPECTED)),
        };
    }
    if let Some(rest) = raw.strip_prefix("sqlite:").or_else(|| raw.strip_prefix("file:")) {
        return sqlite(rest).map_err(|why| not_a(raw, format_args!("a SQLite DSN ({why})")));
    }
    if go_mysql::is_go_dsn(raw) {
        return go_mysql::convert(raw)
            .map(|converted| (DatabaseDsn::Mysql { url: converted.url }, converted.dropped))
            .map_err(|why| not_a(raw, format_args!("a MySQL DSN ({why})")));
    }
    if is_keyword_value(raw) {
        // Not shown at all: a password in this form may contain anything, `@` included.
        return Err(
            "PostgreSQL key=value strings (value not shown) are not supported; use \
                    postgres://user:password@host:port/dbname"
                .to_owned(),
        );
    }
    if raw.contains('@') {
        return Err(not_a(raw, EXPECTED));
    }
    sqlite(raw).map_err(|why| not_a(raw, format_args!("a SQLite DSN ({why})")))
}

/// The part after `mysql://`: kept as a URL, or converted when it is in the Go form.
fn mysql_url(rest: &str) -> Result<(DatabaseDsn, Vec<String>), String> {
    if rest.is_empty() {
        return Err("mysql://user:password@host:port/dbname".to_owned());
    }
    if go_mysql::is_go_dsn(rest) {
        let converted = go_mysql::convert(rest)?;
        return Ok((DatabaseDsn::Mysql { url: converted.url }, converted.dropped));
    }
    Ok((
        DatabaseDsn::Mysql {
            url: format!("mysql://{rest}"),
        },
        Vec::new(),
    ))
}

/// A SQLite path with its `?query` stripped, and the query parameters worth a warning.
fn sqlite(path_and_query: &str) -> Result<(DatabaseDsn, Vec<String>), String> {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    if path.is_empty() {
        return Err("no file path".to_owned());
    }
    let ignored = query
        .split('&')
        .filter(|param| !param.is_empty())
        .map(|param| param.split_once('=').map_or(param, |(name, _)| name))
        .filter(|name| !SQLITE_BUILT_IN_PARAMS.contains(name))
        .map(str::to_owned)
        .collect();
    Ok((
        DatabaseDsn::Sqlite {
            path: PathBuf::from(path),
        },
        ignored,
    ))
}

/// Whether `raw` looks like a PostgreSQL `host=… dbname=…` string rather than a path.
fn is_keyword_value(raw: &str) -> bool {
    raw.split_whitespace().any(|token| {
        ["host=", "dbname=", "user=", "password=", "sslmode="]
            .iter()
            .any(|keyword| token.to_ascii_lowercase().starts_with(keyword))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::{map, read_with};

    fn dsn(raw: &str) -> DatabaseDsn {
        raw.parse().unwrap()
    }

    fn sqlite_path(raw: &str) -> PathBuf {
        match dsn(raw) {
            DatabaseDsn::Sqlite { path } => path,
            other => panic!("{raw} gave {other:?}"),
        }
    }

    fn load(value: Option<&str>) -> (Result<Vec<String>, String>, DatabaseConfig) {
        let pairs = value.map(|v| vec![(DATABASE_DSN, v)]).unwrap_or_default();
        read_with(&pairs, |vars| {
            DatabaseConfig::from_vars(vars, Path::new("./data"))
        })
    }

    #[test]
    fn default_is_sqlite_in_the_data_dir() {
        let (result, config) = load(None);
        assert!(result.unwrap().is_empty());
        assert_eq!(
            config.dsn,
            DatabaseDsn::Sqlite {
                path: PathBuf::from("./data/gpt-load.db")
            }
        );
        assert_eq!(load(Some("   ")).1, config);
        let env = map(&[]);
        let mut vars = Vars::new(&env);
        let elsewhere = DatabaseConfig::from_vars(&mut vars, Path::new("/var/lib/gpt-load"));
        assert_eq!(
            elsewhere.dsn,
            DatabaseDsn::Sqlite {
                path: PathBuf::from("/var/lib/gpt-load/gpt-load.db")
            }
        );
    }

    #[test]
    fn adoption_on_servers_is_opt_in() {
        assert!(!load(None).1.adopt_gpt_load);
        for (value, expected) in [("true", true), ("TRUE", true), ("1", true), ("false", false)] {
            let env = map(&[(ADOPT_GPT_LOAD, value)]);
            let mut vars = Vars::new(&env);
            let config = DatabaseConfig::from_vars(&mut vars, Path::new("./data"));
            assert!(vars.finish().is_ok(), "{value}");
            assert_eq!(config.adopt_gpt_load, expected, "{value}");
        }
        let env = map(&[(ADOPT_GPT_LOAD, "perhaps")]);
        let mut vars = Vars::new(&env);
        DatabaseConfig::from_vars(&mut vars, Path::new("./data"));
        assert!(vars.finish().unwrap_err().to_string().contains(ADOPT_GPT_LOAD));
    }

    #[test]
    fn sqlite_forms() {
        assert_eq!(sqlite_path("./data/x.db"), PathBuf::from("./data/x.db"));
        assert_eq!(sqlite_path("/srv/x.db"), PathBuf::from("/srv/x.db"));
        assert_eq!(sqlite_path("sqlite://rel/x.db"), PathBuf::from("rel/x.db"));
        assert_eq!(sqlite_path("sqlite:///abs/x.db"), PathBuf::from("/abs/x.db"));
        assert_eq!(sqlite_path("sqlite:x.db"), PathBuf::from("x.db"));
        assert_eq!(sqlite_path("SQLITE://x.db"), PathBuf::from("x.db"));
        assert_eq!(sqlite_path("file:x.db"), PathBuf::from("x.db"));
        assert_eq!(sqlite_path("sqlite:./a@b.db"), PathBuf::from("./a@b.db"));
    }

    #[test]
    fn sqlite_query_is_stripped() {
        assert_eq!(
            sqlite_path("./data/gpt-load.db?_busy_timeout=5000"),
            PathBuf::from("./data/gpt-load.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///abs/x.db?_fk=1"),
            PathBuf::from("/abs/x.db")
        );
        let (result, config) = load(Some("./data/x.db?_busy_timeout=5000&cache=shared&_pragma=a"));
        assert_eq!(
            config.dsn,
            DatabaseDsn::Sqlite {
                path: PathBuf::from("./data/x.db")
            }
        );
        assert_eq!(
            result.unwrap(),
            ["DATABASE_DSN: ignoring parameters the gateway does not use: cache, _pragma"]
        );
    }

    #[test]
    fn postgres_urls_are_kept() {
        for url in [
            "postgres://u:p@h:5432/db?sslmode=disable",
            "postgresql://h/db",
            "postgres:///db?host=/run",
        ] {
            assert_eq!(dsn(url), DatabaseDsn::Postgres { url: url.to_owned() });
        }
    }

    #[test]
    fn mysql_urls() {
        assert_eq!(
            dsn("mysql://root@127.0.0.1:3306/test"),
            DatabaseDsn::Mysql {
                url: "mysql://root@127.0.0.1:3306/test".to_owned()
            }
        );
        assert_eq!(
            dsn("mariadb://root:pw@db/test"),
            DatabaseDsn::Mysql {
                url: "mysql://root:pw@db/test".to_owned()
            }
        );
        assert_eq!(
            dsn("mysql://root:pw@tcp(db:3306)/test?parseTime=true"),
            DatabaseDsn::Mysql {
                url: "mysql://root:pw@db:3306/test".to_owned()
            }
        );
    }

    #[test]
    fn go_mysql_form_is_converted() {
        assert_eq!(
            dsn("root:p@ss:w/rd?@tcp(127.0.0.1:3306)/gpt-load?charset=utf8mb4&parseTime=True&loc=Local"),
            DatabaseDsn::Mysql {
                url: "mysql://root:p%40ss%3Aw%2Frd%3F@127.0.0.1:3306/gpt-load".to_owned()
            }
        );
        let (result, config) = load(Some("root:pw@tcp(db:3306)/gpt?timeout=5s"));
        assert_eq!(config.dsn.backend_name(), "mysql");
        assert_eq!(
            result.unwrap(),
            ["DATABASE_DSN: ignoring parameters the gateway does not use: timeout"]
        );
    }

    #[test]
    fn display_and_debug_mask_passwords() {
        let mysql = dsn("root:Sup3rS3cret@tcp(db:3306)/gpt");
        assert_eq!(mysql.to_string(), "mysql://root:****@db:3306/gpt");
        assert_eq!(
            format!("{mysql:?}"),
            "Mysql { url: \"mysql://root:****@db:3306/gpt\" }"
        );
        let pg = dsn("postgres://app:Sup3rS3cret@h/db");
        assert_eq!(pg.masked(), "postgres://app:****@h/db");
        assert!(!format!("{pg:?}").contains("Sup3rS3cret"));
        assert_eq!(dsn("x.db").to_string(), "sqlite:x.db");
    }

    #[test]
    fn errors_name_the_variable_and_mask_the_password() {
        let cases = [
            ("root:Sup3rS3cret@localhost:3306/gpt", "is not a database DSN"),
            ("redis://:Sup3rS3cret@h", "is not a database DSN"),
            (
                "root:Sup3rS3cret@tcp(db:3306",
                "is not a MySQL DSN (missing ')' after tcp()",
            ),
            (
                "host=h user=u password=Sup3rS3cret dbname=d",
                "key=value strings (value not shown) are not supported",
            ),
            (
                "host=h password=p@Sup3rS3cret dbname=d",
                "key=value strings (value not shown)",
            ),
            ("sqlite://", "is not a SQLite DSN (no file path)"),
            ("sqlite:?_busy_timeout=1", "is not a SQLite DSN (no file path)"),
            ("postgres://", "is not a PostgreSQL URL"),
            ("mysql://", "is not a MySQL DSN"),
        ];
        for (raw, expected) in cases {
            let (result, config) = load(Some(raw));
            let text = result.unwrap_err();
            assert!(text.starts_with("DATABASE_DSN: "), "{text}");
            assert!(text.contains(expected), "{raw}: {text}");
            assert!(!text.contains("Sup3rS3cret"), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
            assert_eq!(config.dsn.backend_name(), "sqlite");
        }
        let err = "root:Sup3rS3cret@h/db".parse::<DatabaseDsn>().unwrap_err();
        assert_eq!(err.var(), DATABASE_DSN);
        assert!(err.to_string().contains("\"root:****@h/db\""), "{err}");
    }

    #[test]
    fn a_backend_left_out_of_the_build_is_named_without_the_dsn() {
        let dsn: DatabaseDsn = "postgres://user:Sup3rS3cret@db/gpt".parse().unwrap();
        let message = dsn.not_built_in();
        assert_eq!(
            message,
            "this build does not include the postgres backend (cargo feature `postgres`)"
        );
        assert!(!message.contains("Sup3rS3cret"));
    }
}
