//! Named networks: one CNI network (own bridge, subnet, IPAM leases, cached results) per
//! `network` name of haloy.yaml beside the default network, which stays exactly as before.
//!
//! `NetworkSet` owns: the registry `name → {subnet, bridge}` in haloyd's state dir (a name
//! keeps its subnet across restarts, and after its last app left: subnets are never reused),
//! allocation of /24s from the server config's `network.pool`, routing of each task id's ADD
//! and DEL to its network (DEL finds the network by the cached ADD result, which lives in a
//! results directory per network, so it works after a restart too), removing the bridge and
//! IPAM directory of a network whose last task left, and the nftables table that drops
//! packets forwarded between two haloy bridges (`firewall`). Gateways of networks in use are
//! announced on a channel so haloyd's DNS server listens on each of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};

use super::cni::CniNetwork;
use super::firewall::{Firewall, HostFirewall};
use super::netns::{HostNetns, NetnsOps};
use super::ProcessPluginExec;
use super::{Attachment, CniSettings, IpCidr, Network, NetworkError, PluginExec};
use crate::dns::DEFAULT_NETWORK;

/// Named networks get /24s: 253 replicas each, 256 networks from a /16 pool.
pub const NETWORK_PREFIX: u8 = 24;
const REGISTRY_VERSION: u32 = 1;

/// What `NetworkSet` needs beyond the default network's settings.
#[derive(Debug, Clone)]
pub struct NamedSettings {
    /// The /24s of named networks come from here (server config `network.pool`).
    pub pool: IpCidr,
    /// `name → subnet, bridge`, kept across restarts (`<state_dir>/networks.json`).
    pub registry_file: PathBuf,
    /// nftables table (family inet) holding the isolation rules; one per haloyd.
    pub nft_table: String,
}

/// One named network as recorded in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub subnet: String,
    pub bridge: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    format_version: u32,
    networks: BTreeMap<String, NetworkRecord>,
}

/// The default network plus every named one, behind the `Network` trait.
pub struct NetworkSet {
    default: CniNetwork,
    base: CniSettings,
    named: NamedSettings,
    netns: Arc<dyn NetnsOps>,
    exec: Arc<dyn PluginExec>,
    firewall: Arc<dyn Firewall>,
    gateways: Option<mpsc::UnboundedSender<IpAddr>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: BTreeMap<String, NetworkRecord>,
    /// Networks whose CNI driver was built in this process.
    live: HashMap<String, Arc<CniNetwork>>,
    /// Networks with tasks (their bridges are in the isolation rules).
    in_use: HashSet<String>,
    /// Gateways already announced for DNS in this process.
    announced: HashSet<String>,
}

impl std::fmt::Debug for NetworkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkSet")
            .field("default", &self.base.bridge)
            .field("named", &self.named)
            .finish_non_exhaustive()
    }
}

impl NetworkSet {
    /// The real host: namespaces, plugin processes, `nft` and `ip`. Reads the registry, finds
    /// the networks that still have tasks (after a restart), installs their isolation rules
    /// and announces their gateways on `gateways`.
    pub async fn open(
        base: CniSettings,
        named: NamedSettings,
        gateways: Option<mpsc::UnboundedSender<IpAddr>>,
    ) -> Result<NetworkSet, NetworkError> {
        Self::open_with(
            base,
            named,
            gateways,
            Arc::new(HostNetns),
            Arc::new(ProcessPluginExec),
            Arc::new(HostFirewall),
        )
        .await
    }

    /// Same with other implementations of the host operations (unit tests use fakes).
    pub async fn open_with(
        base: CniSettings,
        named: NamedSettings,
        gateways: Option<mpsc::UnboundedSender<IpAddr>>,
        netns: Arc<dyn NetnsOps>,
        exec: Arc<dyn PluginExec>,
        firewall: Arc<dyn Firewall>,
    ) -> Result<NetworkSet, NetworkError> {
        let default = CniNetwork::with_ops(base.clone(), netns.clone(), exec.clone())?;
        let registry = read_registry(&named.registry_file)?;
        let set = NetworkSet {
            default,
            base,
            named,
            netns,
            exec,
            firewall,
            gateways,
            inner: Mutex::new(Inner {
                registry,
                ..Inner::default()
            }),
        };
        {
            let mut inner = set.inner.lock().await;
            let names: Vec<String> = inner.registry.keys().cloned().collect();
            for name in names {
                if has_results(&set.results_dir(&inner.registry[&name])) {
                    inner.in_use.insert(name.clone());
                }
                // A successor haloyd (upgrade) must answer names on every gateway at once.
                set.announce(&mut inner, &name);
            }
            set.apply_rules(&inner).await?;
        }
        Ok(set)
    }

    /// Cached ADD results of a named network's tasks: one directory per bridge.
    fn results_dir(&self, record: &NetworkRecord) -> PathBuf {
        self.base.cache_dir.join(&record.bridge)
    }

    fn settings_for(&self, name: &str, record: &NetworkRecord) -> CniSettings {
        CniSettings {
            network_name: cni_network_name(name),
            bridge: record.bridge.clone(),
            subnet: record.subnet.clone(),
            cache_dir: self.results_dir(record),
            ..self.base.clone()
        }
    }

    /// The record of `name`, allocated and saved when new.
    fn register(&self, inner: &mut Inner, name: &str) -> Result<NetworkRecord, NetworkError> {
        if let Some(record) = inner.registry.get(name) {
            return Ok(record.clone());
        }
        let record = allocate(&inner.registry, name, &self.base, &self.named.pool)?;
        inner.registry.insert(name.to_string(), record.clone());
        if let Err(err) = write_registry(&self.named.registry_file, &inner.registry) {
            inner.registry.remove(name);
            return Err(err);
        }
        tracing::info!(network = name, subnet = %record.subnet, bridge = %record.bridge, "network created");
        Ok(record)
    }

    /// The CNI driver of a registered network (built once per process).
    fn driver(&self, inner: &mut Inner, name: &str) -> Result<Arc<CniNetwork>, NetworkError> {
        if let Some(driver) = inner.live.get(name) {
            return Ok(Arc::clone(driver));
        }
        let record = self.register(inner, name)?;
        let settings = self.settings_for(name, &record);
        let driver = Arc::new(CniNetwork::with_ops(
            settings,
            Arc::clone(&self.netns),
            Arc::clone(&self.exec),
        )?);
        inner.live.insert(name.to_string(), Arc::clone(&driver));
        Ok(driver)
    }

    fn announce(&self, inner: &mut Inner, name: &str) {
        let (Some(tx), Some(record)) = (&self.gateways, inner.registry.get(name)) else {
            return;
        };
        if let Some(gateway) = gateway_of(&record.subnet) {
            if inner.announced.insert(name.to_string()) {
                let _ = tx.send(gateway);
            }
        }
    }

    async fn apply_rules(&self, inner: &Inner) -> Result<(), NetworkError> {
        let mut bridges: Vec<String> = inner
            .in_use
            .iter()
            .filter_map(|name| inner.registry.get(name).map(|r| r.bridge.clone()))
            .collect();
        bridges.sort();
        if !bridges.is_empty() {
            bridges.insert(0, self.base.bridge.clone());
        }
        self.firewall.isolate(&self.named.nft_table, &bridges).await
    }

    /// The named network holding the cached ADD result of `id`, if any.
    async fn network_of_task(&self, id: &str) -> Option<(String, Arc<CniNetwork>)> {
        let mut inner = self.inner.lock().await;
        let names: Vec<String> = inner.registry.keys().cloned().collect();
        for name in names {
            let record = inner.registry[&name].clone();
            let file = self
                .results_dir(&record)
                .join(format!("{}-{id}.json", cni_network_name(&name)));
            if file.is_file() {
                let driver = self.driver(&mut inner, &name).ok()?;
                return Some((name, driver));
            }
        }
        None
    }

    /// After a DEL: a network without tasks loses its bridge, its IPAM directory and its
    /// place in the isolation rules; its subnet stays reserved for the name.
    async fn remove_if_unused(&self, name: &str) -> Result<(), NetworkError> {
        let mut inner = self.inner.lock().await;
        let Some(record) = inner.registry.get(name).cloned() else {
            return Ok(());
        };
        if has_results(&self.results_dir(&record)) {
            return Ok(());
        }
        inner.in_use.remove(name);
        self.apply_rules(&inner).await?;
        self.firewall.delete_bridge(&record.bridge).await?;
        let ipam = self.base.ipam_data_dir.join(cni_network_name(name));
        remove_dir(&ipam)?;
        remove_dir(&self.results_dir(&record))?;
        tracing::info!(network = name, bridge = %record.bridge, "network removed: no app left on it");
        Ok(())
    }
}

fn remove_dir(path: &Path) -> Result<(), NetworkError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetworkError::State {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// True when `name` means the default network (no `network`, or Haloy's default name).
fn is_default(name: Option<&str>) -> bool {
    name.is_none_or(|n| n == DEFAULT_NETWORK)
}

#[async_trait]
impl Network for NetworkSet {
    async fn create_namespace(&self, id: &str) -> Result<PathBuf, NetworkError> {
        // Namespaces do not depend on the network: all live in the same directory.
        self.default.create_namespace(id).await
    }

    async fn connect(&self, id: &str) -> Result<Attachment, NetworkError> {
        self.default.connect(id).await
    }

    async fn prepare(&self, network: Option<&str>) -> Result<Option<IpAddr>, NetworkError> {
        let name = match network {
            Some(name) if !is_default(network) => name,
            _ => return Ok(gateway_of(&self.base.subnet)),
        };
        let mut inner = self.inner.lock().await;
        let record = self.register(&mut inner, name)?;
        self.announce(&mut inner, name);
        Ok(gateway_of(&record.subnet))
    }

    async fn connect_to(
        &self,
        id: &str,
        network: Option<&str>,
    ) -> Result<Attachment, NetworkError> {
        let name = match network {
            Some(name) if !is_default(network) => name,
            _ => return self.default.connect(id).await,
        };
        // Held across the ADD: a concurrent DEL of the network's last task must not remove
        // the bridge or its rules while this task joins it.
        let mut inner = self.inner.lock().await;
        let driver = self.driver(&mut inner, name)?;
        self.announce(&mut inner, name);
        if inner.in_use.insert(name.to_string()) {
            if let Err(err) = self.apply_rules(&inner).await {
                inner.in_use.remove(name);
                return Err(err);
            }
        }
        let attached = driver.connect(id).await;
        drop(inner);
        if attached.is_err() {
            self.remove_if_unused(name).await?;
        }
        attached
    }

    async fn detach(&self, id: &str) -> Result<(), NetworkError> {
        match self.network_of_task(id).await {
            Some((name, driver)) => {
                driver.detach(id).await?;
                self.remove_if_unused(&name).await
            }
            None => self.default.detach(id).await,
        }
    }
}

/// The CNI network name of a named network (also its IPAM lease directory).
pub fn cni_network_name(name: &str) -> String {
    format!("{DEFAULT_NETWORK}-{name}")
}

/// `hl-` and 12 hex digits of SHA-256 over the default bridge and the name: 15 characters,
/// the Linux limit; the default bridge keeps two haloyds on one host (tests) apart. `salt`
/// moves to another name when two names hash alike.
pub fn bridge_name(default_bridge: &str, name: &str, salt: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(default_bridge.as_bytes());
    hasher.update(b"\0");
    hasher.update(name.as_bytes());
    if salt > 0 {
        hasher.update(salt.to_be_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("hl-{}", &digest[..12])
}

/// A subnet and bridge for `name`: the first /24 of `pool` not recorded yet and not the
/// default subnet, the first bridge name no other network has.
pub fn allocate(
    registry: &BTreeMap<String, NetworkRecord>,
    name: &str,
    base: &CniSettings,
    pool: &IpCidr,
) -> Result<NetworkRecord, NetworkError> {
    let taken_subnets: HashSet<&str> = registry.values().map(|r| r.subnet.as_str()).collect();
    let default_subnet: Option<IpCidr> = base.subnet.parse().ok();
    let subnet = pool_subnets(pool)
        .map(|s| s.to_string())
        .find(|s| {
            !taken_subnets.contains(s.as_str())
                && !default_subnet.is_some_and(|d| overlaps(&d, &s.parse().unwrap_or(d)))
        })
        .ok_or_else(|| NetworkError::PoolExhausted {
            pool: pool.to_string(),
            network: name.to_string(),
            used: registry.len(),
        })?;
    let taken_bridges: HashSet<&str> = registry.values().map(|r| r.bridge.as_str()).collect();
    let bridge = (0..)
        .map(|salt| bridge_name(&base.bridge, name, salt))
        .find(|b| !taken_bridges.contains(b.as_str()) && *b != base.bridge)
        .unwrap_or_default();
    Ok(NetworkRecord { subnet, bridge })
}

/// The /24s of an IPv4 pool in order (none for IPv6 or a pool smaller than a /24).
pub fn pool_subnets(pool: &IpCidr) -> impl Iterator<Item = IpCidr> {
    let (start, count) = match pool.addr() {
        IpAddr::V4(addr) if pool.prefix() <= NETWORK_PREFIX => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(pool.prefix()))
                .unwrap_or(0);
            (
                u32::from(addr) & mask,
                1u64 << (NETWORK_PREFIX - pool.prefix()),
            )
        }
        _ => (0, 0),
    };
    (0..count).filter_map(move |i| {
        let base = start.checked_add(u32::try_from(i).ok()? << (32 - NETWORK_PREFIX))?;
        IpCidr::new(IpAddr::V4(Ipv4Addr::from(base)), NETWORK_PREFIX)
    })
}

/// True when the two networks share an address.
pub fn overlaps(a: &IpCidr, b: &IpCidr) -> bool {
    a.contains(b.addr()) || b.contains(a.addr())
}

fn gateway_of(subnet: &str) -> Option<IpAddr> {
    let cidr: IpCidr = subnet.parse().ok()?;
    crate::dns::bridge_gateway(cidr.addr(), cidr.prefix())
}

fn has_results(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

fn read_registry(path: &Path) -> Result<BTreeMap<String, NetworkRecord>, NetworkError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(NetworkError::State {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: RegistryFile =
        serde_json::from_slice(&bytes).map_err(|e| NetworkError::Registry {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if file.format_version != REGISTRY_VERSION {
        return Err(NetworkError::Registry {
            path: path.to_path_buf(),
            reason: format!(
                "format_version {} is not {REGISTRY_VERSION}: written by another haloyd release",
                file.format_version
            ),
        });
    }
    Ok(file.networks)
}

fn write_registry(
    path: &Path,
    networks: &BTreeMap<String, NetworkRecord>,
) -> Result<(), NetworkError> {
    let file = RegistryFile {
        format_version: REGISTRY_VERSION,
        networks: networks.clone(),
    };
    let state_err = |source| NetworkError::State {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| state_err(e.into()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(state_err)?;
    }
    crate::files::write_atomic(path, &bytes, 0o600).map_err(state_err)
}

#[cfg(test)]
#[path = "tests/named.rs"]
mod tests;
