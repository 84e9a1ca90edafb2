//! SNI → certificate lookup for the HTTPS listener. The map is an immutable snapshot behind
//! `ArcSwap`: a handshake reads it lock-free, a renewal publishes a new map, and connections
//! already established keep the key they negotiated with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::proxy::normalize_host;

/// Keyed by normalized names the operator configured: looked up, never filled, by clients,
/// so a fast hasher is safe.
pub type CertMap = foldhash::HashMap<String, Arc<CertifiedKey>>;

pub struct SniResolver {
    by_name: ArcSwap<CertMap>,
    /// Self-signed fallback for unknown SNI, or `None` to refuse those handshakes.
    fallback: Option<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.by_name.load().keys().cloned().collect();
        f.debug_struct("SniResolver")
            .field("names", &names)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl SniResolver {
    pub fn new(fallback: Option<Arc<CertifiedKey>>) -> Self {
        SniResolver {
            by_name: ArcSwap::from_pointee(CertMap::default()),
            fallback,
        }
    }

    /// Publishes a complete new name → certificate map in one atomic step.
    pub fn replace(&self, map: CertMap) {
        self.by_name.store(Arc::new(map));
    }

    pub fn lookup(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.by_name
            .load()
            .get(normalize_host(host).as_ref())
            .cloned()
    }

    /// True when `host`, a name [`normalize_host`] returned, has a certificate (the proxy
    /// asks per request with the name it normalized for routing: no second pass over it).
    pub fn contains_normalized(&self, host: &str) -> bool {
        self.by_name.load().contains_key(host)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI (e.g. a bare IP) is treated like an unknown name.
        match client_hello.server_name() {
            Some(name) => self.lookup(name).or_else(|| self.fallback.clone()),
            None => self.fallback.clone(),
        }
    }
}
