//! IP networks for `TRUSTED_PROXIES`.
//!
//! [`IpNet`] is an address with a prefix length (`10.0.0.0/8`, `fd00::/8`; a bare address is a
//! single host, `/32` or `/128`). [`TrustedProxies`] is the parsed list: a peer inside it may set
//! `X-Forwarded-For` / `X-Real-IP`; with an empty list (the default) no forwarding header is
//! trusted and the client IP is always the TCP peer.

use std::{fmt, net::IpAddr, str::FromStr};

/// An IPv4 or IPv6 network: the address with its host bits cleared, and a prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IpNet(ipnet::IpNet);

impl IpNet {
    /// The network of `addr` with `prefix` leading bits; `None` when the prefix is longer than
    /// the address (32 for IPv4, 128 for IPv6). Host bits are cleared.
    pub(crate) fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        ipnet::IpNet::new(addr, prefix).ok().map(|net| Self(net.trunc()))
    }

    /// The network address.
    pub(crate) fn addr(&self) -> IpAddr {
        self.0.network()
    }

    /// The prefix length.
    pub(crate) fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `ip` is inside this network. IPv4 addresses seen as IPv4-mapped IPv6 (a
    /// dual-stack listener reports `::ffff:10.0.0.1`) match IPv4 networks, and the other way
    /// round; `ipnet` alone never matches across families.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (ipnet::IpNet::V4(_), IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| self.0.contains(&IpAddr::V4(v4))),
            (ipnet::IpNet::V6(_), IpAddr::V4(v4)) => self.0.contains(&IpAddr::V6(v4.to_ipv6_mapped())),
            _ => self.0.contains(&ip),
        }
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpNet")
            .field("addr", &self.addr())
            .field("prefix", &self.prefix())
            .finish()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix())
    }
}

/// Why a string is not an [`IpNet`]; the text completes "`"value"` is not …".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IpNetError {
    /// Not an address, or a malformed prefix.
    #[error("an IP address or CIDR range (e.g. 10.0.0.0/8, 192.168.1.10, fd00::/8)")]
    Malformed,
    /// The prefix is longer than the address.
    #[error("a CIDR range: the prefix must be 0-{max} for {family}")]
    PrefixTooLong {
        /// 32 or 128.
        max: u8,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::Malformed)?;
        let (max, family) = if addr.is_ipv4() {
            (32, "IPv4")
        } else {
            (128, "IPv6")
        };
        let prefix = match prefix {
            None => max,
            Some(digits)
                if !digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                digits
                    .parse::<u8>()
                    .map_err(|_| IpNetError::PrefixTooLong { max, family })?
            }
            Some(_) => return Err(IpNetError::Malformed),
        };
        Self::new(addr, prefix).ok_or(IpNetError::PrefixTooLong { max, family })
    }
}

/// The peers allowed to set forwarding headers (`TRUSTED_PROXIES`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts the peers inside `nets`.
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `peer` may set forwarding headers.
    pub(crate) fn contains(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(peer))
    }

    /// Whether no peer is trusted.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trusted networks.
    #[cfg(test)]
    pub(crate) fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn v4_ranges() {
        let lan = net("192.168.0.0/16");
        assert!(lan.contains(ip("192.168.0.1")));
        assert!(lan.contains(ip("192.168.255.255")));
        assert!(!lan.contains(ip("192.169.0.1")));
        assert!(!lan.contains(ip("10.0.0.1")));
        assert_eq!(lan.to_string(), "192.168.0.0/16");
    }

    #[test]
    fn host_bits_are_cleared() {
        let n = net("10.1.2.3/8");
        assert_eq!(n.addr(), ip("10.0.0.0"));
        assert_eq!(n.prefix(), 8);
        assert!(n.contains(ip("10.200.0.1")));
    }

    #[test]
    fn bare_addresses_and_slash_32_are_single_hosts() {
        for single in [net("127.0.0.1"), net("127.0.0.1/32")] {
            assert_eq!(single.prefix(), 32);
            assert!(single.contains(ip("127.0.0.1")));
            assert!(!single.contains(ip("127.0.0.2")));
        }
        let v6 = net("::1");
        assert_eq!(v6.prefix(), 128);
        assert!(v6.contains(ip("::1")));
        assert!(!v6.contains(ip("::2")));
    }

    #[test]
    fn slash_0_matches_everything_of_its_family() {
        let all_v4 = net("0.0.0.0/0");
        assert!(all_v4.contains(ip("1.2.3.4")));
        assert!(all_v4.contains(ip("255.255.255.255")));
        assert!(!all_v4.contains(ip("2001:db8::1")));
        let all_v6 = net("::/0");
        assert!(all_v6.contains(ip("2001:db8::1")));
        assert!(all_v6.contains(ip("::1")));
    }

    #[test]
    fn v6_ranges() {
        let ula = net("fd00::/8");
        assert!(ula.contains(ip("fd12:3456::1")));
        assert!(!ula.contains(ip("fe80::1")));
        let doc = net("2001:db8:abcd::/48");
        assert!(doc.contains(ip("2001:db8:abcd:ffff::1")));
        assert!(!doc.contains(ip("2001:db8:abce::1")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("::ffff:10.0.0.7")));
        assert!(!n.contains(ip("::ffff:11.0.0.7")));
        let mapped = net("::ffff:10.0.0.0/104");
        assert!(mapped.contains(ip("10.1.1.1")));
    }

    #[test]
    fn invalid_entries() {
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::PrefixTooLong {
                max: 32,
                family: "IPv4"
            })
        );
        assert_eq!(
            "::/129".parse::<IpNet>(),
            Err(IpNetError::PrefixTooLong {
                max: 128,
                family: "IPv6"
            })
        );
        assert_eq!("10.0.0.0/999".parse::<IpNet>().unwrap_err().to_string(), {
            "a CIDR range: the prefix must be 0-32 for IPv4"
        });
        for bad in [
            "",
            "localhost",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "1.2.3.4/1000",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_list() {
        let trusted = TrustedProxies::new(vec![net("10.0.0.0/8"), net("::1")]);
        assert!(trusted.contains(ip("10.9.9.9")));
        assert!(trusted.contains(ip("::1")));
        assert!(!trusted.contains(ip("127.0.0.1")));
        assert!(!trusted.is_empty());
        assert_eq!(trusted.nets().len(), 2);
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert!(!none.contains(ip("127.0.0.1")));
    }
}
