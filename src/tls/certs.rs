//! Certificate material: PEM chain + key into a rustls `CertifiedKey` (checking the key
//! belongs to the leaf), expiry and SANs from the leaf, fresh keys and CSRs for orders, and
//! the self-signed default certificate for unknown SNI.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use super::error::TlsError;

/// A usable certificate and what the manager needs to know about it.
#[derive(Clone)]
pub(crate) struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    pub not_after: SystemTime,
    /// DNS names from the leaf's subjectAltName extension, lower-case.
    pub names: Vec<String>,
}

impl std::fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("not_after", &self.not_after)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain (leaf first) and PEM private key; `path` is only used in errors.
pub(crate) fn load_pair(
    domain: &str,
    path: &Path,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<LoadedCertificate, TlsError> {
    let invalid = |reason: String| TlsError::InvalidCertificate {
        domain: domain.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("unreadable certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("no CERTIFICATE block in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid(format!("unreadable private key PEM: {e}")))?;
    let (not_after, names) = leaf_facts(&chain[0]).map_err(invalid)?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| invalid(format!("key does not fit the certificate: {e}")))?;
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        not_after,
        names,
    })
}

/// Expiry and DNS SANs of a leaf certificate.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(SystemTime, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let seconds = cert.validity().not_after.timestamp();
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("bad subjectAltName extension: {e}")),
    };
    Ok((not_after, names))
}

/// A new P-256 key and a CSR for `names` (canonical first). Returns (key PEM, CSR DER).
pub(crate) fn key_and_csr(names: &[String]) -> Result<(String, Vec<u8>), TlsError> {
    let domain = names.first().cloned().unwrap_or_default();
    let rcgen_err = |source| TlsError::KeyGeneration {
        domain: domain.clone(),
        source,
    };
    let key = rcgen::KeyPair::generate().map_err(rcgen_err)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(rcgen_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(rcgen_err)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// Served for unknown SNI when configured: a throwaway self-signed certificate for a name
/// under `.invalid`, so no client can mistake it for any app's identity.
pub(crate) fn self_signed_default() -> Result<Arc<CertifiedKey>, TlsError> {
    let domain = "haloy-default.invalid".to_string();
    let rcgen_err = |source| TlsError::KeyGeneration {
        domain: domain.clone(),
        source,
    };
    let certified = rcgen::generate_simple_self_signed(vec![domain.clone()]).map_err(rcgen_err)?;
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let chain = vec![certified.cert.der().clone()];
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider())?))
}

#[cfg(test)]
#[path = "tests/certs.rs"]
mod tests;
