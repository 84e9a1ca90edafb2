//! Which app may serve which host while deploys run: a deploy claims its hosts before its
//! rollout starts, under one lock shared by all apps, against both the published route table
//! and the claims of deploys still in progress. Two concurrent deploys of different apps
//! naming one domain thus cannot both pass; without this both rolled out and the second's
//! route was refused only at publish time, after it had "succeeded".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::proxy::RouteTable;

/// The app haloyd publishes its own API under (`api.domain`).
const API_ROUTE_APP: &str = "haloyd-api";

/// Hosts held by deploys in progress: host → (app, deployment id).
#[derive(Debug, Default)]
pub(crate) struct DomainClaims {
    held: Mutex<HashMap<String, (String, String)>>,
}

/// A deploy's hold on its hosts; released when dropped (the rollout ended either way). By
/// then a successful rollout's route table entry holds the hosts.
#[derive(Debug)]
pub(crate) struct DomainClaim {
    claims: Arc<DomainClaims>,
    deployment_id: String,
}

impl DomainClaims {
    /// Claims `hosts` for `app`'s deployment `deployment_id`, or names for each contested
    /// host the app that serves or is deploying it. `table` must be loaded after this
    /// deploy's validation; it is read under the claims lock, and every route change that
    /// adds a host is made by a deploy holding the host's claim.
    pub(crate) fn claim(
        self: &Arc<Self>,
        app: &str,
        deployment_id: &str,
        hosts: &[String],
        table: &RouteTable,
    ) -> Result<DomainClaim, Vec<String>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let problems: Vec<String> = hosts
            .iter()
            .filter_map(|host| {
                let owner = held
                    .get(host)
                    .map(|(owner, _)| owner.as_str())
                    .or_else(|| table.owner(host))?;
                (owner != app).then(|| conflict(host, owner))
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        for host in hosts {
            // A host the same app's running deploy already holds stays with that deploy.
            held.entry(host.clone())
                .or_insert_with(|| (app.to_string(), deployment_id.to_string()));
        }
        Ok(DomainClaim {
            claims: Arc::clone(self),
            deployment_id: deployment_id.to_string(),
        })
    }
}

fn conflict(host: &str, owner: &str) -> String {
    if owner == API_ROUTE_APP {
        format!("domains: `{host}` is haloyd's own API domain (server config `api.domain`)")
    } else {
        format!("domains: `{host}` is already claimed by app `{owner}` on this server; remove it from one of the apps")
    }
}

impl Drop for DomainClaim {
    fn drop(&mut self) {
        let mut held = self.claims.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (_, id)| *id != self.deployment_id);
    }
}

#[cfg(test)]
#[path = "tests/claims.rs"]
mod tests;
