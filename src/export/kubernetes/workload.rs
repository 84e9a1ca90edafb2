//! The workload: Deployment (or StatefulSet for `preset: database`), its pod template, the
//! env and registry Secrets, and PersistentVolumeClaims for named volumes.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy as K8sStrategy, RollingUpdateDeployment,
    StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar as K8sEnvVar, EnvVarSource, HTTPGetAction,
    LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Export, Names, Object};
use crate::config::{
    DeploymentStrategy, HistoryStrategy, Preset, PullPolicy, ResolvedApp, VolumeSpec,
};
use crate::export::ExportError;
use crate::runtime::SeccompMode as HaloySeccomp;

/// The name of the container port, used by the Service, probes and routes.
pub(super) const PORT_NAME: &str = "http";
/// Storage asked for each named volume: haloy.yaml has no size, so a note says to set one.
const VOLUME_SIZE: &str = "1Gi";
/// How long a new pod may take to answer its first health check (150 × 2 s = 5 min).
const STARTUP_PERIOD_SECONDS: i32 = 2;
const STARTUP_FAILURES: i32 = 150;

pub(super) fn add(app: &ResolvedApp, names: &Names, out: &mut Export) -> Result<(), ExportError> {
    let volumes = named_volumes(app)?;
    if let Some(secret) = env_secret(app, names) {
        out.objects.push(Object::Secret(secret));
    }
    if let Some(secret) = registry_secret(app, names) {
        out.objects.push(Object::Secret(secret));
    }
    let template = pod_template(app, names, &volumes)?;
    let replicas = int32(app, "replicas", u64::from(app.replicas))?;
    let min_ready = int32(app, "min_ready_seconds", u64::from(app.min_ready_seconds))?;
    let history = history_limit(app, out);
    let selector = LabelSelector {
        match_labels: Some(names.selector()),
        ..LabelSelector::default()
    };
    if app.preset == Some(Preset::Database) {
        out.objects.push(Object::StatefulSet(StatefulSet {
            metadata: names.meta(&names.app),
            spec: Some(StatefulSetSpec {
                // `preset: database` allows one replica only (static naming).
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                revision_history_limit: history,
                selector,
                service_name: Some(names.app.clone()),
                template,
                // A template's name is the name its pod mounts it by.
                volume_claim_templates: non_empty(
                    volumes
                        .iter()
                        .map(|v| claim(names, volume_name(v), false))
                        .collect(),
                ),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }));
    } else {
        for volume in &volumes {
            let name = claim_name(names, volume);
            out.objects.push(Object::PersistentVolumeClaim(claim(
                names,
                name,
                app.replicas > 1,
            )));
        }
        out.objects.push(Object::Deployment(Deployment {
            metadata: names.meta(&names.app),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                revision_history_limit: history,
                selector,
                strategy: Some(strategy(app.deployment_strategy)),
                template,
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }));
    }
    for volume in &volumes {
        out.notes.push(format!(
            "volumes: `{}` gets a PersistentVolumeClaim of {VOLUME_SIZE} from the default \
             StorageClass{}; edit its size and class to fit",
            volume.name,
            if app.replicas > 1 && app.preset != Some(Preset::Database) {
                " with ReadWriteMany (several replicas mount it)"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// A `name:/path` volume of the app.
struct NamedVolume {
    name: String,
    container: String,
    read_only: bool,
}

fn named_volumes(app: &ResolvedApp) -> Result<Vec<NamedVolume>, ExportError> {
    app.volumes
        .iter()
        .map(|v| match v {
            VolumeSpec::Named {
                name,
                container,
                read_only,
            } => Ok(NamedVolume {
                name: name.clone(),
                container: container.clone(),
                read_only: *read_only,
            }),
            VolumeSpec::Bind {
                host, container, ..
            } => Err(ExportError::HostBind {
                app: app.name.clone(),
                host: host.clone(),
                container: container.clone(),
            }),
        })
        .collect()
}

fn claim_name(names: &Names, volume: &NamedVolume) -> String {
    format!(
        "{}-{}",
        names.app,
        volume.name.replace('_', "-").to_lowercase()
    )
}

fn claim(names: &Names, name: String, shared: bool) -> PersistentVolumeClaim {
    let mut requests = BTreeMap::new();
    requests.insert("storage".to_string(), Quantity(VOLUME_SIZE.to_string()));
    let mode = if shared {
        "ReadWriteMany"
    } else {
        "ReadWriteOnce"
    };
    PersistentVolumeClaim {
        metadata: names.meta(name),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![mode.to_string()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(requests),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// `rolling` → one extra pod at a time, never one fewer ready (haloy's rolling deploy);
/// `replace` → all old pods stop before the new ones start.
fn strategy(strategy: DeploymentStrategy) -> K8sStrategy {
    match strategy {
        DeploymentStrategy::Rolling => K8sStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        },
        DeploymentStrategy::Replace => K8sStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        },
    }
}

/// `image.history.count` old versions kept for rollback ↔ old ReplicaSets kept for
/// `kubectl rollout undo`.
fn history_limit(app: &ResolvedApp, out: &mut Export) -> Option<i32> {
    match app.image.history.strategy {
        HistoryStrategy::None => Some(0),
        HistoryStrategy::Local => i32::try_from(app.image.history.count).ok(),
        HistoryStrategy::Registry => {
            out.notes.push(
                "image.history.strategy: registry: rollback with `kubectl rollout undo`, which \
                 pulls the old image from the registry as haloy would"
                    .into(),
            );
            i32::try_from(app.image.history.count).ok()
        }
    }
}

fn pod_template(
    app: &ResolvedApp,
    names: &Names,
    volumes: &[NamedVolume],
) -> Result<PodTemplateSpec, ExportError> {
    let grace = i64::from(app.stop_timeout);
    let spec = PodSpec {
        containers: vec![container(app, names, volumes)?],
        termination_grace_period_seconds: Some(grace),
        image_pull_secrets: app.image.registry.as_ref().map(|_| {
            vec![LocalObjectReference {
                name: names.registry_secret(),
            }]
        }),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(seccomp(app.security.seccomp)),
            ..PodSecurityContext::default()
        }),
        volumes: non_empty(if app.preset == Some(Preset::Database) {
            Vec::new() // volumeClaimTemplates mount them
        } else {
            volumes
                .iter()
                .map(|v| Volume {
                    name: volume_name(v),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name(names, v),
                        read_only: None,
                    }),
                    ..Volume::default()
                })
                .collect()
        }),
        ..PodSpec::default()
    };
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(names.labels.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    })
}

/// The volume's name inside the pod: the claim template's name for a StatefulSet.
fn volume_name(volume: &NamedVolume) -> String {
    volume.name.replace('_', "-").to_lowercase()
}

fn seccomp(profile: HaloySeccomp) -> SeccompProfile {
    SeccompProfile {
        type_: match profile {
            HaloySeccomp::Default => "RuntimeDefault".into(),
            HaloySeccomp::Unconfined => "Unconfined".into(),
        },
        localhost_profile: None,
    }
}

fn container(
    app: &ResolvedApp,
    names: &Names,
    volumes: &[NamedVolume],
) -> Result<Container, ExportError> {
    let port = i32::from(app.port);
    Ok(Container {
        name: app.name.clone(),
        image: Some(app.image.reference()),
        image_pull_policy: Some(pull_policy(app.image.pull_policy).into()),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: non_empty(env_refs(app, names)),
        readiness_probe: Some(probe(app, 5, 3)),
        startup_probe: Some(probe(app, STARTUP_PERIOD_SECONDS, STARTUP_FAILURES)),
        resources: resources(app),
        volume_mounts: non_empty(
            volumes
                .iter()
                .map(|v| VolumeMount {
                    name: volume_name(v),
                    mount_path: v.container.clone(),
                    read_only: v.read_only.then_some(true),
                    ..VolumeMount::default()
                })
                .collect(),
        ),
        ..Container::default()
    })
}

fn pull_policy(policy: PullPolicy) -> &'static str {
    match policy {
        PullPolicy::Always => "Always",
        PullPolicy::IfMissing => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

/// An HTTP GET of health_check_path: ready on the first 2xx/3xx, as haloy's health check.
fn probe(app: &ResolvedApp, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(app.health_check_path.clone()),
            port: IntOrString::String(PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn resources(app: &ResolvedApp) -> Option<ResourceRequirements> {
    let limits = app.resources.as_ref()?;
    let mut map = BTreeMap::new();
    if let Some(bytes) = limits.memory_bytes {
        map.insert("memory".to_string(), Quantity(bytes.to_string()));
    }
    if let Some(cpus) = limits.cpus {
        // Millicores: the exact form for any fraction haloy accepts.
        let milli = (cpus * 1000.0).round() as u64;
        map.insert("cpu".to_string(), Quantity(format!("{milli}m")));
    }
    if map.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        limits: Some(map),
        ..ResourceRequirements::default()
    })
}

/// Every env value is read from the app's Secret: haloy.yaml does not mark which literal
/// values are sensitive, and API keys are often written there, so none is put in plain text.
fn env_refs(app: &ResolvedApp, names: &Names) -> Vec<K8sEnvVar> {
    app.env
        .iter()
        .map(|e| K8sEnvVar {
            name: e.name.clone(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names.env_secret(),
                    key: e.name.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect()
}

fn env_secret(app: &ResolvedApp, names: &Names) -> Option<Secret> {
    if app.env.is_empty() {
        return None;
    }
    let data: BTreeMap<String, String> = app
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    Some(Secret {
        metadata: names.meta(names.env_secret()),
        type_: Some("Opaque".into()),
        string_data: Some(data),
        ..Secret::default()
    })
}

/// `image.registry` credentials as a dockerconfigjson pull secret.
fn registry_secret(app: &ResolvedApp, names: &Names) -> Option<Secret> {
    let auth = app.image.registry.as_ref()?;
    let pair = format!("{}:{}", auth.username, auth.password.expose());
    let config = serde_json::json!({
        "auths": {
            auth.server.clone(): {
                "username": auth.username,
                "password": auth.password.expose(),
                "auth": base64::engine::general_purpose::STANDARD.encode(pair),
            }
        }
    });
    let mut data = BTreeMap::new();
    data.insert(".dockerconfigjson".to_string(), config.to_string());
    Some(Secret {
        metadata: names.meta(names.registry_secret()),
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        string_data: Some(data),
        ..Secret::default()
    })
}

fn int32(app: &ResolvedApp, key: &'static str, value: u64) -> Result<i32, ExportError> {
    i32::try_from(value).map_err(|_| ExportError::OutOfRange {
        app: app.name.clone(),
        key,
        value: value.to_string(),
    })
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}
