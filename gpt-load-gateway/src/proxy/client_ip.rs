//! The client address the request log and `${CLIENT_IP}` see.
//!
//! The TCP peer, unless the peer is one of `TRUSTED_PROXIES`: then the right-most address of
//! `X-Forwarded-For` (or `X-Real-IP`) that is not itself a trusted proxy. gpt-load trusts these
//! headers from anyone, which lets any client choose its logged address.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::extract::ConnectInfo;
use gpt_load_tower::context::ClientIp;
use http::{HeaderMap, Request};

use crate::config::ip_net::TrustedProxies;

/// The client address for a request from `peer` with these headers.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !trusted.contains(**ip)) {
        return *ip;
    }
    if let Some(ip) = forwarded.first() {
        return *ip;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

/// The stack's request mapping that inserts [`ClientIp`], from axum's `ConnectInfo` and the
/// forwarding headers of trusted peers.
pub(crate) fn insert_client_ip<B>(trusted: TrustedProxies) -> impl Fn(Request<B>) -> Request<B> + Clone {
    let trusted = Arc::new(trusted);
    move |mut req| {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
            let ip = client_ip(peer.ip(), req.headers(), &trusted);
            req.extensions_mut().insert(ClientIp(ip));
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(list: &str) -> TrustedProxies {
        TrustedProxies::new(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect(),
        )
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        h
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_address() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &headers("1.2.3.4"), &trusted("")), peer);
        assert_eq!(client_ip(peer, &headers("1.2.3.4"), &trusted("10.0.0.0/8")), peer);
    }

    #[test]
    fn trusted_proxies_forward_the_client() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let t = trusted("10.0.0.0/8, 192.168.1.1");
        assert_eq!(
            client_ip(proxy, &headers("198.51.100.7, 192.168.1.1"), &t),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &headers("spoofed, 198.51.100.7"), &t),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let mut real = HeaderMap::new();
        real.insert("x-real-ip", HeaderValue::from_static("198.51.100.8"));
        assert_eq!(
            client_ip(proxy, &real, &t),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &t), proxy);
    }
}
