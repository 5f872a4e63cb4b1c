//! Inserts the target group's effective settings into the request, for the library layers below
//! to read: retries, failover statuses and blacklist threshold, request-body logging, the
//! upstream client's timeouts and proxy, and (for a group with a tokens-per-minute limit) the
//! output tokens to reserve.
//!
//! The stack places it twice: under authentication (the URL's group: the request log's setting,
//! and for a standard group everything the attempts read) and under aggregate routing (the
//! sub-group actually used, whose settings then govern the attempts).

use gpt_load_tower::context::{RoutedGroup, target_group};
use http::{Extensions, Request};

use super::Catalog;

/// The first placement: the URL group's settings (see the [module docs](self)).
pub(crate) fn insert_group_policy<B>(catalog: Catalog) -> impl Fn(Request<B>) -> Request<B> + Clone {
    move |mut req| {
        insert(&catalog, req.extensions_mut());
        req
    }
}

/// The second placement: the sub-group's settings, when aggregate routing chose one. A request
/// to a standard group already carries its group's from the first placement, and inserting them
/// again would cost an allocation per setting per request.
pub(crate) fn insert_routed_group_policy<B>(catalog: Catalog) -> impl Fn(Request<B>) -> Request<B> + Clone {
    move |mut req| {
        if req.extensions().get::<RoutedGroup>().is_some() {
            insert(&catalog, req.extensions_mut());
        }
        req
    }
}

fn insert(catalog: &Catalog, ext: &mut Extensions) {
    let Some(policy) = target_group(ext).and_then(|g| catalog.policy(g.as_str())) else {
        return;
    };
    ext.insert(policy.retry);
    ext.insert(policy.health.clone());
    ext.insert(policy.log);
    ext.insert(policy.client.clone());
    if let Some(reserve) = policy.token_reserve {
        ext.insert(reserve);
    }
}
