//! The client's IP address, with trusted-proxy handling.
//!
//! `X-Forwarded-For` is written by the client first and by each proxy after it, so
//! only its right end can be trusted. [`ClientIp`] starts from the TCP peer: if the
//! peer is not a trusted proxy, the peer *is* the client and the header is ignored
//! (a client cannot spoof its way to another bucket). If it is trusted, the header is
//! walked right to left over trusted addresses, and the first untrusted one is the
//! client. With no trusted proxies configured, the header is never read.
//!
//! IPv6 clients are grouped by /64 by default (one customer usually holds a whole
//! /64, so per-address limits would be trivial to dodge).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use larder_core::RequestView;

use crate::quota::PolicyError;

/// Finds the client address of a request. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Arc<[IpNet]>,
    header: Arc<str>,
    v6_prefix: u8,
    v4_prefix: u8,
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientIp {
    /// The TCP peer's address; no proxy is trusted.
    #[must_use]
    pub fn new() -> Self {
        Self {
            trusted: Arc::from(Vec::new()),
            header: Arc::from("x-forwarded-for"),
            v6_prefix: 64,
            v4_prefix: 32,
        }
    }

    /// Trusts proxies in these networks (`"10.0.0.0/8"`, `"::1"`, `"172.16.0.0/12"`).
    ///
    /// # Errors
    /// [`PolicyError::Network`] naming an entry that does not parse.
    pub fn trust_proxies<I, S>(mut self, networks: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<IpNet> = self.trusted.to_vec();
        for net in networks {
            let raw = net.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let parsed = raw
                .parse::<IpNet>()
                .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| PolicyError::Network {
                    input: raw.to_owned(),
                })?;
            list.push(parsed);
        }
        self.trusted = Arc::from(list);
        Ok(self)
    }

    /// Reads the trusted proxies from `TRUSTED_PROXIES` (comma-separated CIDRs); unset
    /// or empty trusts none.
    ///
    /// # Errors
    /// [`PolicyError::Network`] naming an entry that does not parse.
    pub fn from_env() -> Result<Self, PolicyError> {
        let raw = std::env::var("TRUSTED_PROXIES").unwrap_or_default();
        Self::new().trust_proxies(raw.split(','))
    }

    /// Reads the forwarded chain from another header (default `X-Forwarded-For`).
    #[must_use]
    pub fn header(mut self, name: &str) -> Self {
        self.header = Arc::from(name.to_ascii_lowercase());
        self
    }

    /// Groups IPv6 clients by this prefix length (default 64; 128 is per address).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.v6_prefix = bits.min(128);
        self
    }

    /// Groups IPv4 clients by this prefix length (default 32, per address).
    #[must_use]
    pub fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.v4_prefix = bits.min(32);
        self
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request, or `None` when the server did not expose the
    /// peer address.
    #[must_use]
    pub fn resolve(&self, req: &dyn RequestView) -> Option<IpAddr> {
        let peer = canonical(req.peer_ip()?);
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        // Every header line, in order; entries are comma-separated within a line.
        let lines = req.header_values(&self.header);
        let mut entries: Vec<&str> = Vec::new();
        for line in &lines {
            let Ok(text) = std::str::from_utf8(line) else {
                // Unreadable: trust nothing beyond the proxy that sent it.
                return Some(peer);
            };
            entries.extend(text.split(','));
        }
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                // A malformed hop: the chain cannot be followed further; the last
                // trusted hop is the best-known client.
                return Some(client);
            };
            client = ip;
            if !self.is_trusted(ip) {
                return Some(ip);
            }
        }
        Some(client)
    }

    /// The key part for a client address: the address, or its network when grouped
    /// (`ip:203.0.113.9`, `ip:2001:db8:1:2::/64`).
    #[must_use]
    pub fn key_for(&self, ip: IpAddr) -> String {
        let prefix = match ip {
            IpAddr::V4(_) => self.v4_prefix,
            IpAddr::V6(_) => self.v6_prefix,
        };
        let full = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix >= full {
            if let IpAddr::V4(v4) = ip {
                // Every request of an IPv4 client comes here: without `format!`.
                let mut key = String::with_capacity(18);
                key.push_str("ip:");
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        key.push('.');
                    }
                    key.push_str(digits.format(octet));
                }
                return key;
            }
            return format!("ip:{ip}");
        }
        match IpNet::new(ip, prefix) {
            Ok(net) => format!("ip:{}", net.trunc()),
            Err(_) => format!("ip:{ip}"),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are IPv4 clients.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]:443`, with optional spaces and quotes.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (addr, _) = rest.split_once(']')?;
        return addr
            .parse::<Ipv6Addr>()
            .ok()
            .map(|v6| canonical(IpAddr::V6(v6)));
    }
    let (addr, port) = entry.rsplit_once(':')?;
    if port.parse::<u16>().is_err() || addr.contains(':') {
        return None;
    }
    addr.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_core::request::SimpleRequest;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn req(peer: &str, xff: &[&str]) -> SimpleRequest {
        xff.iter().fold(
            SimpleRequest::new("GET", "/").with_peer(ip(peer)),
            |r, v| r.with_header("x-forwarded-for", v),
        )
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let c = ClientIp::new();
        assert_eq!(
            c.resolve(&req("203.0.113.9", &["1.1.1.1"])),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(c.resolve(&SimpleRequest::new("GET", "/")), None);
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_the_header() {
        let c = ClientIp::new().trust_proxies(["10.0.0.0/8"]).unwrap();
        // The peer is not a proxy of ours: whatever it claims, it is the client.
        assert_eq!(
            c.resolve(&req("198.51.100.7", &["10.0.0.1, 1.2.3.4"])),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn walks_right_to_left_over_trusted_hops() {
        let c = ClientIp::new()
            .trust_proxies(["10.0.0.0/8", "192.168.0.0/16"])
            .unwrap();
        // The client prepended a fake entry; the rightmost untrusted one is real.
        assert_eq!(
            c.resolve(&req("10.0.0.1", &["6.6.6.6, 203.0.113.5, 192.168.1.1"])),
            Some(ip("203.0.113.5"))
        );
        // Several header lines are one list, in order.
        assert_eq!(
            c.resolve(&req("10.0.0.1", &["6.6.6.6", "203.0.113.5", "10.1.1.1"])),
            Some(ip("203.0.113.5"))
        );
        // Ports and brackets are tolerated.
        assert_eq!(
            c.resolve(&req("10.0.0.1", &["[2001:db8::1]:443"])),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            c.resolve(&req("10.0.0.1", &["203.0.113.5:1234"])),
            Some(ip("203.0.113.5"))
        );
        // A trusted peer without the header is the client.
        assert_eq!(c.resolve(&req("10.0.0.1", &[])), Some(ip("10.0.0.1")));
        // All hops trusted: the leftmost is the best-known client.
        assert_eq!(
            c.resolve(&req("10.0.0.1", &["10.9.9.9, 10.0.0.2"])),
            Some(ip("10.9.9.9"))
        );
    }

    #[test]
    fn malformed_entries_stop_the_walk() {
        let c = ClientIp::new().trust_proxies(["10.0.0.0/8"]).unwrap();
        assert_eq!(
            c.resolve(&req("10.0.0.1", &["1.2.3.4, garbage, 10.0.0.2"])),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            c.resolve(&req("10.0.0.1", &["unknown"])),
            Some(ip("10.0.0.1"))
        );
        assert!(ClientIp::new().trust_proxies(["10.0.0.0/33"]).is_err());
        assert!(ClientIp::new().trust_proxies(["nope"]).is_err());
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_is_v4() {
        let c = ClientIp::new();
        assert_eq!(
            c.key_for(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(
            c.key_for(ip("2001:db8:1:2::1")),
            c.key_for(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            c.key_for(ip("2001:db8:1:2::1")),
            c.key_for(ip("2001:db8:1:3::1"))
        );
        assert_eq!(c.key_for(ip("203.0.113.9")), "ip:203.0.113.9");
        assert_eq!(c.key_for(ip("0.0.0.0")), "ip:0.0.0.0");
        assert_eq!(c.key_for(ip("255.255.255.255")), "ip:255.255.255.255");
        assert_eq!(
            ClientIp::new().ipv6_prefix(128).key_for(ip("2001:db8::1")),
            "ip:2001:db8::1"
        );
        assert_eq!(
            c.resolve(&req("::ffff:203.0.113.9", &[])),
            Some(ip("203.0.113.9"))
        );
    }
}
