//! Golden files for the examples, typed round-trips through k8s-openapi, and the rule that
//! secrets appear only in Secret objects.

use super::*;
use crate::config::{load_deploy_config, ResolvedApp};
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn apps(example: &str) -> Vec<ResolvedApp> {
    let path = repo().join("examples").join(example).join("haloy.yaml");
    load_deploy_config(Some(&path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .apps
}

fn apps_from(yaml: &str) -> Vec<ResolvedApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("haloy.yaml");
    std::fs::write(&path, yaml).expect("write config");
    load_deploy_config(Some(&path))
        .unwrap_or_else(|e| panic!("{e}"))
        .apps
}

/// All targets of an example as the CLI prints them: notes as comments, then the manifests.
fn rendered(apps: &[ResolvedApp], options: &Options) -> String {
    let mut out = String::new();
    for app in apps {
        let manifests = export(app, options).expect("export");
        out.push_str(&format!("# target: {}\n", app.label()));
        for note in &manifests.notes {
            out.push_str(&format!("# note: {note}\n"));
        }
        out.push_str(&manifests.to_yaml().expect("yaml"));
    }
    out
}

/// Compares with `src/export/tests/golden/NAME.yaml`; `UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, actual: &str) {
    let path = repo()
        .join("src/export/tests/golden")
        .join(format!("{name}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the export (UPDATE_GOLDEN=1 rewrites it):\n{actual}",
        path.display()
    );
}

#[test]
fn examples_match_their_golden_manifests() {
    let cases = [
        ("basic-scaling", Options::default()),
        ("environments", Options::default()),
        ("high-availability", Options::default()),
        ("health-checks", Options::default()),
        (
            "high-availability",
            Options {
                routing: Routing::Gateway {
                    name: "public".into(),
                    namespace: Some("infra".into()),
                },
                cert_manager_issuer: Some("letsencrypt".into()),
                namespace: Some("prod".into()),
            },
        ),
    ];
    for (i, (example, options)) in cases.iter().enumerate() {
        let name = if i < 4 {
            example.to_string()
        } else {
            format!("{example}-gateway-cert-manager")
        };
        check_golden(&name, &rendered(&apps(example), options));
    }
}

/// Every object survives a round trip through the k8s-openapi type of its kind (generated
/// from Kubernetes' official OpenAPI spec): a misspelt or unknown field would be dropped, a
/// missing required field or a wrong type refused, and the JSON would differ.
fn assert_typed(object: &Object) {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
    use k8s_openapi::api::networking::v1::Ingress;
    fn round<T: serde::de::DeserializeOwned + serde::Serialize>(
        json: &serde_json::Value,
    ) -> serde_json::Value {
        let typed: T =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}:\n{json:#}"));
        serde_json::to_value(typed).expect("encode")
    }
    let json = object.to_json();
    let back = match object {
        Object::Secret(_) => round::<Secret>(&json),
        Object::PersistentVolumeClaim(_) => round::<PersistentVolumeClaim>(&json),
        Object::Deployment(_) => round::<Deployment>(&json),
        Object::StatefulSet(_) => round::<StatefulSet>(&json),
        Object::Service(_) => round::<Service>(&json),
        Object::Ingress(_) => round::<Ingress>(&json),
        // CRDs: apiVersion/kind checked here; fields by the typed structs in `crds`.
        Object::HttpRoute(_) | Object::Certificate(_) | Object::ClusterIssuer(_) => {
            let api = json["apiVersion"].as_str().unwrap_or_default();
            assert!(
                api == "gateway.networking.k8s.io/v1" || api == "cert-manager.io/v1",
                "{api}"
            );
            json.clone()
        }
    };
    assert_eq!(json, back, "{} `{}`", object.kind(), object.name());
    assert_eq!(json["kind"], object.kind());
}

const EVERYTHING: &str = r#"
name: shop
image:
  repository: registry.example.com/shop/web
  tag: "2.1.0"
  registry:
    server: registry.example.com
    username: deployer
    password: registry-password-xyz
replicas: 4
port: 3000
health_check_path: /up
min_ready_seconds: 10
deployment_strategy: replace
acme_email: ops@example.com
domains:
  - domain: shop.example.com
    aliases: [www.shop.example.com]
  - domain: shop.example.org
env:
  - name: DATABASE_URL
    value: postgres://shop:db-password-abc@db:5432/shop
  - name: MODE
    value: production
volumes:
  - uploads:/app/uploads
resources:
  memory: 512Mi
  cpus: 0.5
"#;

#[test]
fn every_object_is_valid_for_its_kubernetes_type() {
    let option_sets = [
        Options::default(),
        Options {
            routing: Routing::Gateway {
                name: "gw".into(),
                namespace: None,
            },
            cert_manager_issuer: Some("le".into()),
            namespace: Some("shop".into()),
        },
    ];
    let database = "name: db\nimage: postgres:16\npreset: database\nvolumes:\n  - data:/var/lib/postgresql/data\n";
    for options in &option_sets {
        for app in apps_from(EVERYTHING).iter().chain(&apps_from(database)) {
            for object in export(app, options).expect("export").objects {
                assert_typed(&object);
            }
        }
        for example in [
            "basic-scaling",
            "environments",
            "high-availability",
            "health-checks",
        ] {
            for app in apps(example) {
                for object in export(&app, options).expect("export").objects {
                    assert_typed(&object);
                }
            }
        }
    }
}

#[test]
fn secrets_appear_only_in_secret_objects() {
    let secrets = ["registry-password-xyz", "db-password-abc", "production"];
    let app = &apps_from(EVERYTHING)[0];
    let options = Options {
        cert_manager_issuer: Some("le".into()),
        ..Options::default()
    };
    let manifests = export(app, &options).expect("export");
    let mut in_secrets = 0;
    for object in &manifests.objects {
        let text = object.to_yaml().expect("yaml");
        let found: Vec<&&str> = secrets.iter().filter(|s| text.contains(**s)).collect();
        if matches!(object, Object::Secret(_)) {
            in_secrets += found.len();
        } else {
            assert!(
                found.is_empty(),
                "{} `{}` holds {found:?}:\n{text}",
                object.kind(),
                object.name()
            );
        }
    }
    assert_eq!(
        in_secrets,
        secrets.len(),
        "each secret value is in a Secret"
    );
    assert!(manifests
        .notes
        .iter()
        .all(|n| secrets.iter().all(|s| !n.contains(s))));
}

#[test]
fn rollout_settings_map_to_the_deployment() {
    let app = &apps_from(EVERYTHING)[0];
    let manifests = export(app, &Options::default()).expect("export");
    let Some(Object::Deployment(d)) = manifests
        .objects
        .iter()
        .find(|o| matches!(o, Object::Deployment(_)))
    else {
        panic!("no Deployment");
    };
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(4));
    assert_eq!(spec.min_ready_seconds, Some(10));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate")
    );
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(i64::from(app.stop_timeout))
    );
    let c = &pod.containers[0];
    let probe = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("probe");
    assert_eq!(probe.path.as_deref(), Some("/up"));
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits["cpu"].0, "500m");
    assert_eq!(limits["memory"].0, (512u64 << 20).to_string());
    // Four replicas share the uploads volume: ReadWriteMany, and a note says to check it.
    assert!(manifests.notes.iter().any(|n| n.contains("ReadWriteMany")));
}

#[test]
fn a_database_preset_is_a_statefulset_with_claim_templates() {
    let app = &apps_from(
        "name: db\nimage: postgres:16\npreset: database\nvolumes:\n  - data:/var/lib/postgresql/data\n",
    )[0];
    let manifests = export(app, &Options::default()).expect("export");
    let Some(Object::StatefulSet(s)) = manifests
        .objects
        .iter()
        .find(|o| matches!(o, Object::StatefulSet(_)))
    else {
        panic!(
            "no StatefulSet: {:?}",
            manifests
                .objects
                .iter()
                .map(Object::kind)
                .collect::<Vec<_>>()
        );
    };
    let spec = s.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let claims = spec.volume_claim_templates.as_ref().expect("claims");
    let mount = &spec.template.spec.as_ref().expect("pod").containers[0]
        .volume_mounts
        .as_ref()
        .expect("mounts")[0];
    assert_eq!(
        claims[0].metadata.name.as_deref(),
        Some(mount.name.as_str())
    );
    assert!(!manifests
        .objects
        .iter()
        .any(|o| matches!(o, Object::Deployment(_) | Object::PersistentVolumeClaim(_))));
}

#[test]
fn a_host_bind_is_refused_naming_the_volume_and_the_alternative() {
    let app = &apps_from("name: web\nimage: nginx:1\nvolumes:\n  - /srv/data:/data\n")[0];
    let err = export(app, &Options::default()).expect_err("host bind");
    let text = err.to_string();
    assert!(
        text.contains("/srv/data:/data") && text.contains("named volume"),
        "{text}"
    );
}

#[test]
fn settings_kubernetes_cannot_express_are_listed() {
    let app = &apps_from(
        "name: web\nimage: nginx:1\ninit: true\nnaming_strategy: static\ndeployment_strategy: replace\npre_deploy: [\"make\"]\nresources:\n  pids: 100\n",
    )[0];
    let notes = export(app, &Options::default()).expect("export").notes;
    for key in [
        "init: true",
        "naming_strategy",
        "pre_deploy",
        "resources.pids",
    ] {
        assert!(
            notes.iter().any(|n| n.starts_with(key)),
            "{key} missing in {notes:#?}"
        );
    }
}
