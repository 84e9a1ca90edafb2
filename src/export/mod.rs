//! Exports a resolved haloy.yaml to other platforms' formats. Owns the mapping only: nothing
//! here talks to a cluster. Today: Kubernetes manifests (`haloy export kubernetes`).

pub mod kubernetes;

/// Why an app cannot be exported; each names the app and the haloy.yaml key to change.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "{app}: volume `{host}:{container}` binds a host path, which a Kubernetes pod cannot \
         rely on (pods move between nodes); use a named volume (`NAME:{container}`), which \
         becomes a PersistentVolumeClaim"
    )]
    HostBind {
        app: String,
        host: String,
        container: String,
    },
    #[error("{app}: `{key}` = {value} does not fit Kubernetes' 32-bit field")]
    OutOfRange {
        app: String,
        key: &'static str,
        value: String,
    },
    #[error("cannot encode the {kind} `{name}` as YAML: {source}")]
    Encode {
        kind: &'static str,
        name: String,
        source: serde_yaml::Error,
    },
}
