//! The registry documents a pull reads (OCI and Docker schema 2): index/manifest list, image
//! manifest, image config; picking the linux/<host arch> entry of an index; chain IDs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::ImageConfig;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Media types sent in `Accept` when resolving a tag.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest or an index, told apart by media type or by which list it has.
#[derive(Debug, Clone, Deserialize)]
pub struct AnyManifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
}

impl AnyManifest {
    pub fn is_index(&self) -> bool {
        match self.media_type.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
            Some(_) => false,
            None => self.manifests.is_some() && self.config.is_none(),
        }
    }
}

/// A single-platform image manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let any: AnyManifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if any.is_index() {
            return Err("expected an image manifest, found an index".to_string());
        }
        let config = any.config.ok_or("manifest has no config")?;
        let layers = any.layers.unwrap_or_default();
        if layers.is_empty() {
            return Err("manifest has no layers".to_string());
        }
        Ok(Manifest { config, layers })
    }
}

/// The image config document (only what a pull and a container need).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ConfigSection>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigSection {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

impl ImageConfigFile {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfigFile, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("image config: {e}"))
    }

    /// The runtime-relevant part of the config.
    pub fn image_config(&self) -> ImageConfig {
        let section = self.config.clone().unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: section.entrypoint.unwrap_or_default(),
            cmd: section.cmd.unwrap_or_default(),
            env: section.env.unwrap_or_default(),
            working_dir: non_empty(section.working_dir),
            user: non_empty(section.user),
            exposed_ports: section
                .exposed_ports
                .map(|ports| ports.into_keys().collect())
                .unwrap_or_default(),
        }
    }

    /// Chain IDs of every layer, bottom first (the last one names the unpacked rootfs).
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.rootfs.diff_ids)
    }
}

/// `chain(0) = diff_id(0)`, `chain(n) = sha256(chain(n-1) + " " + diff_id(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chains.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        chains.push(next);
    }
    chains
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The OCI name of this host's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Picks the linux/`arch` entry of an index (any variant), or lists what is available.
pub fn select_platform<'a>(
    entries: &'a [Descriptor],
    arch: &str,
) -> Result<&'a Descriptor, String> {
    let matches = |p: &Platform| p.os == "linux" && p.architecture == arch;
    entries
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(matches))
        .ok_or_else(|| {
            let available: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            }
        })
}

#[cfg(test)]
#[path = "tests/manifest.rs"]
mod tests;
