//! A map from group name to shared state that requests read without locking.
//!
//! Readers load the current map through [`ArcSwap`]; writers copy it, change the copy and swap
//! it in under a mutex, so concurrent writers do not lose each other's changes. Groups change
//! rarely (admin actions), requests read on every call.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use arc_swap::{ArcSwap, Guard};

use crate::context::GroupName;

/// Group name to state, hashed with foldhash: every request looks its group up in a few of these,
/// and std's SipHash cost as much as the rest of the lookup.
pub(crate) type Groups<T> = HashMap<GroupName, Arc<T>, foldhash::fast::RandomState>;

pub(crate) struct GroupMap<T> {
    map: ArcSwap<Groups<T>>,
    write: Mutex<()>,
}

impl<T> Default for GroupMap<T> {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(Groups::default()),
            write: Mutex::new(()),
        }
    }
}

impl<T> GroupMap<T> {
    /// The current map, borrowed for the duration of one request.
    pub(crate) fn load(&self) -> Guard<Arc<Groups<T>>> {
        self.map.load()
    }

    /// One group's state.
    pub(crate) fn get(&self, group: &str) -> Option<Arc<T>> {
        self.map.load().get(group).cloned()
    }

    /// Applies `change` to a copy of the map and publishes it; returns what `change` returned.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut Groups<T>) -> R) -> R {
        // The mutex guards `()`: a panic in another writer cannot leave anything inconsistent.
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = Groups::clone(&self.map.load());
        let result = change(&mut next);
        self.map.store(Arc::new(next));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_copy_on_write() {
        let map = GroupMap::<u32>::default();
        let before = map.load();
        assert!(map.update(|m| m.insert("a".into(), Arc::new(1)).is_none()));
        assert!(before.is_empty(), "a reader keeps the map it loaded");
        assert_eq!(map.get("a").as_deref(), Some(&1));
        assert!(map.update(|m| m.remove("a").is_some()));
        assert!(map.get("a").is_none());
    }
}
