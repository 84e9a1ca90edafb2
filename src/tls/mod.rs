//! HTTPS: certificate store on disk, SNI resolver swapped atomically, ACME (instant-acme,
//! HTTP-01) issuance and renewal, the challenge responses the proxy serves on :80.
//!
//! `CertificateManager` is the entry point: it implements the proxy's `TlsHooks`, builds the
//! rustls `ServerConfig` and keeps certificates for a set of `DomainSet`s current.

mod acme;
mod certs;
mod error;
mod manager;
mod resolver;
mod settings;
mod store;

pub use error::TlsError;
pub use manager::{CertificateManager, CertificateSource, CertificateStatus};
pub use resolver::SniResolver;
pub use settings::{
    AcmeSettings, DomainSet, OperatorCertificate, TlsSettings, UnknownSni, LETS_ENCRYPT_PRODUCTION,
    LETS_ENCRYPT_STAGING,
};
