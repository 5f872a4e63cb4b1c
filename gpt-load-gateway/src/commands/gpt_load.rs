//! `import --from DSN` and `export-gpt-load --to DSN`: the command-line side of
//! [`crate::gpt_load`], printing a summary an operator can keep.

use std::str::FromStr;

use anyhow::Context as _;
use gpt_load_tower::secret::ApiKey;

use crate::config::{Config, database::DatabaseDsn};
use crate::gpt_load::conn::SyncConn;
use crate::gpt_load::copy::Summary;
use crate::gpt_load::progress::Bar;

/// `import --from DSN [--old-encryption-key KEY]`.
pub(crate) async fn import(
    config: Config,
    from: &str,
    old_encryption_key: Option<String>,
) -> anyhow::Result<()> {
    let source = parse_dsn("--from", from)?;
    // Our tables first, through the same migrations the gateway runs; never on a gpt-load
    // database, which the gateway adopts instead.
    crate::app::ensure_adopted(&config.database.dsn).await?;
    crate::app::connect(&config.database.dsn).await?.migrate().await?;
    let target = config.database.dsn.clone();
    let encryption_key = exposed(config.auth.encryption_key.as_ref());
    let auth_key = exposed(config.auth.auth_key.as_ref());
    let summary = copy_between(
        ("--from", source),
        ("DATABASE_DSN", target),
        move |source, target| {
            crate::gpt_load::import::import(
                source,
                target,
                old_encryption_key.as_deref(),
                encryption_key.as_deref(),
                auth_key.as_deref(),
                &mut Bar::default(),
            )
        },
    )
    .await?;
    print_summary("imported", &summary);
    Ok(())
}

/// `export-gpt-load --to DSN`.
pub(crate) async fn export(config: Config, to: &str) -> anyhow::Result<()> {
    let target = parse_dsn("--to", to)?;
    let source = config.database.dsn.clone();
    let encryption_key = exposed(config.auth.encryption_key.as_ref());
    let summary = copy_between(
        ("DATABASE_DSN", source),
        ("--to", target),
        move |source, target| {
            crate::gpt_load::export::export(source, target, encryption_key.as_deref(), &mut Bar::default())
        },
    )
    .await?;
    print_summary("exported", &summary);
    Ok(())
}

/// The database the operator named with `flag`.
fn parse_dsn(flag: &str, text: &str) -> anyhow::Result<DatabaseDsn> {
    DatabaseDsn::from_str(text).map_err(|e| anyhow::anyhow!("{flag}: {}", e.message()))
}

/// A configured secret, owned, to move onto the blocking thread.
fn exposed(key: Option<&ApiKey>) -> Option<String> {
    key.map(|k| k.expose().to_owned())
}

/// Opens the `source` and `target` databases, each with the name it was given by, and runs
/// `copy` between them on a blocking thread (the copy's connections block).
async fn copy_between<E>(
    (source_name, source): (&'static str, DatabaseDsn),
    (target_name, target): (&'static str, DatabaseDsn),
    copy: impl FnOnce(&mut SyncConn, &mut SyncConn) -> Result<Summary, E> + Send + 'static,
) -> anyhow::Result<Summary>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::task::spawn_blocking(move || -> anyhow::Result<Summary> {
        let mut source_conn = SyncConn::open(&source).with_context(|| format!("{source_name} {source}"))?;
        let mut target_conn = SyncConn::open(&target).with_context(|| format!("{target_name} {target}"))?;
        Ok(copy(&mut source_conn, &mut target_conn)?)
    })
    .await?
}

/// The summary on standard output: rows per table, then what was skipped or repaired and why.
#[expect(clippy::print_stdout, reason = "the command's report to the operator")]
fn print_summary(verb: &str, summary: &Summary) {
    println!("{verb}:");
    for (table, rows) in &summary.copied {
        println!("  {table:<20} {rows:>10} rows");
    }
    if !summary.skipped.is_empty() {
        println!("skipped:");
        for (reason, rows) in &summary.skipped {
            println!("  {rows:>10}  {reason}");
        }
    }
    if !summary.repaired.is_empty() {
        println!("repaired:");
        for (what, rows) in &summary.repaired {
            println!("  {rows:>10}  {what}");
        }
    }
    for warning in &summary.warnings {
        println!("warning: {warning}");
    }
}
