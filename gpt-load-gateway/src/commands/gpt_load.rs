//! `import --from DSN` and `export-gpt-load --to DSN`: the command-line side of
//! [`crate::gpt_load`], printing a summary an operator can keep.

use std::str::FromStr;

use anyhow::Context as _;

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
    let source = DatabaseDsn::from_str(from).map_err(|e| anyhow::anyhow!("--from: {}", e.message()))?;
    // Our tables first, through the same migrations the gateway runs; never on a gpt-load
    // database, which the gateway adopts instead.
    crate::app::ensure_adopted(&config.database.dsn).await?;
    crate::app::connect(&config.database.dsn).await?.migrate().await?;
    let target = config.database.dsn.clone();
    let encryption_key = config.auth.encryption_key.as_ref().map(|k| k.expose().to_owned());
    let auth_key = config.auth.auth_key.as_ref().map(|k| k.expose().to_owned());
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<Summary> {
        let mut source_conn = SyncConn::open(&source).with_context(|| format!("--from {source}"))?;
        let mut target_conn = SyncConn::open(&target).with_context(|| format!("DATABASE_DSN {target}"))?;
        Ok(crate::gpt_load::import::import(
            &mut source_conn,
            &mut target_conn,
            old_encryption_key.as_deref(),
            encryption_key.as_deref(),
            auth_key.as_deref(),
            &mut Bar::default(),
        )?)
    })
    .await??;
    print_summary("imported", &summary);
    Ok(())
}

/// `export-gpt-load --to DSN`.
pub(crate) async fn export(config: Config, to: &str) -> anyhow::Result<()> {
    let target = DatabaseDsn::from_str(to).map_err(|e| anyhow::anyhow!("--to: {}", e.message()))?;
    let source = config.database.dsn.clone();
    let encryption_key = config.auth.encryption_key.as_ref().map(|k| k.expose().to_owned());
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<Summary> {
        let mut source_conn = SyncConn::open(&source).with_context(|| format!("DATABASE_DSN {source}"))?;
        let mut target_conn = SyncConn::open(&target).with_context(|| format!("--to {target}"))?;
        Ok(crate::gpt_load::export::export(
            &mut source_conn,
            &mut target_conn,
            encryption_key.as_deref(),
            &mut Bar::default(),
        )?)
    })
    .await??;
    print_summary("exported", &summary);
    Ok(())
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
