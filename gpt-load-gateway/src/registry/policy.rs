//! Inserts the target group's effective settings into the request, for the library layers below
//! to read: retries, failover statuses and blacklist threshold, request-body logging, the
//! upstream client's timeouts and proxy, and (for a group with a tokens-per-minute limit) the
//! output tokens to reserve.
//!
//! The stack places it twice: under authentication (the URL's group, for the request log) and
//! under aggregate routing (the sub-group actually used, whose settings govern the attempts).

use gpt_load_tower::context::target_group;
use http::Request;

use super::Catalog;

/// See the [module docs](self): the stack's request mapping over `catalog`.
pub(crate) fn insert_group_policy<B>(catalog: Catalog) -> impl Fn(Request<B>) -> Request<B> + Clone {
    move |mut req| {
        if let Some(policy) = target_group(req.extensions()).and_then(|g| catalog.policy(g.as_str())) {
            let ext = req.extensions_mut();
            ext.insert(policy.retry);
            ext.insert(policy.health.clone());
            ext.insert(policy.log);
            ext.insert(policy.client.clone());
            if let Some(reserve) = policy.token_reserve {
                ext.insert(reserve);
            }
        }
        req
    }
}
