//! The narrow seam between the proxy and the `tls` module: the proxy asks it for ACME
//! HTTP-01 challenge answers and whether a host already has a certificate (so port 80 only
//! redirects to HTTPS once HTTPS can actually work). Kept tiny so neither side depends on the
//! other's internals.

/// Implemented by `tls::CertificateManager`; the proxy holds it as `Arc<dyn TlsHooks>`.
pub trait TlsHooks: Send + Sync + 'static {
    /// Key authorization for `/.well-known/acme-challenge/<token>`, if an order is pending.
    fn challenge_response(&self, token: &str) -> Option<String>;
    /// True when a valid certificate for `host` (lower-case, no port) is being served.
    fn has_certificate(&self, host: &str) -> bool;
}
