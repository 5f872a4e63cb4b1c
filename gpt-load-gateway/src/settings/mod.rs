//! System settings: gpt-load's dynamic configuration, stored as rows of `system_settings` and
//! changed at runtime from the console.
//!
//! - [`table`]: one declarative table with an entry per setting (key, Rust type, default,
//!   minimum, category, group override position, English and Chinese texts), in gpt-load's
//!   order. The structs below, the metadata the API serves ([`meta`]), the group config order
//!   and the code that reads, writes and merges settings by key are all generated from it;
//!   its documentation explains how to add a setting.
//! - [`SystemSettings`]: the typed settings. [`load`](store::load) reads them: the defaults, overridden by
//!   the stored rows; a stored value that does not parse is logged and its default kept.
//!   [`seed`] creates the missing rows at start-up (`app_url` from `HOST`/`PORT`, `proxy_keys`
//!   with a new random key, encrypted like every stored proxy key list) and never overwrites a row.
//! - [`validate_update`](system::validate_update): checks a partial update and reports every bad field, to be answered
//!   with 400 naming the fields (gpt-load answers 500). Values are stored in a form that reads
//!   back: integers as plain decimals (gpt-load writes `1e+06` for a million, which it then
//!   cannot read; such rows are recovered here), booleans as `true`/`false`.
//! - [`GroupConfig`]: a group's overrides of the 14 overridable gpt-load settings plus ours,
//!   `stream_idle_timeout`; [`validate_group_config`] checks them on write.
//! - [`EffectiveConfig`]: what a group runs with — group override, else system value, else
//!   default — from [`SystemSettings::effective`], with typed accessors.
//! - [`SettingsStore`]: the live settings. An update is validated, written in one transaction
//!   and swapped in, so the next request uses it; subscribers learn of every change.
//!
//! # Example
//!
//! ```ignore
//! let store = SettingsStore::open(&db).await?;
//! let mut changes = store.subscribe();
//! store.update(&db, &serde_json::from_str(r#"{"max_retries": 5}"#)?).await?;
//! assert_eq!(store.current().max_retries, 5);
//! changes.changed().await?; // caches derived from the settings rebuild here
//! let group = GroupConfig::from_stored("openai", r#"{"request_timeout": 30}"#);
//! let effective = store.current().effective(&group);
//! assert_eq!(effective.request_timeout(), Duration::from_secs(30));
//! ```

mod declare;
mod effective;
mod group;
pub(crate) mod meta;
mod store;
mod system;
mod table;
pub(crate) mod value;
mod view;

#[cfg(test)]
mod tests;

pub(crate) use self::{
    group::validate_group_config,
    meta::Lang,
    store::{SettingsError, SettingsStore, seed},
    table::{EffectiveConfig, GroupConfig, SystemSettings},
    value::FieldError,
    view::{ConfigOption, SettingsCategory},
};
