//! `haloy export kubernetes`: one resolved target → Kubernetes manifests with the same rollout
//! semantics. A rolling deploy (one new replica at a time, old ones kept until the new one is
//! ready and has stayed up `min_ready_seconds`) is a Deployment with RollingUpdate maxSurge 1 /
//! maxUnavailable 0, minReadySeconds and a readiness probe; `replace` is Recreate.
//!
//! Invariants: objects are k8s-openapi's typed structs (generated from Kubernetes' OpenAPI
//! spec, v1.33 here) or the typed CRD structs in [`crds`], never text templates; env values
//! and registry passwords appear only in Secret objects; whatever haloy.yaml says that the
//! manifests cannot express is returned as a note, never dropped silently.

pub mod crds;
mod routing;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::ExportError;
use crate::config::ResolvedApp;

/// The Kubernetes version whose API the manifests are typed and checked against.
pub const KUBERNETES_VERSION: &str = "1.33";

/// How domains reach the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// networking.k8s.io/v1 Ingress, with this class (the cluster's default when `None`).
    Ingress { class: Option<String> },
    /// Gateway API HTTPRoutes attached to this Gateway (`name` or `namespace/name`).
    Gateway {
        name: String,
        namespace: Option<String>,
    },
}

/// Choices the config cannot make, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub routing: Routing,
    /// cert-manager ClusterIssuer for the apps' certificates; no Certificate when `None`.
    pub cert_manager_issuer: Option<String>,
    /// `metadata.namespace` of every namespaced object; `kubectl -n` decides when `None`.
    pub namespace: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            routing: Routing::Ingress { class: None },
            cert_manager_issuer: None,
            namespace: None,
        }
    }
}

/// One manifest object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Secret(Secret),
    PersistentVolumeClaim(PersistentVolumeClaim),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    Service(Service),
    Ingress(Ingress),
    HttpRoute(crds::HttpRoute),
    Certificate(crds::Certificate),
    ClusterIssuer(crds::ClusterIssuer),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Secret(_) => "Secret",
            Object::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Object::Deployment(_) => "Deployment",
            Object::StatefulSet(_) => "StatefulSet",
            Object::Service(_) => "Service",
            Object::Ingress(_) => "Ingress",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::Certificate(_) => "Certificate",
            Object::ClusterIssuer(_) => "ClusterIssuer",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Secret(o) => &o.metadata,
            Object::PersistentVolumeClaim(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::Certificate(o) => &o.metadata,
            Object::ClusterIssuer(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object as one YAML document.
    pub fn to_yaml(&self) -> Result<String, ExportError> {
        let encoded = match self {
            Object::Secret(o) => serde_yaml::to_string(o),
            Object::PersistentVolumeClaim(o) => serde_yaml::to_string(o),
            Object::Deployment(o) => serde_yaml::to_string(o),
            Object::StatefulSet(o) => serde_yaml::to_string(o),
            Object::Service(o) => serde_yaml::to_string(o),
            Object::Ingress(o) => serde_yaml::to_string(o),
            Object::HttpRoute(o) => serde_yaml::to_string(o),
            Object::Certificate(o) => serde_yaml::to_string(o),
            Object::ClusterIssuer(o) => serde_yaml::to_string(o),
        };
        encoded.map_err(|source| ExportError::Encode {
            kind: self.kind(),
            name: self.name().to_string(),
            source,
        })
    }

    /// The object as JSON (what the API server receives).
    pub fn to_json(&self) -> serde_json::Value {
        fn value(o: &impl Serialize) -> serde_json::Value {
            serde_json::to_value(o).unwrap_or(serde_json::Value::Null)
        }
        match self {
            Object::Secret(o) => value(o),
            Object::PersistentVolumeClaim(o) => value(o),
            Object::Deployment(o) => value(o),
            Object::StatefulSet(o) => value(o),
            Object::Service(o) => value(o),
            Object::Ingress(o) => value(o),
            Object::HttpRoute(o) => value(o),
            Object::Certificate(o) => value(o),
            Object::ClusterIssuer(o) => value(o),
        }
    }
}

/// The manifests of one app, and what they could not say.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Export {
    pub objects: Vec<Object>,
    /// One line each: a haloy.yaml setting the manifests do not express, and what to do.
    pub notes: Vec<String>,
}

impl Export {
    /// All objects as one multi-document YAML stream.
    pub fn to_yaml(&self) -> Result<String, ExportError> {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(&object.to_yaml()?);
        }
        Ok(out)
    }
}

/// Maps one resolved app (one target) to manifests.
pub fn export(app: &ResolvedApp, options: &Options) -> Result<Export, ExportError> {
    let mut out = Export::default();
    let names = Names::new(app, options);
    workload::add(app, &names, &mut out)?;
    routing::add(app, options, &names, &mut out);
    out.notes.extend(unexpressed(app));
    Ok(out)
}

/// Names and labels shared by an app's objects.
struct Names {
    app: String,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Names {
    fn new(app: &ResolvedApp, options: &Options) -> Names {
        let mut labels = BTreeMap::new();
        labels.insert("app.kubernetes.io/name".to_string(), app.name.clone());
        labels.insert(
            "app.kubernetes.io/managed-by".to_string(),
            "haloy".to_string(),
        );
        Names {
            app: app.name.clone(),
            namespace: options.namespace.clone(),
            labels,
        }
    }

    /// The selector: the name label only, so a change of other labels never orphans pods.
    fn selector(&self) -> BTreeMap<String, String> {
        let mut selector = BTreeMap::new();
        selector.insert("app.kubernetes.io/name".to_string(), self.app.clone());
        selector
    }

    fn meta(&self, name: impl Into<String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: self.namespace.clone(),
            labels: Some(self.labels.clone()),
            ..ObjectMeta::default()
        }
    }

    fn env_secret(&self) -> String {
        format!("{}-env", self.app)
    }

    fn registry_secret(&self) -> String {
        format!("{}-registry", self.app)
    }

    fn tls_secret(&self) -> String {
        format!("{}-tls", self.app)
    }
}

/// Settings with no Kubernetes counterpart, each with what to do instead.
fn unexpressed(app: &ResolvedApp) -> Vec<String> {
    use crate::config::NamingStrategy;
    let mut notes = Vec::new();
    let hooks = [
        ("pre_deploy", &app.pre_deploy),
        ("post_deploy", &app.post_deploy),
        ("global_pre_deploy", &app.global_pre_deploy),
        ("global_post_deploy", &app.global_post_deploy),
    ];
    for (key, commands) in hooks {
        if !commands.is_empty() {
            notes.push(format!(
                "{key}: not exported; run these commands yourself around `kubectl apply`"
            ));
        }
    }
    if app.naming_strategy == NamingStrategy::Static {
        notes.push(
            "naming_strategy: static: not exported; Kubernetes names pods after the Deployment"
                .into(),
        );
    }
    if let Some(network) = &app.network {
        notes.push(format!(
            "network: `{network}` not exported; pods in a namespace reach each other through \
             Services (add a NetworkPolicy to isolate them)"
        ));
    }
    if app.init {
        notes.push(
            "init: true: not exported; Kubernetes has no per-container init wrapper \
             (shareProcessNamespace is not the same): put tini in the image's ENTRYPOINT"
                .into(),
        );
    }
    if let Some(pids) = app.resources.as_ref().and_then(|r| r.pids) {
        notes.push(format!(
            "resources.pids: {pids} not exported; the pod API has no per-pod process limit \
             (the kubelet's podPidsLimit is set per node)"
        ));
    }
    if app.protected {
        notes.push("protected: not exported; protect the namespace with RBAC instead".into());
    }
    if app.server.is_some() {
        notes.push(format!(
            "server: `{}` not used; apply with the kubectl context of your cluster",
            app.server.as_deref().unwrap_or_default()
        ));
    }
    notes
}

#[cfg(test)]
#[path = "../tests/kubernetes.rs"]
mod tests;
