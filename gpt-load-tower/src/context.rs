//! Per-request facts that several layers share through request extensions.
//!
//! | extension | written by | read by |
//! |---|---|---|
//! | [`Principal`] | [`auth`](crate::auth) | every layer below it |
//! | [`RoutedGroup`] | [`rewrite`](crate::rewrite) (aggregate groups) | keys, blacklist, upstream, log |
//! | [`ClientIp`] | the embedding application | [`log`](crate::log), header rules |
//!
//! [`target_group`] answers "which group's keys and upstreams serve this request": the routed
//! sub-group of an aggregate when there is one, otherwise the group named in the URL.
//!
//! # What an attempt used
//!
//! [`AttemptKey`] (a key's id, the group it was selected in, and the key itself, which masks
//! itself) and [`AttemptUpstream`] (an upstream's base URL) name what one attempt used without the
//! live state behind it. [`keys`](crate::keys) and [`upstream`](crate::upstream) produce them from
//! their [`SelectedKey`](crate::keys::SelectedKey) and [`UpstreamTarget`](crate::upstream::UpstreamTarget),
//! and an [`Error`](crate::Error) carries them ([`Error::key`](crate::Error::key),
//! [`Error::upstream_target`](crate::Error::upstream_target)), so that the error type and
//! [`telemetry`](crate::telemetry) depend on this module only, not on the layers that keep the
//! live key and upstream state. A layer that needs the live slot looks it up by
//! [`KeyId`] in its pool, or reads [`SelectedKey`](crate::keys::SelectedKey) from the response.
//!
//! # Example
//!
//! ```
//! use gpt_load_tower::{channel::ChannelKind, context::{Principal, RoutedGroup, target_group}};
//!
//! let principal = Principal::new("all-models".into(), ChannelKind::OpenAi).with_route_prefix_len("/proxy/all-models".len());
//! assert_eq!(principal.forward_path("/proxy/all-models/v1/models"), "/v1/models");
//!
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(principal);
//! assert_eq!(target_group(req.extensions()).unwrap().as_str(), "all-models");
//! req.extensions_mut().insert(RoutedGroup("openai-eu".into()));
//! assert_eq!(target_group(req.extensions()).unwrap().as_str(), "openai-eu");
//! ```

use std::{borrow::Borrow, fmt, net::IpAddr, sync::Arc};

use http::Extensions;

use crate::{channel::ChannelKind, secret::ApiKey};

/// The name of a group, as it appears in `/proxy/{group}/…`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(Arc<str>);

impl GroupName {
    /// Creates a group name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for metric labels and records without copying.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl Borrow<str> for GroupName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for GroupName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for GroupName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for GroupName {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The authenticated caller's view of the request: which group the URL named, which API
/// format (channel) that group speaks and, when the caller presented an access key (a proxy key
/// kept as a record of its own), which one and the models it may ask for.
///
/// Inserted by [`ProxyKeyAuth`](crate::auth::ProxyKeyAuth); applications that authenticate in
/// their own way can insert it themselves.
///
/// ```
/// use std::sync::Arc;
/// use gpt_load_tower::{channel::ChannelKind, context::{AccessKeyId, Principal}, rewrite::ModelFilter};
///
/// let models = Arc::new(ModelFilter::new(["gpt-4o*"], [] as [&str; 0]).unwrap());
/// let principal = Principal::new("openai".into(), ChannelKind::OpenAi)
///     .with_access_key(AccessKeyId(3))
///     .with_allowed_models(models);
/// assert_eq!(principal.access_key(), Some(AccessKeyId(3)));
/// assert!(principal.allows_model("gpt-4o-mini"));
/// assert!(!principal.allows_model("claude-3-5-haiku"));
/// ```
#[derive(Clone, Debug)]
pub struct Principal {
    group: GroupName,
    channel: ChannelKind,
    route_prefix_len: usize,
    access_key: Option<AccessKeyId>,
    allowed_models: Option<Arc<dyn AllowedModels>>,
}

impl Principal {
    /// A principal for `group`, whose upstream API format is `channel`.
    pub fn new(group: GroupName, channel: ChannelKind) -> Self {
        Self {
            group,
            channel,
            route_prefix_len: 0,
            access_key: None,
            allowed_models: None,
        }
    }

    /// Records that the caller presented the access key `id` (logged with every attempt, so
    /// usage can be counted per access key).
    #[must_use]
    pub fn with_access_key(mut self, id: AccessKeyId) -> Self {
        self.access_key = Some(id);
        self
    }

    /// The access key the caller presented, when it was one.
    pub fn access_key(&self) -> Option<AccessKeyId> {
        self.access_key
    }

    /// Limits the models the caller may ask for; [`Rewrite`](crate::rewrite::Rewrite) refuses any
    /// other model with `403` before a key is spent.
    #[must_use]
    pub fn with_allowed_models(mut self, models: Arc<dyn AllowedModels>) -> Self {
        self.allowed_models = Some(models);
        self
    }

    /// Whether the caller's models are limited at all.
    pub fn limits_models(&self) -> bool {
        self.allowed_models.is_some()
    }

    /// Whether the caller may ask for `model` (always, without a limit on models).
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|m| m.allows(model))
    }

    /// The group named in the URL.
    pub fn group(&self) -> &GroupName {
        &self.group
    }

    /// The group's channel.
    pub fn channel(&self) -> ChannelKind {
        self.channel
    }

    /// Records that the first `len` bytes of the request path (`/proxy/{group}`) address the
    /// gateway and must not be forwarded upstream.
    #[must_use]
    pub fn with_route_prefix_len(mut self, len: usize) -> Self {
        self.route_prefix_len = len;
        self
    }

    /// The part of `path` that is forwarded upstream: `path` without the route prefix, always
    /// starting with `/`.
    pub fn forward_path<'a>(&self, path: &'a str) -> &'a str {
        let rest = path.get(self.route_prefix_len..).unwrap_or("");
        if rest.is_empty() { "/" } else { rest }
    }
}

/// Which models a caller may ask for ([`Principal::with_allowed_models`]).
/// [`ModelFilter`](crate::rewrite::ModelFilter) is one.
pub trait AllowedModels: fmt::Debug + Send + Sync + 'static {
    /// Whether `model` is allowed.
    fn allows(&self, model: &str) -> bool;
}

/// The identifier of an access key: a proxy key kept as a record of its own, with its own groups,
/// models and limits (the database row id in the gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKeyId(pub u64);

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The sub-group an aggregate group routed this request to.
#[derive(Clone, Debug)]
pub struct RoutedGroup(pub GroupName);

/// The number of the attempt a request is on, from 1. Set by the retry policy on each retry; a
/// request without it is on its first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptNumber(pub u32);

/// The client's IP address as the embedding application determined it (for example from the
/// peer address, or `X-Forwarded-For` when the peer is a trusted proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The identifier of an upstream key (the database row id in the gateway).
///
/// Also reachable as [`keys::KeyId`](crate::keys::KeyId).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u64);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The key one attempt used: its id, the group it was selected in, and the key itself (an
/// [`ApiKey`], which only ever prints its mask). Cheap to clone when made from a selection.
///
/// Carried by an [`Error`](crate::Error) from [`KeySelect`](crate::keys::KeySelect) down
/// ([`Error::key`](crate::Error::key)), so that retrying and logging a failed attempt need no
/// access to the pool's live [`KeySlot`](crate::keys::KeySlot). Made from a
/// [`SelectedKey`](crate::keys::SelectedKey) with `From`.
///
/// ```
/// use gpt_load_tower::context::{AttemptKey, KeyId};
///
/// let key = AttemptKey::new(KeyId(7), "openai".into(), "sk-live-0123456789abcdef".into());
/// assert_eq!((key.id(), key.group().as_str()), (KeyId(7), "openai"));
/// assert_eq!(key.secret().masked(), "sk-l****cdef");
/// assert!(!format!("{key:?}").contains("0123456789"));
/// ```
#[derive(Clone)]
pub struct AttemptKey {
    id: KeyId,
    group: GroupName,
    secret: AttemptSecret,
}

/// Where an attempt's key value is: a copy of its own, or the pool's slot, which every logged
/// attempt shares instead of copying the key.
#[derive(Clone)]
enum AttemptSecret {
    Own(ApiKey),
    Held(Arc<dyn HoldsKey>),
}

/// Something that keeps a key's value for as long as it lives (the pool's slot).
pub(crate) trait HoldsKey: Send + Sync {
    /// The key.
    fn secret(&self) -> &ApiKey;
}

impl AttemptKey {
    /// The key `id` of `group`, whose value is `secret`.
    pub fn new(id: KeyId, group: GroupName, secret: ApiKey) -> Self {
        Self {
            id,
            group,
            secret: AttemptSecret::Own(secret),
        }
    }

    /// The key `id` of `group`, whose value `holder` keeps.
    pub(crate) fn held(id: KeyId, group: GroupName, holder: Arc<dyn HoldsKey>) -> Self {
        Self {
            id,
            group,
            secret: AttemptSecret::Held(holder),
        }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The group the key was selected in (the sub-group, for aggregate groups).
    pub fn group(&self) -> &GroupName {
        &self.group
    }

    /// The key, for redacting text that may echo it and for its mask.
    pub fn secret(&self) -> &ApiKey {
        match &self.secret {
            AttemptSecret::Own(secret) => secret,
            AttemptSecret::Held(holder) => holder.secret(),
        }
    }
}

impl fmt::Debug for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptKey")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("secret", self.secret())
            .finish()
    }
}

/// The upstream one attempt was sent to, by its base URL (which never contains a key). Cheap to
/// clone.
///
/// Carried by an [`Error`](crate::Error) from
/// [`UpstreamBalance`](crate::upstream::UpstreamBalance) down
/// ([`Error::upstream_target`](crate::Error::upstream_target)). Made from an
/// [`UpstreamTarget`](crate::upstream::UpstreamTarget) with `From`.
///
/// ```
/// use gpt_load_tower::context::AttemptUpstream;
///
/// let upstream = AttemptUpstream::new("https://api.openai.example");
/// assert_eq!(upstream.url(), "https://api.openai.example");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptUpstream(Arc<str>);

impl AttemptUpstream {
    /// An upstream named by its base URL.
    pub fn new(url: impl Into<Arc<str>>) -> Self {
        Self(url.into())
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.0
    }

    /// The URL as a shared string, for records without copying.
    pub fn shared_url(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for AttemptUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The group whose keys and upstreams serve the request: [`RoutedGroup`] when present, else the
/// [`Principal`]'s group.
pub fn target_group(extensions: &Extensions) -> Option<&GroupName> {
    extensions
        .get::<RoutedGroup>()
        .map(|routed| &routed.0)
        .or_else(|| extensions.get::<Principal>().map(Principal::group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_path_strips_the_route_prefix() {
        let principal = Principal::new("g".into(), ChannelKind::OpenAi).with_route_prefix_len(8);
        assert_eq!(principal.forward_path("/proxy/g/v1/models"), "/v1/models");
        assert_eq!(principal.forward_path("/proxy/g"), "/");
        let whole = Principal::new("g".into(), ChannelKind::OpenAi);
        assert_eq!(whole.forward_path("/v1/models"), "/v1/models");
    }

    #[test]
    fn target_group_prefers_the_routed_sub_group() {
        let mut ext = Extensions::new();
        assert!(target_group(&ext).is_none());
        ext.insert(Principal::new("agg".into(), ChannelKind::OpenAi));
        assert_eq!(target_group(&ext).unwrap().as_str(), "agg");
        ext.insert(RoutedGroup("sub".into()));
        assert_eq!(target_group(&ext).unwrap().as_str(), "sub");
    }
}
