//! Moving in from gpt-load 1.4, and back.
//!
//! - [`adopt`]: at start, a gpt-load database (SQLite, PostgreSQL, MySQL) is recognised and
//!   converted in place, after a backup copy (SQLite) or with the operator's `--adopt` (servers).
//! - `import --from DSN` copies a gpt-load database into ours; `export-gpt-load --to DSN` writes
//!   ours as a database gpt-load 1.4 opens (`schema/` holds its tables for each backend).
//!
//! gpt-load's tables carry the same names as ours; what differs is the column types (nullable
//! text and JSON, `timestamptz`, zone-offset text on SQLite, numeric booleans), the key cipher
//! (AES-256-GCM, [`crate::crypto::gpt_load`]) and the proxy keys (plain text there). Rows are
//! read as text ([`source`]), parsed ([`convert`]) and written through diesel ([`copy`]), the
//! same way for every pair of backends.

pub(crate) mod adopt;
pub(crate) mod conn;
pub(crate) mod convert;
pub(crate) mod copy;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod progress;
pub(crate) mod source;

#[cfg(test)]
mod tests;
