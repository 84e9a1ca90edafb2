//! TLS settings of haloyd (ACME directory, account contact, extra trust, unknown-SNI policy,
//! operator-supplied certificates, renewal timing) and `DomainSet`, the unit a certificate
//! is issued for: one canonical domain plus its aliases.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proxy::normalize_host;

/// Let's Encrypt's production ACME directory (the default).
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging ACME directory (`acme.staging: true`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// One certificate's names: the canonical domain (file names, status) and its aliases (SANs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainSet {
    pub canonical: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The app's `acme_email` (ACME account contact); `acme.email` of the server when unset.
    #[serde(default)]
    pub acme_email: Option<String>,
}

impl DomainSet {
    /// Normalises names (lower case, no trailing dot) and drops duplicate aliases, so that
    /// "alias set changed" compares sets, not spellings or order.
    pub fn new(canonical: &str, aliases: &[&str]) -> Self {
        let canonical = normalize_host(canonical).into_owned();
        let mut normalized: Vec<String> = aliases
            .iter()
            .map(|alias| normalize_host(alias).into_owned())
            .filter(|alias| *alias != canonical)
            .collect();
        normalized.sort();
        normalized.dedup();
        DomainSet {
            canonical,
            aliases: normalized,
            acme_email: None,
        }
    }

    /// Orders for this set use the ACME account with this contact.
    pub fn with_acme_email(mut self, email: Option<&str>) -> Self {
        self.acme_email = email
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty());
        self
    }

    /// Same set, normalised (for values built with struct literals or deserialised).
    pub fn normalized(&self) -> Self {
        let aliases: Vec<&str> = self.aliases.iter().map(String::as_str).collect();
        DomainSet::new(&self.canonical, &aliases).with_acme_email(self.acme_email.as_deref())
    }

    /// Canonical first, then aliases: the SAN list of the certificate.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(self.canonical.clone())
            .chain(self.aliases.iter().cloned())
            .collect()
    }
}

/// What to do with a TLS handshake whose SNI names no known domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSni {
    /// Abort the handshake (the client sees a TLS alert).
    #[default]
    Refuse,
    /// Serve a self-signed certificate for `haloy.invalid`: never another app's certificate.
    SelfSigned,
}

/// A certificate/key pair the operator manages; ACME is not used for this domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCertificate {
    pub domain: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Where and as whom certificates are ordered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeSettings {
    /// Any RFC 8555 directory; Let's Encrypt production when unset.
    #[serde(default)]
    pub directory_url: Option<String>,
    /// Use Let's Encrypt staging (ignored when `directory_url` is set).
    #[serde(default)]
    pub staging: bool,
    /// Account contact (`mailto:`), optional.
    #[serde(default)]
    pub email: Option<String>,
    /// PEM bundle of extra CA certificates trusted when talking to the directory.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
}

impl AcmeSettings {
    pub fn directory(&self) -> &str {
        match (&self.directory_url, self.staging) {
            (Some(url), _) => url,
            (None, true) => LETS_ENCRYPT_STAGING,
            (None, false) => LETS_ENCRYPT_PRODUCTION,
        }
    }
}

/// Everything `CertificateManager` needs. Timings are fields so tests can shrink them.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// haloyd's state directory; certificates live in `<state_dir>/certs/`.
    pub state_dir: PathBuf,
    pub acme: AcmeSettings,
    pub unknown_sni: UnknownSni,
    pub certificates: Vec<OperatorCertificate>,
    /// Renew when less than this remains (30 days).
    pub renew_before: Duration,
    /// How often the background task re-checks expiry and pending retries.
    pub check_interval: Duration,
    /// First retry delay after a failed order; doubled per failure up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a certificate for a domain no longer deployed is kept before deletion.
    pub removal_grace: Duration,
    /// Upper bound for waiting on the CA while an order is validated and issued.
    pub order_timeout: Duration,
}

impl TlsSettings {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        const DAY: u64 = 24 * 60 * 60;
        TlsSettings {
            state_dir: state_dir.into(),
            acme: AcmeSettings::default(),
            unknown_sni: UnknownSni::default(),
            certificates: Vec::new(),
            renew_before: Duration::from_secs(30 * DAY),
            check_interval: Duration::from_secs(60 * 60),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(6 * 60 * 60),
            removal_grace: Duration::from_secs(30 * DAY),
            order_timeout: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
#[path = "tests/settings.rs"]
mod tests;
