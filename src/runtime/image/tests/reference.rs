//! Unit tests of `runtime::image::reference`.

use super::*;

fn name(reference: &str) -> String {
    ImageRef::parse(reference).unwrap().to_string()
}

#[test]
fn docker_hub_short_names_are_expanded() {
    assert_eq!(name("nginx"), "docker.io/library/nginx:latest");
    assert_eq!(name("nginx:1.27"), "docker.io/library/nginx:1.27");
    assert_eq!(name("bitnami/redis"), "docker.io/bitnami/redis:latest");
    assert_eq!(name("docker.io/nginx"), "docker.io/library/nginx:latest");
    assert_eq!(
        name("index.docker.io/library/nginx:1"),
        "docker.io/library/nginx:1"
    );
    assert_eq!(
        ImageRef::parse("nginx").unwrap().endpoint(),
        "registry-1.docker.io"
    );
}

#[test]
fn registries_with_ports_and_digests() {
    assert_eq!(name("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
    assert_eq!(name("localhost/app:v2"), "localhost/app:v2");
    assert_eq!(name("ghcr.io/org/team/app:v1"), "ghcr.io/org/team/app:v1");
    let digest = format!("sha256:{}", "a".repeat(64));
    let parsed = ImageRef::parse(&format!("ghcr.io/org/app@{digest}")).unwrap();
    assert_eq!(parsed.tag, None);
    assert_eq!(parsed.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(parsed.endpoint(), "ghcr.io");
}

#[test]
fn loopback_detection() {
    assert!(ImageRef::parse("127.0.0.1:5000/a").unwrap().is_loopback());
    assert!(ImageRef::parse("localhost:5000/a").unwrap().is_loopback());
    assert!(ImageRef::parse("[::1]:5000/a").unwrap().is_loopback());
    assert!(!ImageRef::parse("10.0.0.1:5000/a").unwrap().is_loopback());
    assert!(!ImageRef::parse("nginx").unwrap().is_loopback());
}

#[test]
fn bad_references_are_rejected_with_reason() {
    for bad in [
        "",
        "Nginx",
        "nginx:",
        "nginx@sha256:xyz",
        "a//b",
        "nginx:-bad",
    ] {
        let err = ImageRef::parse(bad).unwrap_err();
        assert!(
            matches!(err, RuntimeError::InvalidReference { .. }),
            "{bad}: {err}"
        );
    }
}
