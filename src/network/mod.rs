//! Per-task network namespaces and the standard CNI plugins (ADD/DEL of the conflist in cni/),
//! returning each task's IP. The `Network` trait is the seam; teardown is idempotent.
//!
//! `CniNetwork` is the real implementation: `netns` creates/removes the namespaces (nix, no `ip`
//! shell-out), `cni` renders the conflist and executes the plugin binaries. Both sit behind small
//! traits (`NetnsOps`, `PluginExec`) so the ADD/DEL logic is unit-tested without root.

mod cidr;
mod cni;
mod firewall;
mod named;
mod netns;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;

pub use cidr::{CidrError, IpCidr};
pub use cni::{
    check_bridge_name, check_subnet, CniNetwork, CniSettings, PluginExec, PluginOutput,
    ProcessPluginExec,
};
pub use firewall::{table_name as firewall_table_name, Firewall, HostFirewall};
pub use named::{overlaps, NamedSettings, NetworkRecord, NetworkSet, NETWORK_PREFIX};
pub use netns::{HostNetns, NetnsOps};

/// What a task needs to know about its network once CNI ADD succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Bind-mounted network namespace, handed to the OCI spec.
    pub netns_path: PathBuf,
    /// The task's address on the bridge (what the proxy connects to).
    pub ip: IpAddr,
    pub gateway: Option<IpAddr>,
    /// Interface name inside the namespace (`eth0`).
    pub interface: String,
}

/// Gives each task id its own network namespace with an address, and takes it away again.
#[async_trait]
pub trait Network: Send + Sync {
    /// Step one of `attach`: the empty, pinned namespace of `id`. A runtime can hand its path
    /// to the container while `connect` wires it.
    async fn create_namespace(&self, id: &str) -> Result<PathBuf, NetworkError>;
    /// Step two: CNI ADD in the namespace of `id`; on failure the namespace and everything
    /// ADD made are removed again.
    async fn connect(&self, id: &str) -> Result<Attachment, NetworkError>;
    /// Both steps: on failure nothing is left behind.
    async fn attach(&self, id: &str) -> Result<Attachment, NetworkError> {
        self.create_namespace(id).await?;
        self.connect(id).await
    }
    /// Runs CNI DEL and removes the namespace. Succeeds when `id` is already gone.
    async fn detach(&self, id: &str) -> Result<(), NetworkError>;
    /// Readies the app network `network` (None: the default one) before a task joins it and
    /// returns its gateway, where the task's resolver is. Implementations with one network
    /// have nothing to ready.
    async fn prepare(&self, _network: Option<&str>) -> Result<Option<IpAddr>, NetworkError> {
        Ok(None)
    }
    /// `connect` on the app network `network` (None: the default one).
    async fn connect_to(
        &self,
        id: &str,
        _network: Option<&str>,
    ) -> Result<Attachment, NetworkError> {
        self.connect(id).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid task id {id:?} for the network: use 1-128 letters, digits, '-', '_' or '.' (not starting with '.')")]
    InvalidId { id: String },
    #[error("invalid network setting {key}: {reason}")]
    InvalidSettings { key: &'static str, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}: install the Debian package containernetworking-plugins or set the CNI plugin directory")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} ({command}) for {id} failed with code {code}: {msg}{}", details_suffix(.details))]
    Plugin {
        plugin: String,
        command: &'static str,
        id: String,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("could not run CNI plugin {path}: {source}")]
    Exec { path: PathBuf, source: io::Error },
    #[error("CNI plugin {plugin} ({command}) for {id} did not finish within {seconds} s")]
    Timeout {
        plugin: String,
        command: &'static str,
        id: String,
        seconds: u64,
    },
    #[error("CNI plugin {plugin} returned an unusable result for {id}: {reason}")]
    BadResult {
        plugin: String,
        id: String,
        reason: String,
    },
    #[error("network {id} has no namespace at {path}: create it before connecting")]
    NoNamespace { id: String, path: PathBuf },
    #[error("network {id} is already attached (namespace {path} exists); detach it first")]
    AlreadyAttached { id: String, path: PathBuf },
    #[error("network namespace {path}: {action} failed: {source}")]
    Netns {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("no free /24 left in network.pool {pool} for network {network:?} ({used} networks recorded): give haloyd's config a larger `network.pool`")]
    PoolExhausted {
        pool: String,
        network: String,
        used: usize,
    },
    #[error("network registry {path}: {reason}; move the file aside to start a new one (named networks then get new subnets)")]
    Registry { path: PathBuf, reason: String },
    #[error("`{program}` not found on PATH: named networks need it; install the Debian package {package}")]
    ToolMissing {
        program: String,
        package: &'static str,
    },
    #[error("{action} failed: {reason}")]
    Firewall { action: String, reason: String },
    #[error("CNI state file {path}: {source}")]
    State { path: PathBuf, source: io::Error },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

/// Task ids become file names and CNI_CONTAINERID, so only a safe alphabet is allowed.
pub fn validate_id(id: &str) -> Result<(), NetworkError> {
    let ok_len = !id.is_empty() && id.len() <= 128;
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok_len && ok_chars && !id.starts_with('.') {
        Ok(())
    } else {
        Err(NetworkError::InvalidId { id: id.to_string() })
    }
}

#[cfg(test)]
#[path = "tests/network.rs"]
mod tests;
