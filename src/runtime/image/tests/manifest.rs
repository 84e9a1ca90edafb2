//! Unit tests of `runtime::image::manifest`.

use super::*;

fn entry(os: &str, arch: &str, digest: &str) -> Descriptor {
    Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: digest.into(),
        size: 1,
        platform: Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: None,
        }),
        annotations: BTreeMap::new(),
    }
}

#[test]
fn picks_linux_host_arch_and_lists_others_when_missing() {
    let entries = vec![
        entry("linux", "arm64", "a"),
        entry("windows", "amd64", "b"),
        entry("linux", "amd64", "c"),
    ];
    assert_eq!(select_platform(&entries, "amd64").unwrap().digest, "c");
    let err = select_platform(&entries[..2], "amd64").unwrap_err();
    assert_eq!(err, "linux/arm64, windows/amd64");
}

#[test]
fn chain_ids_follow_the_oci_definition() {
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let chains = chain_ids(&[a.clone(), b.clone()]);
    assert_eq!(chains[0], a);
    assert_eq!(chains[1], sha256_digest(format!("{a} {b}").as_bytes()));
}

#[test]
fn image_config_fields_are_extracted() {
    let raw = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Cmd":["sh"],"WorkingDir":"/app","User":"1000","ExposedPorts":{"8080/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config = ImageConfigFile::parse(raw).unwrap().image_config();
    assert_eq!(config.env, ["A=1"]);
    assert_eq!(config.cmd, ["sh"]);
    assert_eq!(config.working_dir.as_deref(), Some("/app"));
    assert_eq!(config.user.as_deref(), Some("1000"));
    assert_eq!(config.exposed_ports, ["8080/tcp"]);
}
