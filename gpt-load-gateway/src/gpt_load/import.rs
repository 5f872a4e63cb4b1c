//! `import --from DSN`: copies a gpt-load database, left as it is, into ours.
//!
//! The source may be on any of the three backends and ours on any other. Its keys are read
//! with `--old-encryption-key` (or `ENCRYPTION_KEY` when that is not given) and stored with
//! `ENCRYPTION_KEY`. Every key is checked before anything is written, and the rows go in one
//! transaction: a failure writes nothing. Re-running it copies only what is new
//! ([`copy`](super::copy) says how rows are matched).

use super::adopt::{Found, inspect, require};
use super::conn::SyncConn;
use super::copy::{self, CopyError, Link, Progress, SourceOptions, Summary};

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
    require(source, Found::GptLoad, ImportError::NotGptLoad)?;
    if inspect(target)? == Found::GptLoad {
        return Err(ImportError::TargetIsGptLoad);
    }
    let options = SourceOptions::in_place(
        source.backend(),
        old_encryption_key.or(encryption_key),
        encryption_key,
        auth_key.map(str::to_owned),
    );
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
