use std::{collections::HashMap, fmt, sync::Arc};

use arc_swap::ArcSwap;
use subtle::{Choice, ConstantTimeEq};

use crate::{
    channel::ChannelKind,
    context::{GroupName, Principal},
    error::Error,
    secret::ApiKey,
};

/// Decides whether a presented proxy key may use a group.
///
/// Return the group's [`Principal`] on success, [`Error::unauthorized`] for a wrong key and
/// [`Error::unknown_group`] for a group that does not exist. Compare keys in constant time and
/// do not block: this runs on every request. Closures `Fn(&str, &str) -> Result<Principal, Error>`
/// implement it.
pub trait ValidateProxyKey: Send + Sync + 'static {
    /// Checks `presented` against the keys of `group` (the URL's group segment).
    fn validate(&self, group: &str, presented: &str) -> Result<Principal, Error>;
}

impl<F> ValidateProxyKey for F
where
    F: Fn(&str, &str) -> Result<Principal, Error> + Send + Sync + 'static,
{
    fn validate(&self, group: &str, presented: &str) -> Result<Principal, Error> {
        self(group, presented)
    }
}

/// Proxy keys: a global set accepted by every group, and each group's own set.
#[derive(Clone, Debug, Default)]
pub struct ProxyKeyTable {
    global: Vec<ApiKey>,
    groups: HashMap<GroupName, GroupEntry, foldhash::fast::RandomState>,
}

#[derive(Clone, Debug)]
struct GroupEntry {
    channel: ChannelKind,
    keys: Vec<ApiKey>,
}

impl ProxyKeyTable {
    /// An empty table (no group, no key).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds keys accepted by every group.
    #[must_use]
    pub fn global<K: Into<ApiKey>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.global.extend(
            keys.into_iter()
                .map(Into::into)
                .filter(|k: &ApiKey| !k.is_empty()),
        );
        self
    }

    /// Adds (or replaces) a group with its channel and its own keys.
    #[must_use]
    pub fn group<K: Into<ApiKey>>(
        mut self,
        name: impl Into<GroupName>,
        channel: ChannelKind,
        keys: impl IntoIterator<Item = K>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(Into::into)
            .filter(|k: &ApiKey| !k.is_empty())
            .collect();
        self.groups.insert(name.into(), GroupEntry { channel, keys });
        self
    }

    /// Whether the table knows `group`.
    pub fn contains_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// The table's own name and the channel of `group`, when the table knows it: what a
    /// validator of other keys (access keys, say) needs to make a [`Principal`].
    pub fn lookup_group(&self, group: &str) -> Option<(&GroupName, ChannelKind)> {
        self.groups
            .get_key_value(group)
            .map(|(name, entry)| (name, entry.channel))
    }
}

/// Whether `presented` equals one of `keys`, comparing every key in constant time.
fn matches_any(keys: &[ApiKey], presented: &[u8]) -> Choice {
    keys.iter().fold(Choice::from(0), |found, key| {
        found | key.expose().as_bytes().ct_eq(presented)
    })
}

/// A ready [`ValidateProxyKey`] over a [`ProxyKeyTable`] that can be swapped at run time
/// without a lock on the request path. Cloning shares the table.
#[derive(Clone, Default)]
pub struct StaticProxyKeys {
    table: Arc<ArcSwap<ProxyKeyTable>>,
}

impl StaticProxyKeys {
    /// Serves `table`.
    pub fn new(table: ProxyKeyTable) -> Self {
        Self {
            table: Arc::new(ArcSwap::from_pointee(table)),
        }
    }

    /// Replaces the whole table; requests already past authentication are unaffected.
    pub fn store(&self, table: ProxyKeyTable) {
        self.table.store(Arc::new(table));
    }

    /// The current table.
    pub fn load(&self) -> Arc<ProxyKeyTable> {
        self.table.load_full()
    }
}

impl ValidateProxyKey for StaticProxyKeys {
    fn validate(&self, group: &str, presented: &str) -> Result<Principal, Error> {
        let table = self.table.load();
        let presented = presented.as_bytes();
        let global = matches_any(&table.global, presented);
        match table.groups.get_key_value(group) {
            Some((name, entry)) => {
                if bool::from(global | matches_any(&entry.keys, presented)) {
                    Ok(Principal::new(name.clone(), entry.channel))
                } else {
                    Err(Error::unauthorized())
                }
            }
            // Only a caller holding a global key learns that a group does not exist, so group
            // names cannot be enumerated with a made-up key.
            None if bool::from(global) => Err(Error::unknown_group(group)),
            None => Err(Error::unauthorized()),
        }
    }
}

impl fmt::Debug for StaticProxyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.load();
        f.debug_struct("StaticProxyKeys")
            .field("global_keys", &table.global.len())
            .field("groups", &table.groups.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn keys() -> StaticProxyKeys {
        StaticProxyKeys::new(
            ProxyKeyTable::new()
                .global(["global-key"])
                .group("oa", ChannelKind::OpenAi, ["oa-key"])
                .group("cl", ChannelKind::Anthropic, Vec::<ApiKey>::new()),
        )
    }

    #[test]
    fn accepts_global_and_group_keys() {
        let k = keys();
        let p = k.validate("oa", "global-key").unwrap();
        assert_eq!((p.group().as_str(), p.channel()), ("oa", ChannelKind::OpenAi));
        assert!(k.validate("oa", "oa-key").is_ok());
        assert_eq!(
            k.validate("cl", "global-key").unwrap().channel(),
            ChannelKind::Anthropic
        );
    }

    #[test]
    fn rejects_wrong_keys_and_other_groups_keys() {
        let k = keys();
        assert_eq!(
            k.validate("cl", "oa-key").unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
        assert_eq!(
            k.validate("oa", "oa-ke").unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
        assert_eq!(k.validate("oa", "").unwrap_err().kind(), ErrorKind::Unauthorized);
    }

    #[test]
    fn unknown_group_only_for_global_key_holders() {
        let k = keys();
        assert_eq!(
            k.validate("nope", "global-key").unwrap_err().kind(),
            ErrorKind::UnknownGroup
        );
        assert_eq!(
            k.validate("nope", "oa-key").unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
    }

    #[test]
    fn table_swaps_at_run_time_across_clones() {
        let k = keys();
        let clone = k.clone();
        k.store(ProxyKeyTable::new().group("new", ChannelKind::Gemini, ["n"]));
        assert!(clone.validate("new", "n").is_ok());
        assert_eq!(
            clone.validate("oa", "global-key").unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
        assert!(clone.load().contains_group("new"));
        let table = clone.load();
        let (name, channel) = table.lookup_group("new").unwrap();
        assert_eq!((name.as_str(), channel), ("new", ChannelKind::Gemini));
        assert!(table.lookup_group("oa").is_none());
        assert!(!format!("{clone:?}").contains("\"n\""));
    }
}
