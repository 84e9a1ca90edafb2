//! Certificates on disk: `<state_dir>/certs/<domain>/{cert.pem,key.pem,meta.json}` plus one
//! ACME account credentials file per directory URL. Every file is mode 0600 and written
//! atomically (temp file in the same directory, fsync, rename, fsync of the directory), so a
//! crash leaves either the old or the new file, never half of one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::TlsError;

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
const META_FILE: &str = "meta.json";
/// Format of meta.json. Files written before the field existed have none and are format 1;
/// a newer format is refused and never overwritten (the certificate is left alone).
pub(crate) const META_FORMAT: u32 = 1;

/// meta.json as written: the meta with its format.
#[derive(Serialize)]
struct MetaFile<'a> {
    format_version: u32,
    #[serde(flatten)]
    meta: &'a StoredMeta,
}

#[derive(Deserialize)]
struct MetaVersion {
    #[serde(default = "format_one")]
    format_version: u32,
}

fn format_one() -> u32 {
    1
}

/// Facts about a stored certificate that are not in the PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredMeta {
    /// Canonical domain first, then aliases: the names it was ordered for.
    pub names: Vec<String>,
    /// ACME directory that issued it.
    pub directory: String,
    /// Unix seconds since which no deployed app uses the domain (removal grace period).
    #[serde(default)]
    pub unused_since: Option<u64>,
}

pub(crate) struct StoredCertificate {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub meta: StoredMeta,
    pub cert_path: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct CertStore {
    root: PathBuf,
}

impl CertStore {
    pub fn open(state_dir: &Path) -> Result<Self, TlsError> {
        let root = state_dir.join("certs");
        fs::create_dir_all(&root).map_err(|e| TlsError::io("create", &root, e))?;
        restrict_dir(&root)?;
        Ok(CertStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn domain_dir(&self, domain: &str) -> Result<PathBuf, TlsError> {
        validate_domain(domain)?;
        Ok(self.root.join(domain))
    }

    pub fn save(
        &self,
        domain: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
        meta: &StoredMeta,
    ) -> Result<(), TlsError> {
        let dir = self.domain_dir(domain)?;
        // A newer haloyd's certificate stays as it is, key and certificate included.
        if let Some(bytes) = read_optional(&dir.join(META_FILE))? {
            parse_meta(&dir.join(META_FILE), &bytes)?;
        }
        fs::create_dir_all(&dir).map_err(|e| TlsError::io("create", &dir, e))?;
        restrict_dir(&dir)?;
        // Key before certificate: a crash in between leaves a mismatched pair, which load
        // rejects (keys_match) and the manager re-orders; never a cert without its key.
        write_atomic(&dir.join(KEY_FILE), key_pem)?;
        write_atomic(&dir.join(CERT_FILE), chain_pem)?;
        self.save_meta(domain, meta)
    }

    pub fn save_meta(&self, domain: &str, meta: &StoredMeta) -> Result<(), TlsError> {
        let path = self.domain_dir(domain)?.join(META_FILE);
        if let Some(bytes) = read_optional(&path)? {
            parse_meta(&path, &bytes)?;
        }
        let file = MetaFile {
            format_version: META_FORMAT,
            meta,
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| TlsError::io("serialize", &path, std::io::Error::other(e)))?;
        write_atomic(&path, &json)
    }

    /// `Ok(None)` when nothing is stored for the domain.
    pub fn load(&self, domain: &str) -> Result<Option<StoredCertificate>, TlsError> {
        let dir = self.domain_dir(domain)?;
        let cert_path = dir.join(CERT_FILE);
        let Some(chain_pem) = read_optional(&cert_path)? else {
            return Ok(None);
        };
        let Some(key_pem) = read_optional(&dir.join(KEY_FILE))? else {
            return Ok(None);
        };
        let meta_path = dir.join(META_FILE);
        let meta = match read_optional(&meta_path)? {
            Some(bytes) => parse_meta(&meta_path, &bytes)?,
            None => StoredMeta::default(),
        };
        Ok(Some(StoredCertificate {
            chain_pem,
            key_pem,
            meta,
            cert_path,
        }))
    }

    /// Domains with a stored certificate (directories holding a cert.pem).
    pub fn domains(&self) -> Result<Vec<String>, TlsError> {
        let entries = fs::read_dir(&self.root).map_err(|e| TlsError::io("list", &self.root, e))?;
        let mut domains = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| TlsError::io("list", &self.root, e))?;
            let path = entry.path();
            if path.join(CERT_FILE).is_file() {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    domains.push(name.to_string());
                }
            }
        }
        domains.sort();
        Ok(domains)
    }

    pub fn remove(&self, domain: &str) -> Result<(), TlsError> {
        let dir = self.domain_dir(domain)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TlsError::io("remove", &dir, e)),
        }
    }

    /// Account credentials are bound to one directory and contact, so the file name hashes
    /// both.
    pub fn account_path(&self, directory: &str, email: Option<&str>) -> PathBuf {
        let identity = format!("{directory}\n{}", email.unwrap_or(""));
        let digest = hex::encode(Sha256::digest(identity.as_bytes()));
        self.root
            .join(format!("acme-account-{}.json", &digest[..16]))
    }
}

/// meta.json of any format up to `META_FORMAT`; a newer one is refused with its version.
pub(crate) fn parse_meta(path: &Path, bytes: &[u8]) -> Result<StoredMeta, TlsError> {
    let parse_error = |e| TlsError::io("parse", path, std::io::Error::other(e));
    let version: MetaVersion = serde_json::from_slice(bytes).map_err(parse_error)?;
    if version.format_version > META_FORMAT {
        return Err(TlsError::TooNew {
            path: path.to_path_buf(),
            found: version.format_version,
            supported: META_FORMAT,
        });
    }
    serde_json::from_slice(bytes).map_err(parse_error)
}

/// Rejects anything that could escape `certs/` or is not a host name.
pub(crate) fn validate_domain(domain: &str) -> Result<(), TlsError> {
    let invalid = |reason| TlsError::InvalidDomain {
        domain: domain.to_string(),
        reason,
    };
    if domain.is_empty() || domain.len() > 253 {
        return Err(invalid("must be 1 to 253 characters"));
    }
    if domain.starts_with('.') || domain.contains("..") {
        return Err(invalid("empty label"));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if !domain.chars().all(allowed) {
        return Err(invalid(
            "only lower-case letters, digits, '-' and '.' are allowed",
        ));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("every label must be 1 to 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label cannot start or end with '-'"));
        }
    }
    // "10.0.0.1" would pass the character check, but certificates here are for host names.
    let top_level = domain.rsplit('.').next().unwrap_or_default();
    if top_level.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "an IP address or numeric top-level label is not a host name",
        ));
    }
    Ok(())
}

pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TlsError::io("read", path, e)),
    }
}

/// Replace `path` atomically, owner-only (see [`crate::files::write_atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::files::write_atomic(path, bytes, 0o600).map_err(|e| TlsError::io("write", path, e))
}

fn restrict_dir(dir: &Path) -> Result<(), TlsError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| TlsError::io("set permissions on", dir, e))
}

#[cfg(test)]
#[path = "tests/store.rs"]
mod tests;
