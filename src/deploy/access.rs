//! Which replica `haloy exec` and `haloy tunnel` reach: a running replica of the named app,
//! chosen by index (the lowest running one by default), with its container id and address.
//! Only replicas haloyd runs for that app are ever returned, so a tunnel can never be pointed
//! at another address.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Deployer, LiveReplica, Phase};

/// A replica a command or a tunnel may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaTarget {
    pub app: String,
    pub replica: u32,
    pub container_id: String,
    pub ip: IpAddr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    #[error("app `{0}` is not deployed on this server")]
    UnknownApp(String),
    #[error("app `{0}` has no running replica (see `haloy status`)")]
    NoRunningReplica(String),
    #[error("app `{app}` has no running replica {replica}; running: {}", list(.running))]
    NoSuchReplica {
        app: String,
        replica: u32,
        running: Vec<u32>,
    },
}

fn list(indices: &[u32]) -> String {
    indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Running: its task is up and haloyd is not taking it down.
fn is_running(replica: &LiveReplica) -> bool {
    !replica.has_exited()
        && !matches!(
            replica.phase(),
            Phase::Exited | Phase::Stopped | Phase::CrashLooping | Phase::Draining
        )
}

/// Picks `wanted` (or the lowest index) among `replicas`; during a rolling deploy the newest
/// of two replicas with one index wins (the old one is about to leave).
pub fn choose(
    app: &str,
    replicas: &[Arc<LiveReplica>],
    wanted: Option<u32>,
) -> Result<ReplicaTarget, AccessError> {
    let mut running: Vec<&Arc<LiveReplica>> = replicas.iter().filter(|r| is_running(r)).collect();
    running.sort_by_key(|r| (r.replica, std::cmp::Reverse(r.started_instant())));
    let chosen = match wanted {
        None => running.first(),
        Some(index) => running.iter().find(|r| r.replica == index),
    };
    match (chosen, wanted) {
        (Some(r), _) => Ok(ReplicaTarget {
            app: app.to_string(),
            replica: r.replica,
            container_id: r.container_id.clone(),
            ip: r.backend.addr().ip(),
        }),
        (None, None) => Err(AccessError::NoRunningReplica(app.to_string())),
        (None, Some(replica)) => {
            let mut indices: Vec<u32> = running.iter().map(|r| r.replica).collect();
            indices.dedup();
            Err(AccessError::NoSuchReplica {
                app: app.to_string(),
                replica,
                running: indices,
            })
        }
    }
}

impl Deployer {
    /// The running replica of `app` that `haloy exec`/`haloy tunnel` should reach.
    pub fn replica_target(
        &self,
        app: &str,
        replica: Option<u32>,
    ) -> Result<ReplicaTarget, AccessError> {
        let entry = self
            .existing_entry(app)
            .ok_or_else(|| AccessError::UnknownApp(app.to_string()))?;
        let replicas = entry.live_lock().replicas.clone();
        choose(app, &replicas, replica)
    }
}

#[cfg(test)]
#[path = "tests/access.rs"]
mod tests;
