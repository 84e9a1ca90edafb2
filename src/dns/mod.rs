//! Service discovery for replicas: a small DNS server on the bridge gateway that answers
//! `<app>` and `<app>.haloy.internal` with the ready replicas of apps on the asker's `network`
//! and forwards every other name to the host's resolvers. Replicas get it as their only
//! nameserver (`runtime::spec` writes their resolv.conf), so names follow redeploys without
//! restarting anyone.
//!
//! `query` decides one message (answer, refuse or forward) from a `Directory` snapshot; the
//! `Directory` is implemented by `deploy::Deployer` over the proxy's route table (the rotation
//! is what "ready" means for the proxy too). `upstream` picks and talks to the host's
//! resolvers; `server` owns the UDP and TCP sockets.

mod query;
mod server;
mod upstream;

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::network::IpCidr;

pub use query::{decide, Decision, INTERNAL_ZONE};
pub use server::{bind, BoundSockets, DnsServer};
pub use upstream::{host_upstreams, upstreams_from_resolv_conf};

/// The network of apps whose haloy.yaml sets no `network` (Haloy's Docker network name).
pub const DEFAULT_NETWORK: &str = "haloy";

/// Who is reachable under which name; read at every query, so it is always current.
pub trait Directory: Send + Sync {
    /// The `network` of the app whose replica (ready or not) has address `ip`; None for an
    /// address that is no replica's (the host itself, for example).
    fn network_of(&self, ip: IpAddr) -> Option<String>;
    /// The ready replicas' addresses of `app` when that app is on `network`: Some(empty)
    /// for a known app without ready replica (stopped, crashed), None for no such app there.
    fn addresses(&self, app: &str, network: &str) -> Option<Vec<IpAddr>>;
}

/// Where the DNS server listens and whom it asks for other names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Port 53 of each bridge gateway address (what replicas' resolv.conf names).
    pub listen: Vec<SocketAddr>,
    /// Resolvers for names that are not apps', tried in order.
    pub upstream: Vec<SocketAddr>,
    /// Who may ask (the bridge subnets; the host asks from the gateway address). Anyone else
    /// who routes to a gateway gets no answer: this is no open resolver. Empty: anyone.
    pub clients: Vec<IpCidr>,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr} ({proto}): {source}; free the port, or set `dns.enabled: false` in haloyd's config")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
    #[error("no upstream resolver for names outside haloy: {reason}; set `dns.upstream` in haloyd's config")]
    NoUpstream { reason: String },
}

/// The bridge's own address in `subnet`: its first host address, which is what CNI's
/// host-local IPAM gives the bridge as gateway. None for IPv6 or a subnet without hosts.
pub fn bridge_gateway(subnet: IpAddr, prefix: u8) -> Option<IpAddr> {
    let IpAddr::V4(net) = subnet else {
        return None;
    };
    if prefix >= 31 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Some(IpAddr::V4(std::net::Ipv4Addr::from(
        (u32::from(net) & mask) + 1,
    )))
}

/// The network name an app's config stands for (`None` is the shared default).
pub fn network_name(configured: Option<&str>) -> &str {
    configured.unwrap_or(DEFAULT_NETWORK)
}
