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

use crate::channel::ChannelKind;

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

/// The authenticated caller's view of the request: which group the URL named and which API
/// format (channel) that group speaks.
///
/// Inserted by [`ProxyKeyAuth`](crate::auth::ProxyKeyAuth); applications that authenticate in
/// their own way can insert it themselves.
#[derive(Clone, Debug)]
pub struct Principal {
    group: GroupName,
    channel: ChannelKind,
    route_prefix_len: usize,
}

impl Principal {
    /// A principal for `group`, whose upstream API format is `channel`.
    pub fn new(group: GroupName, channel: ChannelKind) -> Self {
        Self {
            group,
            channel,
            route_prefix_len: 0,
        }
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

/// The sub-group an aggregate group routed this request to.
#[derive(Clone, Debug)]
pub struct RoutedGroup(pub GroupName);

/// The client's IP address as the embedding application determined it (for example from the
/// peer address, or `X-Forwarded-For` when the peer is a trusted proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

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
