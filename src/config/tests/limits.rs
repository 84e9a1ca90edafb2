//! Unit tests of `config::limits` and the "every haloy.yaml key reaches `ResolvedApp`" check.

use std::collections::HashMap;

use super::*;
use crate::config::deploy::TARGET_KEYS;
use crate::config::tree::Format;
use crate::config::{resolve_text, ResolvedApp};

const BASE: &str = "name: web\nimage: nginx:1.27\n";

/// A value for every key in `TARGET_KEYS` that differs from the default. A key added to
/// `TARGET_KEYS` without a line here fails `every_target_key_reaches_the_resolved_app`: add
/// one, and the test then proves the key is decoded, merged and resolved.
const SAMPLES: &[(&str, &str)] = &[
    ("name", "name: other\nimage: nginx:1.27\n"),
    ("server", "server: haloy.example.com\n"),
    ("api_token", "api_token: secret-token\n"),
    ("image", "name: web\nimage: busybox:1.36\n"),
    (
        "image_key",
        "name: web\nimages:\n  alt:\n    repository: busybox\n    tag: \"1.36\"\nimage_key: alt\n",
    ),
    ("replicas", "replicas: 3\n"),
    ("port", "port: 3000\n"),
    ("health_check_path", "health_check_path: /healthz\n"),
    ("min_ready_seconds", "min_ready_seconds: 5\n"),
    ("deployment_strategy", "deployment_strategy: replace\n"),
    (
        "naming_strategy",
        "naming_strategy: static\ndeployment_strategy: replace\n",
    ),
    ("domains", "domains:\n  - domain: example.com\n"),
    ("env", "env:\n  - name: A\n    value: b\n"),
    ("volumes", "volumes:\n  - data:/data\n"),
    ("network", "network: backend\n"),
    ("pre_deploy", "pre_deploy: [\"echo pre\"]\n"),
    ("post_deploy", "post_deploy: [\"echo post\"]\n"),
    ("protected", "protected: true\n"),
    ("preset", "preset: service\n"),
    (
        "acme_email",
        "domains:\n  - domain: example.com\nacme_email: ops@example.com\n",
    ),
    ("resources", "resources:\n  memory: 512Mi\n"),
    ("security", "security:\n  seccomp: unconfined\n"),
    ("stop_timeout", "stop_timeout: 5\n"),
    ("init", "init: true\n"),
];

fn resolve_one(text: &str) -> Result<ResolvedApp, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let (apps, _) = resolve_text(
        text,
        Format::Yaml,
        "haloy.yaml",
        dir.path(),
        &HashMap::new(),
    )
    .map_err(|e| e.lines())?;
    Ok(apps.into_iter().next().unwrap())
}

/// A sample that does not name the app gets the base's name and image.
fn document(sample: &str) -> String {
    if sample.starts_with("name:") {
        sample.to_string()
    } else {
        format!("{BASE}{sample}")
    }
}

#[test]
fn every_target_key_has_a_sample_and_no_sample_is_stale() {
    for key in TARGET_KEYS {
        assert!(
            SAMPLES.iter().any(|(k, _)| k == key),
            "`{key}` is in TARGET_KEYS but has no sample in src/config/tests/limits.rs"
        );
    }
    for (key, _) in SAMPLES {
        assert!(TARGET_KEYS.contains(key), "sample for unknown key `{key}`");
    }
}

#[test]
fn every_target_key_reaches_the_resolved_app() {
    let base = resolve_one(BASE).unwrap();
    let base_target = resolve_one(&format!("{BASE}targets:\n  prod: {{}}\n")).unwrap();
    for (key, sample) in SAMPLES {
        let text = document(sample);
        let app = resolve_one(&text)
            .unwrap_or_else(|problems| panic!("sample of `{key}` is refused: {problems:?}"));
        assert_ne!(
            app, base,
            "`{key}` is decoded but does not reach ResolvedApp"
        );
        // A key must also survive the target merge: the same value set in a target.
        if !matches!(*key, "name" | "image" | "image_key") {
            let in_target = format!("{BASE}targets:\n  prod:\n{}", indent(sample));
            let app = resolve_one(&in_target)
                .unwrap_or_else(|problems| panic!("`{key}` in a target is refused: {problems:?}"));
            assert_ne!(
                app, base_target,
                "`{key}` set in a target is lost in the merge"
            );
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn decoder_and_problems_report_the_same_limit() {
    let refused = resolve_one("name: web\nimage: nginx:1.27\nreplicas: 1001\n").unwrap_err();
    assert!(
        refused
            .iter()
            .any(|p| p.contains(&REPLICAS.out_of_range(1001))),
        "{refused:?}"
    );
    let mut app = resolve_one(BASE).unwrap();
    app.replicas = 1001;
    app.min_ready_seconds = 601;
    let problems = app.problems();
    assert!(
        problems.contains(&REPLICAS.check(1001u32).unwrap_err()),
        "{problems:?}"
    );
    assert!(problems.contains(&MIN_READY_SECONDS.check(601u32).unwrap_err()));
    assert_eq!(
        REPLICAS.check(0u32).unwrap_err(),
        "replicas: 0 is out of range; must be between 1 and 1000"
    );
    assert!(PIDS.check(u64::MAX).is_err());
    assert!(PORT.check(8080u16).is_ok());
}
