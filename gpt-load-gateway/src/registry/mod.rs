//! The one owner of the gateway's group and key state.
//!
//! [`Registry`] holds the database handle, the cipher, the live settings, the [`Catalog`] the
//! proxy stack reads, the key pool and the one upstream client. The admin API, bootstrap, the
//! settings watcher and the jobs change groups, keys and settings through its methods, and
//! nothing else writes that state. Every method writes the database first and then changes the
//! memory of what it touched:
//!
//! - a change to one group re-reads that group's row only and swaps its catalog entries; other
//!   groups keep theirs (the same `Arc`s), and no key is decrypted again;
//! - keys are decrypted once, when they enter the pool (at start, when added, when their group
//!   is created); deletions and status changes address them by id;
//! - a settings change rebuilds the groups' policies from the groups already parsed, without a
//!   database read.
//!
//! Changes are serialised by one async lock (admin and job paths only; the proxy path never
//! takes it), so the memory always matches the last write.
//!
//! In a cluster, every write also hands a [`Change`] to the cluster's publisher (see
//! [`Registry::publish_changes_to`]), and the changes other nodes made come back through the
//! seam of reloads: [`Registry::reload_group`], [`Registry::reload_keys`],
//! [`Registry::reload_settings`] and [`Registry::load_all`], which never publish. Key state
//! changed by traffic or validation (failures, blacklisting, cool-downs, restores) is counted
//! and spread through the cluster's shared key state ([`ProxyKeyPool`]).

pub(crate) mod access_keys;
pub(crate) mod catalog;
mod definition;
pub(crate) mod failure_rules;
mod group;
pub(crate) mod key_limits;
mod keys;
pub(crate) mod persist;
mod policy;
mod shared_keys;

#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};

use chrono::NaiveDateTime;
use gpt_load_tower::{
    blacklist::Outcome,
    context::GroupName,
    keys::{KeyEvents, KeyId, KeyPool, KeySlot, KeyState, MemoryKeyPool, Report, SelectedKey},
};

use self::key_limits::KeyLimitOverride;
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

pub(crate) use crate::models::{KeyStatus, SealedKey};

pub(crate) use self::{
    catalog::{Catalog, GroupPolicy},
    definition::{GroupDefinition, GroupInput, HeaderRuleJson, UpstreamSpec},
    group::{Group, GroupKind},
    policy::{insert_group_policy, insert_routed_group_policy},
    shared_keys::{KeyReported, KeyStateChange, ProxyKeyPool, SharedKeyStates},
};
use crate::{
    crypto::KeyCipher,
    db::{Db, DbError},
    jobs::validate::KeyCheck,
    models::{AccessKeyFields, AccessKeyRow, GroupRow, NewGroup, NewPolicy, PolicyRow, now},
    repo::{
        access_keys as access_rows,
        groups::{self as group_rows, SubGroupLink},
        keys as key_rows, policies as policy_rows,
    },
    settings::{GroupConfig, SettingsError, SettingsStore},
    upstream::{ClientSettings, UpstreamClient},
};

/// The keys among `rows` with limits of their own, by group id.
fn own_limits(rows: &[key_rows::PoolKey]) -> HashMap<i64, HashMap<KeyId, KeyLimitOverride>> {
    let mut by_group = HashMap::new();
    add_own_limits(&mut by_group, rows);
    by_group
}

/// Adds the own limits of `rows` to `by_group` (see [`own_limits`]).
fn add_own_limits(by_group: &mut HashMap<i64, HashMap<KeyId, KeyLimitOverride>>, rows: &[key_rows::PoolKey]) {
    for (row, lifecycle) in rows {
        if let Some(own) = KeyLimitOverride::parse(lifecycle.key_limits.as_deref(), row.id) {
            by_group
                .entry(row.group_id)
                .or_default()
                .insert(KeyId(row.id as u64), own);
        }
    }
}

/// What [`Registry::load_all`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadSummary {
    pub(crate) groups: usize,
    pub(crate) keys: usize,
    /// Keys whose stored value could not be decrypted (wrong `ENCRYPTION_KEY`); left out of the pool.
    pub(crate) undecryptable: usize,
}

/// What adding keys to a group did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Added {
    pub(crate) added: usize,
    /// The group's keys afterwards.
    pub(crate) total: i64,
}

/// What a write through the registry changed: what another node must re-read to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Change {
    /// A group's row or its aggregate links (by group id); a group new to a node brings its keys.
    Group(i64),
    /// The keys of a group (by group id): added, deleted, restored or set by hand.
    Keys(i64),
    /// The system settings.
    Settings,
    /// The access keys.
    AccessKeys,
}

/// The owner of group and key state. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cipher: KeyCipher,
    settings: Arc<SettingsStore>,
    catalog: Catalog,
    pool: ProxyKeyPool,
    client: UpstreamClient,
    /// The parsed groups and the aggregate links. Held only in synchronous sections, never
    /// across an `.await`; the catalog changes under it so it always matches.
    state: Mutex<State>,
    /// Serialises changes: a database write and the memory change that follows it.
    write: tokio::sync::Mutex<()>,
    /// Where writes announce what they changed (the cluster's publisher); unset on a single node.
    changes: OnceLock<UnboundedSender<Change>>,
    /// Rung when keys were added pending, so the validation job need not wait for its tick.
    new_keys: tokio::sync::Notify,
    /// The stored access keys, to serve again when a group they name is renamed or removed.
    access_rows: Mutex<Vec<AccessKeyRow>>,
}

#[derive(Default)]
struct State {
    groups: HashMap<i64, Arc<Group>>,
    links: Vec<SubGroupLink>,
    /// Keys with limits of their own, by group id.
    key_limits: HashMap<i64, HashMap<KeyId, KeyLimitOverride>>,
}

impl State {
    /// An aggregate's members as `(name, weight)`.
    fn members(&self, aggregate: i64) -> Vec<(GroupName, u32)> {
        self.links
            .iter()
            .filter(|l| l.group_id == aggregate)
            .filter_map(|l| {
                let member = self.groups.get(&l.sub_group_id)?;
                Some((member.name.clone(), u32::try_from(l.weight.max(0)).unwrap_or(0)))
            })
            .collect()
    }

    fn by_name(&self, name: &str) -> Option<&Arc<Group>> {
        self.groups.values().find(|g| g.name.as_str() == name)
    }
}

impl Registry {
    /// An empty registry over `db` (call [`Registry::load_all`] next), with the key pool's event
    /// stream for the write-behind task ([`persist::run`]).
    pub(crate) fn new(
        db: Db,
        cipher: KeyCipher,
        settings: Arc<SettingsStore>,
    ) -> anyhow::Result<(Self, KeyEvents)> {
        let (pool, events) = MemoryKeyPool::with_events();
        let defaults = ClientSettings::from_effective(&settings.current().effective(&GroupConfig::default()));
        let client = UpstreamClient::new(defaults)?;
        let inner = Inner {
            db,
            cipher,
            settings,
            catalog: Catalog::new(),
            pool: ProxyKeyPool::new(pool),
            client,
            state: Mutex::default(),
            write: tokio::sync::Mutex::new(()),
            changes: OnceLock::new(),
            new_keys: tokio::sync::Notify::new(),
            access_rows: Mutex::default(),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            events,
        ))
    }

    /// A registry over `db` with the default settings, loaded.
    #[cfg(test)]
    pub(crate) async fn loaded(db: &Db, cipher: &KeyCipher) -> (Self, KeyEvents) {
        let settings = crate::settings::SystemSettings::default();
        let settings = Arc::new(SettingsStore::new(settings, cipher.clone()));
        let (registry, events) = Self::new(db.clone(), cipher.clone(), settings).expect("a registry");
        registry.load_all().await.expect("the registry loads");
        (registry, events)
    }

    /// The database (for reads; writes to groups, keys and settings go through the registry).
    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The cipher of stored keys.
    pub(crate) fn cipher(&self) -> &KeyCipher {
        &self.inner.cipher
    }

    /// The live system settings.
    pub(crate) fn settings(&self) -> &Arc<SettingsStore> {
        &self.inner.settings
    }

    /// The tables the proxy stack reads.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The key pool in memory (membership and status change through the registry).
    pub(crate) fn pool(&self) -> &MemoryKeyPool {
        self.inner.pool.local()
    }

    /// The key pool the proxy selects from and reports to.
    pub(crate) fn proxy_pool(&self) -> &ProxyKeyPool {
        &self.inner.pool
    }

    /// Keys made active again: in a cluster, their shared failures are forgotten and every node
    /// restores them.
    fn recovered(&self, group: &GroupName, ids: impl IntoIterator<Item = KeyId>) {
        if let Some(shared) = self.inner.pool.shared() {
            for id in ids {
                shared.send(group, id, KeyStateChange::Recovered);
            }
        }
    }

    /// Rung when keys were added pending (`validate_new_keys`): the validation job listens.
    pub(crate) fn new_keys_notice(&self) -> &tokio::sync::Notify {
        &self.inner.new_keys
    }

    /// The one upstream client (proxied requests and key validation).
    pub(crate) fn client(&self) -> &UpstreamClient {
        &self.inner.client
    }

    /// Sends every later [`Change`] to `changes` (once, when the node joins a cluster).
    pub(crate) fn publish_changes_to(&self, changes: UnboundedSender<Change>) {
        if self.inner.changes.set(changes).is_err() {
            tracing::warn!("the registry already publishes its changes");
        }
    }

    /// Announces a committed write (a no-op on a single node).
    fn changed(&self, change: Change) {
        if let Some(changes) = self.inner.changes.get() {
            // The receiver ends only at shutdown; a change then has nobody left to tell.
            let _ = changes.send(change);
        }
    }

    fn access_rows(&self) -> MutexGuard<'_, Vec<AccessKeyRow>> {
        self.inner
            .access_rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ids of the groups the registry runs.
    pub(crate) fn group_ids(&self) -> Vec<i64> {
        self.state().groups.keys().copied().collect()
    }

    /// A group by id, as the registry runs it.
    pub(crate) fn group(&self, id: i64) -> Option<Arc<Group>> {
        self.state().groups.get(&id).cloned()
    }

    // ----- Loading -------------------------------------------------------------------------

    /// Reads every group, link and key and replaces the whole state (at start; after a change
    /// the registry did not see). Keys already in the pool keep their live state.
    pub(crate) async fn load_all(&self) -> Result<LoadSummary, DbError> {
        let _write = self.inner.write.lock().await;
        let rows = group_rows::list(self.db()).await?;
        let links = group_rows::sub_group_links(self.db()).await?;
        let attached = policy_rows::attached(self.db(), None).await?;
        let access = access_rows::list(self.db()).await?;
        let mut summary = LoadSummary::default();
        // A page of rows at a time: the rows of every key at once took more memory than the
        // pool they fill, and the allocator kept it after they were dropped.
        let mut slots: HashMap<i64, Vec<KeySlot>> = HashMap::new();
        let mut key_limits = HashMap::new();
        let mut after = 0;
        loop {
            let page = key_rows::pool_keys_page(self.db(), None, after, key_rows::POOL_PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.id;
            add_own_limits(&mut key_limits, &page);
            for stored in &page {
                match keys::slot_of_row(stored, self.cipher()) {
                    Some(slot) => {
                        slots.entry(stored.0.group_id).or_default().push(slot);
                        summary.keys += 1;
                    }
                    None => summary.undecryptable += 1,
                }
            }
        }
        let settings = self.settings().current();
        let mut state = self.state();
        let mut fresh = State {
            groups: HashMap::new(),
            links,
            key_limits,
        };
        for row in &rows {
            match Group::from_row(row, self.cipher()) {
                Ok((mut group, mut warnings)) => {
                    let own = attached.iter().filter(|(link, _)| link.group_id == group.id);
                    let (rules, rule_warnings) = failure_rules::compile(group.name.as_str(), own);
                    group.failure_rules = rules;
                    warnings.extend(rule_warnings);
                    warnings.iter().for_each(|w| tracing::warn!("{w}"));
                    fresh.groups.insert(group.id, Arc::new(group));
                }
                Err(warning) => tracing::warn!("{warning}"),
            }
        }
        for gone in state
            .groups
            .values()
            .filter(|g| fresh.by_name(g.name.as_str()).is_none())
        {
            self.catalog().remove(gone.name.as_str());
        }
        // Keys whose own limits are gone since the last load follow their group again.
        for (group_id, before) in &state.key_limits {
            let (Some(group), now) = (fresh.groups.get(group_id), fresh.key_limits.get(group_id)) else {
                continue;
            };
            for id in before
                .keys()
                .filter(|id| now.is_none_or(|own| !own.contains_key(id)))
            {
                self.pool().set_limits_of(&group.name, *id, None);
            }
        }
        for group in fresh.groups.values() {
            let members = fresh.members(group.id);
            for warning in self.catalog().install(group, members, &settings) {
                tracing::warn!("{warning}");
            }
            if !group.is_aggregate() {
                let keys = slots.remove(&group.id).unwrap_or_default();
                self.pool().set_group(group.name.clone(), keys);
                self.apply_pool_settings(group, fresh.key_limits.get(&group.id));
            }
        }
        for name in self.pool().groups() {
            let standard = fresh.by_name(name.as_str()).is_some_and(|g| !g.is_aggregate());
            if !standard {
                self.pool().remove_group(name.as_str());
            }
        }
        self.catalog()
            .set_proxy_keys(fresh.groups.values().map(AsRef::as_ref), &settings);
        summary.groups = fresh.groups.len();
        *self.access_rows() = access;
        self.apply_access_keys(&fresh);
        *state = fresh;
        drop(state);
        if summary.undecryptable > 0 {
            tracing::warn!(
                count = summary.undecryptable,
                "keys could not be decrypted with ENCRYPTION_KEY and were not loaded"
            );
        }
        Ok(summary)
    }

    /// Re-reads one group (and the aggregate links) and applies it: installs, replaces, renames
    /// or forgets it. Other groups' entries and keys are left as they are. A group new to the
    /// registry brings its stored keys into the pool.
    pub(crate) async fn reload_group(&self, id: i64) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        self.reload_group_locked(id).await
    }

    async fn reload_group_locked(&self, id: i64) -> Result<(), DbError> {
        let row = group_rows::find(self.db(), id).await?;
        let links = group_rows::sub_group_links(self.db()).await?;
        let attached = match &row {
            Some(_) => policy_rows::attached(self.db(), Some(id)).await?,
            None => Vec::new(),
        };
        let known = self.state().groups.contains_key(&id);
        let stored_keys = match &row {
            Some(row) if !known && GroupKind::of_row(row) == GroupKind::Standard => {
                key_rows::pool_keys(self.db(), id).await?
            }
            _ => Vec::new(),
        };
        let settings = self.settings().current();
        let mut state = self.state();
        state.links = links;
        let old = state.groups.remove(&id);
        let parsed = row.as_ref().map(|row| Group::from_row(row, self.cipher()));
        match parsed {
            Some(Ok((mut group, mut warnings))) => {
                let (rules, rule_warnings) = failure_rules::compile(group.name.as_str(), &attached);
                group.failure_rules = rules;
                warnings.extend(rule_warnings);
                warnings.iter().for_each(|w| tracing::warn!("{w}"));
                let group = Arc::new(group);
                match &old {
                    Some(old) if old.name != group.name => {
                        self.catalog().remove(old.name.as_str());
                        self.pool().rename_group(old.name.as_str(), group.name.clone());
                    }
                    Some(_) => {}
                    None if !group.is_aggregate() => {
                        let slots = stored_keys
                            .iter()
                            .filter_map(|row| keys::slot_of_row(row, self.cipher()));
                        self.pool().set_group(group.name.clone(), slots);
                    }
                    None => {}
                }
                state.groups.insert(id, Arc::clone(&group));
                for warning in self.catalog().install(&group, state.members(id), &settings) {
                    tracing::warn!("{warning}");
                }
                self.apply_pool_settings(&group, state.key_limits.get(&id));
            }
            Some(Err(warning)) => {
                tracing::warn!("{warning}");
                self.forget(old.as_deref());
            }
            None => self.forget(old.as_deref()),
        }
        // Aggregates name their members: a member renamed, added, removed or deleted changes them.
        for aggregate in state.groups.values().filter(|g| g.is_aggregate()) {
            self.catalog()
                .set_members(&aggregate.name, state.members(aggregate.id));
        }
        self.catalog()
            .set_proxy_keys(state.groups.values().map(AsRef::as_ref), &settings);
        self.apply_access_keys(&state);
        Ok(())
    }

    fn forget(&self, group: Option<&Group>) {
        if let Some(group) = group {
            self.catalog().remove(group.name.as_str());
            self.pool().remove_group(group.name.as_str());
        }
    }

    /// Re-reads a group's keys and brings the pool in line with them: keys new to the pool
    /// enter (decrypted once), keys no longer stored leave, and a stored status the pool does
    /// not show is applied. A key stored `active` keeps its live state (cooling, say) unless the
    /// pool has it invalid or disabled.
    pub(crate) async fn reload_keys(&self, group_id: i64) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        let Some(group) = self.group(group_id).filter(|g| !g.is_aggregate()) else {
            return Ok(());
        };
        let rows = key_rows::pool_keys(self.db(), group_id).await?;
        let name = group.name.as_str();
        let live: HashMap<KeyId, KeyState> = self
            .pool()
            .keys(name)
            .iter()
            .map(|slot| (slot.id(), slot.state()))
            .collect();
        let stored: HashSet<KeyId> = rows.iter().map(|(row, _)| KeyId(row.id as u64)).collect();
        self.pool()
            .remove_keys(name, live.keys().filter(|id| !stored.contains(id)).copied());
        let mut states = Vec::new();
        let mut fresh = Vec::new();
        for stored in &rows {
            let row = &stored.0;
            let id = KeyId(row.id as u64);
            let status = KeyStatus::of_stored(&row.status);
            match live.get(&id) {
                None => fresh.extend(keys::slot_of_row(stored, self.cipher())),
                Some(&state) if KeyStatus::of_state(state) != status => states.push((id, status.state())),
                Some(_) => {}
            }
        }
        self.pool().add_keys(group.name.clone(), fresh);
        self.pool().set_states(name, states);
        let own = own_limits(&rows).remove(&group_id).unwrap_or_default();
        let mut state = self.state();
        let before = state.key_limits.insert(group_id, own).unwrap_or_default();
        for id in before
            .keys()
            .filter(|id| !state.key_limits[&group_id].contains_key(id))
        {
            self.pool().set_limits_of(&group.name, *id, None);
        }
        self.apply_pool_settings(&group, state.key_limits.get(&group_id));
        Ok(())
    }

    /// Re-reads the system settings from the database and applies them.
    pub(crate) async fn reload_settings(&self) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        self.settings().reload(self.db()).await?;
        self.apply_settings();
        Ok(())
    }

    /// Rebuilds every group's policy and the proxy key table from the current settings (after
    /// a settings change), from the groups already parsed.
    pub(crate) fn apply_settings(&self) {
        let settings = self.settings().current();
        let state = self.state();
        self.catalog().refresh_policies(state.groups.values(), &settings);
        self.catalog()
            .set_proxy_keys(state.groups.values().map(AsRef::as_ref), &settings);
        for group in state.groups.values() {
            self.apply_pool_settings(group, state.key_limits.get(&group.id));
        }
    }

    /// Hands the pool the group's selection settings (how often a degraded key is taken,
    /// whether a pending key may serve, the keys' rate limits, and the limits of the keys in
    /// `own` that have their own).
    fn apply_pool_settings(&self, group: &Group, own: Option<&HashMap<KeyId, KeyLimitOverride>>) {
        if group.is_aggregate() {
            return;
        }
        if let Some(policy) = self.catalog().policy(group.name.as_str()) {
            let pool = self.pool();
            pool.set_degraded_weight(&group.name, policy.effective.degraded_key_weight());
            pool.set_pending_fallback(&group.name, policy.effective.pending_keys_as_fallback());
            let limits = policy.effective.key_limits();
            let per_node = |mut limits: gpt_load_tower::keys::KeyLimits| {
                limits.tpm = self.catalog().node_share(limits.tpm);
                limits
            };
            pool.set_key_limits(&group.name, per_node(limits));
            for (id, own) in own.into_iter().flatten() {
                pool.set_limits_of(&group.name, *id, Some(per_node(own.over(limits))));
            }
        }
    }

    /// Gives key `key_id` limits of its own (`own` empty: its group's again) and applies them on
    /// every node; `false` when the key does not exist.
    pub(crate) async fn set_own_limits(&self, key_id: i64, own: KeyLimitOverride) -> Result<bool, DbError> {
        let _write = self.inner.write.lock().await;
        let Some(group_id) = key_rows::set_own_limits(self.db(), key_id, own.stored().as_deref()).await?
        else {
            return Ok(false);
        };
        let mut state = self.state();
        let keys = state.key_limits.entry(group_id).or_default();
        let id = KeyId(key_id as u64);
        if own.is_empty() {
            keys.remove(&id);
        } else {
            keys.insert(id, own);
        }
        if let Some(group) = state.groups.get(&group_id).cloned() {
            if own.is_empty() {
                self.pool().set_limits_of(&group.name, id, None);
            }
            self.apply_pool_settings(&group, state.key_limits.get(&group_id));
        }
        drop(state);
        self.changed(Change::Keys(group_id));
        Ok(true)
    }

    /// Records how many nodes of the cluster are alive, and hands every group its new share of
    /// the limits counted per node when that changed.
    pub(crate) fn set_live_nodes(&self, nodes: usize) {
        if self.catalog().set_live_nodes(nodes) {
            self.apply_settings();
        }
    }

    // ----- Settings ------------------------------------------------------------------------

    /// Applies a partial settings update (`PUT /api/settings`) and makes it visible to the next
    /// request.
    pub(crate) async fn update_settings(&self, update: &Map<String, Value>) -> Result<(), SettingsError> {
        let _write = self.inner.write.lock().await;
        self.settings().update(self.db(), update).await?;
        self.apply_settings();
        self.changed(Change::Settings);
        Ok(())
    }

    // ----- Groups --------------------------------------------------------------------------

    /// Creates a group; it serves at once.
    pub(crate) async fn create_group(&self, group: &NewGroup<'_>) -> Result<GroupRow, DbError> {
        let _write = self.inner.write.lock().await;
        let row = group_rows::insert(self.db(), group).await?;
        self.reload_group_locked(row.id).await?;
        self.changed(Change::Group(row.id));
        Ok(row)
    }

    /// Replaces a group's columns; `None` when it does not exist.
    pub(crate) async fn update_group(
        &self,
        id: i64,
        group: &NewGroup<'_>,
    ) -> Result<Option<GroupRow>, DbError> {
        let _write = self.inner.write.lock().await;
        let row = group_rows::update(self.db(), id, group).await?;
        if row.is_some() {
            self.reload_group_locked(id).await?;
            self.changed(Change::Group(id));
        }
        Ok(row)
    }

    /// Deletes a group with its keys and links; returns whether it existed.
    pub(crate) async fn delete_group(&self, id: i64) -> Result<bool, DbError> {
        let _write = self.inner.write.lock().await;
        let existed = group_rows::delete(self.db(), id).await?;
        self.reload_group_locked(id).await?;
        self.changed(Change::Group(id));
        Ok(existed)
    }

    /// Creates a copy of a group with these links and stored keys, in one transaction.
    pub(crate) async fn copy_group(
        &self,
        group: &NewGroup<'_>,
        links: &[(i64, i32)],
        keys: &[SealedKey],
    ) -> Result<GroupRow, DbError> {
        let _write = self.inner.write.lock().await;
        let row = group_rows::insert_copy(self.db(), group, links, keys).await?;
        self.reload_group_locked(row.id).await?;
        self.changed(Change::Group(row.id));
        Ok(row)
    }

    /// Sets the display order of groups (nothing the proxy reads); `Some(id)` names a group that
    /// does not exist (then nothing is written).
    pub(crate) async fn reorder_groups(&self, items: &[(i64, i32)]) -> Result<Option<i64>, DbError> {
        let _write = self.inner.write.lock().await;
        group_rows::reorder(self.db(), items).await
    }

    /// Adds members to an aggregate, all or none.
    pub(crate) async fn add_sub_groups(&self, aggregate: i64, links: &[(i64, i32)]) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        group_rows::add_sub_groups(self.db(), aggregate, links).await?;
        self.reload_group_locked(aggregate).await?;
        self.changed(Change::Group(aggregate));
        Ok(())
    }

    /// Sets (or adds) one member's weight.
    pub(crate) async fn set_sub_group(
        &self,
        aggregate: i64,
        member: i64,
        weight: i32,
    ) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        group_rows::set_sub_group(self.db(), aggregate, member, weight).await?;
        self.reload_group_locked(aggregate).await?;
        self.changed(Change::Group(aggregate));
        Ok(())
    }

    /// Removes one member; returns whether it was one.
    pub(crate) async fn remove_sub_group(&self, aggregate: i64, member: i64) -> Result<bool, DbError> {
        let _write = self.inner.write.lock().await;
        let removed = group_rows::remove_sub_group(self.db(), aggregate, member).await?;
        self.reload_group_locked(aggregate).await?;
        self.changed(Change::Group(aggregate));
        Ok(removed)
    }

    // ----- Policies ------------------------------------------------------------------------

    /// Creates a policy (attached to no group yet, so nothing else changes).
    pub(crate) async fn create_policy(&self, policy: &NewPolicy<'_>) -> Result<PolicyRow, DbError> {
        let _write = self.inner.write.lock().await;
        policy_rows::insert(self.db(), policy).await
    }

    /// Replaces a policy; every group it is attached to serves the new rules from its next
    /// request, on every node. `None` when it does not exist.
    pub(crate) async fn update_policy(
        &self,
        id: i64,
        policy: &NewPolicy<'_>,
    ) -> Result<Option<PolicyRow>, DbError> {
        let _write = self.inner.write.lock().await;
        let Some(row) = policy_rows::update(self.db(), id, policy).await? else {
            return Ok(None);
        };
        let groups = policy_rows::groups_of(self.db(), id).await?;
        self.reload_groups_locked(&groups).await?;
        Ok(Some(row))
    }

    /// Deletes a policy and its attachments; returns whether it existed.
    pub(crate) async fn delete_policy(&self, id: i64) -> Result<bool, DbError> {
        let _write = self.inner.write.lock().await;
        let Some(groups) = policy_rows::delete(self.db(), id).await? else {
            return Ok(false);
        };
        self.reload_groups_locked(&groups).await?;
        Ok(true)
    }

    /// Replaces a group's policies with `(policy id, priority, active)`.
    pub(crate) async fn set_group_policies(
        &self,
        group_id: i64,
        attach: &[(i64, i32, bool)],
    ) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        policy_rows::set_for_group(self.db(), group_id, attach).await?;
        self.reload_groups_locked(&[group_id]).await
    }

    /// Re-reads groups whose rows or policies changed and tells the other nodes.
    async fn reload_groups_locked(&self, ids: &[i64]) -> Result<(), DbError> {
        for &id in ids {
            self.reload_group_locked(id).await?;
            self.changed(Change::Group(id));
        }
        Ok(())
    }

    // ----- Access keys ---------------------------------------------------------------------

    /// Serves the stored access keys, their groups named as `state` names them.
    fn apply_access_keys(&self, state: &State) {
        let names: HashMap<i64, GroupName> = state
            .groups
            .iter()
            .map(|(id, group)| (*id, group.name.clone()))
            .collect();
        self.catalog()
            .proxy_keys
            .access
            .store(&self.access_rows(), &names);
    }

    /// Re-reads the access keys and serves them (another node changed them).
    pub(crate) async fn reload_access_keys(&self) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        self.reload_access_keys_locked().await
    }

    async fn reload_access_keys_locked(&self) -> Result<(), DbError> {
        let rows = access_rows::list(self.db()).await?;
        *self.access_rows() = rows;
        self.apply_access_keys(&self.state());
        Ok(())
    }

    /// Stores a new access key whose key is `key` (kept only as its hash); it works at once,
    /// on every node.
    pub(crate) async fn create_access_key(
        &self,
        fields: &AccessKeyFields<'_>,
        key: &str,
    ) -> Result<AccessKeyRow, DbError> {
        let _write = self.inner.write.lock().await;
        let row = access_rows::insert(
            self.db(),
            fields,
            &access_keys::hash_hex(key),
            &access_keys::hint(key),
        )
        .await?;
        self.access_keys_changed().await?;
        Ok(row)
    }

    /// Replaces an access key's fields; `None` when it does not exist.
    pub(crate) async fn update_access_key(
        &self,
        id: i64,
        fields: &AccessKeyFields<'_>,
    ) -> Result<Option<AccessKeyRow>, DbError> {
        let _write = self.inner.write.lock().await;
        let row = access_rows::update(self.db(), id, fields).await?;
        if row.is_some() {
            self.access_keys_changed().await?;
        }
        Ok(row)
    }

    /// Gives an access key the new key `key`; the old one stops working on every node.
    pub(crate) async fn rotate_access_key(
        &self,
        id: i64,
        key: &str,
    ) -> Result<Option<AccessKeyRow>, DbError> {
        let _write = self.inner.write.lock().await;
        let row = access_rows::set_key(
            self.db(),
            id,
            &access_keys::hash_hex(key),
            &access_keys::hint(key),
        )
        .await?;
        if row.is_some() {
            self.access_keys_changed().await?;
        }
        Ok(row)
    }

    /// Deletes an access key; returns whether it existed.
    pub(crate) async fn delete_access_key(&self, id: i64) -> Result<bool, DbError> {
        let _write = self.inner.write.lock().await;
        let deleted = access_rows::delete(self.db(), id).await?;
        if deleted {
            self.access_keys_changed().await?;
        }
        Ok(deleted)
    }

    async fn access_keys_changed(&self) -> Result<(), DbError> {
        self.reload_access_keys_locked().await?;
        self.changed(Change::AccessKeys);
        Ok(())
    }

    /// Records that a group's keys were validated at `at`.
    pub(crate) async fn mark_validated(&self, id: i64, at: NaiveDateTime) -> Result<(), DbError> {
        let _write = self.inner.write.lock().await;
        group_rows::set_last_validated(self.db(), id, at).await?;
        let mut state = self.state();
        if let Some(group) = state.groups.get_mut(&id) {
            Arc::make_mut(group).last_validated_at = Some(at);
        }
        drop(state);
        self.changed(Change::Group(id));
        Ok(())
    }

    // ----- Keys ----------------------------------------------------------------------------

    fn name_of(&self, group_id: i64) -> Option<GroupName> {
        self.state().groups.get(&group_id).map(|g| g.name.clone())
    }

    /// The stored `key_hash` of each plain key.
    fn hashes(&self, plain: &[String]) -> Vec<String> {
        plain.iter().map(|k| self.cipher().hash(k)).collect()
    }

    /// Adds plain keys to a group (those it already has, by hash, are ignored); they are
    /// selectable at once, or pending until validated when the group says so
    /// (`validate_new_keys`).
    pub(crate) async fn add_keys(&self, group_id: i64, plain: &[String]) -> Result<Added, DbError> {
        let sealed: Vec<(String, SealedKey)> = plain
            .iter()
            .map(|k| (k.clone(), SealedKey::seal(self.cipher(), k)))
            .collect();
        let added = self.add_sealed(group_id, &sealed).await?;
        let total = key_rows::count_in_group(self.db(), group_id).await?;
        Ok(Added { added, total })
    }

    /// Adds keys sealed beforehand (`(plain, sealed)`, unique by hash) as
    /// [`Registry::add_keys`] does; returns how many were new. An import calls it a chunk at a
    /// time, and does not count the group after each.
    pub(crate) async fn add_sealed(
        &self,
        group_id: i64,
        keys: &[(String, SealedKey)],
    ) -> Result<usize, DbError> {
        let _write = self.inner.write.lock().await;
        let sealed: Vec<&SealedKey> = keys.iter().map(|(_, sealed)| sealed).collect();
        let state = match self.name_of(group_id) {
            Some(name) if self.validates_new_keys(name.as_str()) => KeyState::Pending,
            _ => KeyState::Active,
        };
        let added = key_rows::add_new_to_group(self.db(), group_id, &sealed, state.as_str(), now()).await?;
        if let Some(name) = self.name_of(group_id).filter(|_| !added.is_empty()) {
            let plain: HashMap<&str, &str> = keys
                .iter()
                .map(|(plain, sealed)| (sealed.hash.as_str(), plain.as_str()))
                .collect();
            let slots = added.iter().filter_map(|(id, hash)| {
                let plain = plain.get(hash.as_str())?;
                Some(keys::slot(*id, plain, state, 0))
            });
            self.pool().add_keys(name, slots);
            self.changed(Change::Keys(group_id));
            if state == KeyState::Pending {
                self.inner.new_keys.notify_one();
            }
        }
        Ok(added.len())
    }

    /// Whether keys added to this group start pending (its `validate_new_keys`).
    fn validates_new_keys(&self, group: &str) -> bool {
        self.catalog()
            .policy(group)
            .is_some_and(|policy| policy.effective.validate_new_keys())
    }

    /// Deletes these plain keys from a group (found by hash); returns how many and the group's
    /// new total.
    pub(crate) async fn delete_keys(&self, group_id: i64, plain: &[String]) -> Result<(usize, i64), DbError> {
        let hashes = self.hashes(plain);
        let _write = self.inner.write.lock().await;
        let (ids, total) = key_rows::delete_by_hashes(self.db(), group_id, &hashes).await?;
        self.remove_from_pool(group_id, &ids);
        Ok((ids.len(), total))
    }

    /// Deletes a group's keys, all or those with `status`; returns how many.
    pub(crate) async fn clear_keys(
        &self,
        group_id: i64,
        status: Option<KeyStatus>,
    ) -> Result<usize, DbError> {
        let _write = self.inner.write.lock().await;
        let ids = key_rows::delete_in_group(self.db(), group_id, status.map(KeyStatus::as_str)).await?;
        self.remove_from_pool(group_id, &ids);
        Ok(ids.len())
    }

    fn remove_from_pool(&self, group_id: i64, ids: &[i64]) {
        if let Some(name) = self.name_of(group_id).filter(|_| !ids.is_empty()) {
            self.pool()
                .remove_keys(name.as_str(), ids.iter().map(|id| KeyId(*id as u64)));
            self.changed(Change::Keys(group_id));
        }
    }

    /// Makes a group's invalid keys among these plain keys (all when `None`) active again with
    /// their failures reset; returns how many and the group's total.
    pub(crate) async fn restore_keys(
        &self,
        group_id: i64,
        plain: Option<&[String]>,
    ) -> Result<(usize, i64), DbError> {
        let hashes = plain.map(|p| self.hashes(p));
        let _write = self.inner.write.lock().await;
        let (ids, total) = key_rows::restore_invalid(self.db(), group_id, hashes.as_deref(), now()).await?;
        if let Some(name) = self.name_of(group_id).filter(|_| !ids.is_empty()) {
            let active = ids.iter().map(|id| (KeyId(*id as u64), KeyState::Active));
            self.pool().set_states(name.as_str(), active);
            self.recovered(&name, ids.iter().map(|id| KeyId(*id as u64)));
            self.changed(Change::Keys(group_id));
        }
        Ok((ids.len(), total))
    }

    /// Sets one key's status by hand (`active` also clears its failures); `false` when the key
    /// does not exist.
    pub(crate) async fn set_key_status(&self, key_id: i64, status: KeyStatus) -> Result<bool, DbError> {
        let _write = self.inner.write.lock().await;
        let Some(group_id) = key_rows::set_status(self.db(), key_id, status.as_str(), now()).await? else {
            return Ok(false);
        };
        if let Some(name) = self.name_of(group_id) {
            self.pool()
                .set_state(name.as_str(), KeyId(key_id as u64), status.state());
            if status.state() == KeyState::Active {
                self.recovered(&name, [KeyId(key_id as u64)]);
            }
            self.changed(Change::Keys(group_id));
        }
        Ok(true)
    }

    /// Feeds validation outcomes to the pool, whose events persist them like traffic does: a key
    /// that works is active again with its failures reset; a failure blamed on the key is
    /// counted (blacklisted at the group's threshold; a pending key, never proven, at once), a
    /// rate limit cools the key, and a provider failure or a refused validation request leaves
    /// it as it is. Disabled keys are left alone. Returns `(valid, invalid)`.
    pub(crate) fn apply_validation(&self, policy: &GroupPolicy, checks: &[KeyCheck]) -> (usize, usize) {
        let (mut valid, mut invalid) = (0, 0);
        let mut restore = Vec::new();
        for check in checks {
            let state = check.slot.state();
            if check.outcome.is_ok() {
                valid += 1;
                if state != KeyState::Disabled
                    && (state != KeyState::Active || check.slot.consecutive_failures() > 0)
                {
                    restore.push((check.slot.id(), KeyState::Active));
                }
                continue;
            }
            invalid += 1;
            if !matches!(
                state,
                KeyState::Active | KeyState::Degraded | KeyState::Cooling | KeyState::Pending
            ) {
                continue;
            }
            let report = match check.verdict {
                Outcome::Failure { counted: true } if state == KeyState::Pending => Report::Invalidate,
                Outcome::Failure { counted: true } => Report::Failure {
                    blacklist_threshold: policy.health.blacklist_threshold,
                },
                Outcome::Dead => Report::Invalidate,
                Outcome::CoolDown(signal) => Report::CoolDown {
                    duration: policy
                        .health
                        .cool_down
                        .rest(check.slot.backoff_level(), signal.retry_in),
                },
                Outcome::Transient => Report::Transient,
                _ => continue,
            };
            let key = SelectedKey::new(policy.group.name.clone(), Arc::clone(&check.slot));
            self.proxy_pool().report(&key, report);
        }
        if !restore.is_empty() {
            self.recovered(&policy.group.name, restore.iter().map(|(id, _)| *id));
            self.pool().set_states(policy.group.name.as_str(), restore);
        }
        (valid, invalid)
    }

    /// Stores when these keys were validated (`last_validated_at`). Best effort: a database
    /// error is logged, since the outcomes themselves already reached the pool.
    pub(crate) async fn record_validated(&self, checks: &[KeyCheck]) {
        let ids: Vec<i64> = checks.iter().map(|c| c.slot.id().0 as i64).collect();
        if ids.is_empty() {
            return;
        }
        if let Err(err) = key_rows::mark_validated(self.db(), &ids, now()).await {
            tracing::warn!(error = %err, keys = ids.len(), "recording the validation time failed");
        }
    }

    /// Makes the keys that passed validation active again; returns how many changed.
    pub(crate) fn restore_validated(&self, policy: &GroupPolicy, checks: &[KeyCheck]) -> usize {
        let passed = || checks.iter().filter(|c| c.outcome.is_ok());
        let changed = passed()
            .filter(|c| c.slot.state() != KeyState::Active || c.slot.consecutive_failures() > 0)
            .map(|c| c.slot.id());
        self.recovered(&policy.group.name, changed);
        let restored = passed().map(|c| (c.slot.id(), KeyState::Active));
        self.pool().set_states(policy.group.name.as_str(), restored)
    }
}
