//! Which address is the client: the socket peer, or `X-Forwarded-For` when (and only when) the
//! peer is a trusted proxy. Pure functions; no I/O.
//!
//! We walk `X-Forwarded-For` from the right, skipping trusted hops, and take the first untrusted
//! address: entries further left were written by the client and prove nothing.

use std::net::IpAddr;

use ipnet::IpNet;

/// The client's address, given the socket peer and the `X-Forwarded-For` values (in order).
pub fn resolve<'a>(peer: IpAddr, xff: impl Iterator<Item = &'a str>, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<&str> = xff.flat_map(|v| v.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            // Garbage in the chain: stop at the last address we could vouch for.
            None => break,
        }
    }
    client
}

/// Whether `ip` (IPv4-mapped IPv6 included) is in one of the trusted proxies' networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Accepts `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(ip("203.0.113.9"), ["1.1.1.1"].into_iter(), &t), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let t = nets(&["10.0.0.0/8"]);
        let xff = ["6.6.6.6, 198.51.100.7", "10.1.2.3"];
        assert_eq!(resolve(ip("10.0.0.1"), xff.into_iter(), &t), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(ip("10.0.0.1"), ["6.6.6.6, nonsense"].into_iter(), &t), ip("10.0.0.1"));
        assert_eq!(resolve(ip("10.0.0.1"), ["[2001:db8::1]:443"].into_iter(), &t), ip("2001:db8::1"));
    }

    #[test]
    fn ipv4_mapped_peer_matches_ipv4_cidr() {
        let t = nets(&["127.0.0.0/8"]);
        assert_eq!(resolve(ip("::ffff:127.0.0.1"), ["192.0.2.1"].into_iter(), &t), ip("192.0.2.1"));
    }

    proptest! {
        /// With no trusted proxies, nothing in the header can change the answer.
        #[test]
        fn no_trust_means_peer(header in ".{0,200}", a in any::<[u8; 4]>()) {
            let peer = IpAddr::from(a);
            prop_assert_eq!(resolve(peer, [header.as_str()].into_iter(), &[]), peer);
        }
    }
}
