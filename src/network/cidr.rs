//! `IpCidr`, the one IP-network type of the crate: haloyd's server config parses
//! `network.subnet` and `proxy.trusted_proxies` into it, CNI checks the bridge subnet with it
//! and the proxy matches peers against it.

use std::net::IpAddr;
use std::str::FromStr;

/// A text that is not an IP network (`IpCidr::from_str`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address or CIDR")]
    NotAnAddress(String),
    #[error("`{0}` has an invalid prefix length")]
    BadPrefix(String),
}

/// An IP network (`10.0.0.0/8`) or a single address (`192.0.2.1`, `::1`: a /32 or /128).
/// The one definition: haloyd's server config parses `trusted_proxies` and `network.subnet`
/// into it, the proxy matches peers with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// `None` when `prefix` is longer than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpCidr> {
        (prefix <= max_prefix(addr)).then_some(IpCidr { addr, prefix })
    }

    /// The network address as written (host bits are kept).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `ip` is inside this network (IPv4-mapped IPv6 peers match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        (a[full] & mask) == (b[full] & mask)
    }
}

impl FromStr for IpCidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `::1`; blanks around the address and the prefix are ignored.
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| CidrError::NotAnAddress(text.to_string()))?;
        let prefix = match prefix {
            None => max_prefix(addr),
            Some(p) => p
                .trim()
                .parse::<u8>()
                .map_err(|_| CidrError::BadPrefix(text.to_string()))?,
        };
        IpCidr::new(addr, prefix).ok_or_else(|| CidrError::BadPrefix(text.to_string()))
    }
}

impl std::fmt::Display for IpCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
#[path = "tests/cidr.rs"]
mod tests;
