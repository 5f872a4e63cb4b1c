//! `import --from DSN`: copies a gpt-load database, left as it is, into ours.
//!
//! The source may be on any of the three backends and ours on any other. Its keys are read
//! with `--old-encryption-key` (or `ENCRYPTION_KEY` when that is not given) and stored with
//! `ENCRYPTION_KEY`. Every key is checked before anything is written, and the rows go in one
//! transaction: a failure writes nothing. Re-running it copies only what is new
//! ([`copy`](super::copy) says how rows are matched).

use super::adopt::{Found, inspect};
use super::conn::SyncConn;
use super::convert::NaiveZone;
use super::copy::{self, CopyError, Link, Progress, SourceOptions, Summary};
use super::keys::KeyTranslator;
use super::source::{Location, Reader};
use crate::crypto::KeyCipher;
use crate::crypto::gpt_load::GptLoadCipher;
use crate::db::Backend;

/// Why an import stopped; nothing was written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    /// The source is not a gpt-load database.
    #[error("--from is not a gpt-load database ({0:?}); it must hold gpt-load's tables")]
    NotGptLoad(Found),
    /// Our database is a gpt-load one itself.
    #[error(
        "DATABASE_DSN is a gpt-load database itself: start the gateway on it to adopt it in \
         place, or point DATABASE_DSN at another database"
    )]
    TargetIsGptLoad,
    /// The copy failed.
    #[error("{0}; nothing was imported")]
    Copy(#[from] CopyError),
    /// A query failed.
    #[error("{0}; nothing was imported")]
    Query(#[from] diesel::result::Error),
}

/// Copies the gpt-load database on `source` into ours on `target` (already migrated).
pub(crate) fn import(
    source: &mut SyncConn,
    target: &mut SyncConn,
    old_encryption_key: Option<&str>,
    encryption_key: Option<&str>,
    auth_key: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<Summary, ImportError> {
    match inspect(source)? {
        Found::GptLoad => {}
        other => return Err(ImportError::NotGptLoad(other)),
    }
    if inspect(target)? == Found::GptLoad {
        return Err(ImportError::TargetIsGptLoad);
    }
    let options = SourceOptions {
        reader: Reader::new(Location::InPlace, copy::PAGE),
        naive_zone: match source.backend() {
            Backend::Mysql => NaiveZone::Local,
            Backend::Sqlite | Backend::Postgres => NaiveZone::Utc,
        },
        keys: KeyTranslator::new(
            GptLoadCipher::from_password(old_encryption_key.or(encryption_key)),
            KeyCipher::from_password(encryption_key),
        ),
        auth_key: auth_key.map(str::to_owned),
    };
    copy::check_keys(source, &options)?;
    let summary = target.transaction(|target| {
        copy::copy_all(
            &mut Link::Pair {
                source: &mut *source,
                target,
            },
            &options,
            progress,
        )
    })?;
    Ok(summary)
}
