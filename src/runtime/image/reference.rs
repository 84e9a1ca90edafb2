//! Image reference parsing and normalization the way Docker does it: `nginx` is
//! `docker.io/library/nginx:latest`, whose registry endpoint is `registry-1.docker.io`.

use std::fmt;

use super::super::RuntimeError;

pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, ...
    pub registry: String,
    /// `library/nginx`, `org/app`, ...
    pub repository: String,
    /// Set unless the reference is by digest only.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `reference`, filling in Docker Hub and `latest` like `docker pull` does.
    pub fn parse(reference: &str) -> Result<ImageRef, RuntimeError> {
        let invalid = |reason: &str| RuntimeError::InvalidReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = reference.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (rest, digest) = match trimmed.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest).map_err(|r| invalid(&r))?)),
            None => (trimmed, None),
        };
        let (name, tag) = split_tag(rest);
        let (registry, repository) = split_registry(name);
        validate_repository(&repository).map_err(|r| invalid(&r))?;
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(|r| invalid(&r))?;
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host[:port] to send registry API requests to.
    pub fn endpoint(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// True for registries on the loopback interface (plain HTTP is always allowed there).
    pub fn is_loopback(&self) -> bool {
        let host = host_of(&self.registry);
        host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The reference for oci-client, pointing Docker Hub at its API endpoint.
    pub fn to_oci(&self) -> oci_client::Reference {
        let mut reference = match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                digest.clone(),
            ),
            (None, Some(digest)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            (tag, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()),
            ),
        };
        if self.registry == DOCKER_HUB {
            reference.set_mirror_registry(DOCKER_HUB_ENDPOINT.to_string());
        }
        reference
    }

    /// The same repository pinned to `digest` (for fetching a manifest an index points to).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            tag: None,
            ..self.clone()
        }
    }
}

/// The canonical name, used as the containerd image record name.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.split_inclusive(']').next().unwrap_or(registry);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Splits `name:tag`; a colon before the last slash belongs to a registry port.
fn split_tag(name: &str) -> (&str, Option<String>) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (
            &name[..last_slash + i],
            Some(name[last_slash + i + 1..].to_string()),
        ),
        None => (name, None),
    }
}

/// Splits off the registry: the first component if it looks like a host, else Docker Hub.
fn split_registry(name: &str) -> (String, String) {
    if let Some((first, rest)) = name.split_once('/') {
        let is_host = first.contains('.') || first.contains(':') || first == "localhost";
        if is_host {
            let registry = if first == "index.docker.io" {
                DOCKER_HUB
            } else {
                first
            };
            let repository = if registry == DOCKER_HUB && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_string()
            };
            return (registry.to_string(), repository);
        }
        return (DOCKER_HUB.to_string(), name.to_string());
    }
    (DOCKER_HUB.to_string(), format!("library/{name}"))
}

fn validate_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "repository `{repository}` must be lowercase letters, digits, `.`, `_`, `-` separated by `/`"
        ))
    }
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag `{tag}` must be 1-128 of letters, digits, `.`, `_`, `-`"
        ))
    }
}

fn parse_digest(digest: &str) -> Result<String, String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(digest.to_ascii_lowercase())
        }
        _ => Err(format!("digest `{digest}` is not `sha256:<64 hex digits>`")),
    }
}

#[cfg(test)]
#[path = "tests/reference.rs"]
mod tests;
