//! Unit tests of `cli::build`: builder names and which registries are pushed to over HTTP.

use super::*;

#[test]
fn builders_are_known_by_their_program_names() {
    for builder in [Builder::Docker, Builder::Podman, Builder::Buildah] {
        assert_eq!(Builder::parse(builder.program()), Some(builder));
    }
    assert_eq!(Builder::parse("kaniko"), None);
}

#[test]
fn loopback_registries_are_pushed_to_without_tls_verification() {
    assert!(registry_is_loopback("127.0.0.1:5000/app"));
    assert!(registry_is_loopback("localhost:5000/team/app"));
    assert!(!registry_is_loopback("ghcr.io/team/app"));
    assert!(!registry_is_loopback("app"));
}

#[test]
fn the_no_builder_error_names_every_tool() {
    let message = BuildError::NoBuilder {
        image: "web:latest".into(),
    }
    .to_string();
    for tool in ["docker", "podman", "buildah", "web:latest"] {
        assert!(message.contains(tool), "{message}");
    }
}
