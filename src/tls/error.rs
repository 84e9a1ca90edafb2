//! The `tls` module's error type: every variant names the domain, file or ACME directory
//! involved, and ACME failures carry what the CA said.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate for {domain} ({}): {reason}", path.display())]
    InvalidCertificate {
        domain: String,
        path: PathBuf,
        reason: String,
    },
    #[error("extra CA bundle {}: {reason}", path.display())]
    CaBundle { path: PathBuf, reason: String },
    #[error("ACME account at {directory}: {detail}")]
    AcmeAccount { directory: String, detail: String },
    #[error("ACME order for {domain} at {directory} failed while {step}: {detail}")]
    Acme {
        domain: String,
        directory: String,
        step: &'static str,
        detail: String,
    },
    #[error("creating a key or CSR for {domain}: {source}")]
    KeyGeneration {
        domain: String,
        source: rcgen::Error,
    },
    #[error("invalid domain name {domain:?}: {reason}")]
    InvalidDomain {
        domain: String,
        reason: &'static str,
    },
    #[error(
        "{} has format_version {found}, newer than the {supported} this haloyd understands; it was written by a newer haloyd: upgrade haloyd (the certificate files are left untouched)",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        TlsError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Renders an instant-acme error with the CA's problem document (type, detail, and the
/// per-identifier subproblems), which is what an operator needs to fix DNS or firewalls.
pub(crate) fn describe_acme_error(err: &instant_acme::Error) -> String {
    match err {
        instant_acme::Error::Api(problem) => describe_problem(problem),
        other => other.to_string(),
    }
}

pub(crate) fn describe_problem(problem: &instant_acme::Problem) -> String {
    let mut text = String::from("CA said: ");
    text.push_str(problem.detail.as_deref().unwrap_or("(no detail)"));
    if let Some(kind) = &problem.r#type {
        text.push_str(&format!(" [{kind}]"));
    }
    for sub in &problem.subproblems {
        let ident = match &sub.identifier {
            Some(instant_acme::Identifier::Dns(name)) => name.clone(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let detail = sub.detail.as_deref().unwrap_or("");
        text.push_str(&format!("; {ident}: {detail}"));
    }
    text
}

#[cfg(test)]
#[path = "tests/error.rs"]
mod tests;
