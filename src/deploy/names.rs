//! The deployer as the DNS server's `Directory`: an app's network comes from its live config,
//! its addresses from the proxy's route table (the replicas in rotation that are ready), so a
//! name follows every route swap and every health flip without being told.

use std::net::IpAddr;

use super::Deployer;
use crate::dns::{network_name, Directory};

impl Directory for Deployer {
    fn network_of(&self, ip: IpAddr) -> Option<String> {
        self.entries().into_iter().find_map(|entry| {
            let live = entry.live_lock();
            let config = live.config.as_ref()?;
            live.replicas
                .iter()
                .any(|r| r.backend.addr().ip() == ip)
                .then(|| network_name(config.network.as_deref()).to_string())
        })
    }

    fn addresses(&self, app: &str, network: &str) -> Option<Vec<IpAddr>> {
        let entry = self.existing_entry(app)?;
        let on_network = {
            let live = entry.live_lock();
            let config = live.config.as_ref()?;
            network_name(config.network.as_deref()) == network
        };
        if !on_network {
            return None;
        }
        let addresses = self
            .routes
            .app(app)
            .map(|route| {
                route
                    .backends
                    .iter()
                    .filter(|b| b.is_ready())
                    .map(|b| b.addr().ip())
                    .collect()
            })
            .unwrap_or_default();
        Some(addresses)
    }
}

#[cfg(test)]
#[path = "tests/names.rs"]
mod tests;
