//! Unit tests of `tls::store`.

use super::*;

#[test]
fn save_load_remove_roundtrip_with_private_modes() {
    let dir = tempfile::tempdir().unwrap();
    let store = CertStore::open(dir.path()).unwrap();
    let meta = StoredMeta {
        names: vec!["a.test".into()],
        directory: "https://ca/dir".into(),
        unused_since: None,
    };
    store.save("a.test", b"CHAIN", b"KEY", &meta).unwrap();
    let loaded = store.load("a.test").unwrap().unwrap();
    assert_eq!(loaded.chain_pem, b"CHAIN");
    assert_eq!(loaded.key_pem, b"KEY");
    assert_eq!(loaded.meta, meta);
    for file in [CERT_FILE, KEY_FILE, META_FILE] {
        let mode = fs::metadata(store.root().join("a.test").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert_eq!(store.domains().unwrap(), vec!["a.test".to_string()]);
    store.remove("a.test").unwrap();
    assert!(store.load("a.test").unwrap().is_none());
}

#[test]
fn path_escapes_are_rejected() {
    for bad in [
        "../etc", "a/b", "", "A.test", ".hidden", "a.", "-a.test", "10.0.0.1",
    ] {
        assert!(validate_domain(bad).is_err(), "{bad}");
    }
    assert!(validate_domain("www.app-1.test").is_ok());
}

#[test]
fn format_1_meta_loads_and_a_newer_one_is_never_overwritten() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration-tests/fixtures/state/v1/state/certs/fixture.test/meta.json");
    let bytes = fs::read(&fixture).unwrap();
    let meta = parse_meta(&fixture, &bytes).unwrap();
    assert_eq!(meta.names, ["fixture.test", "www.fixture.test"]);
    assert_eq!(meta.unused_since, None);

    let dir = tempfile::tempdir().unwrap();
    let store = CertStore::open(dir.path()).unwrap();
    let meta_path = dir.path().join("certs/a.test/meta.json");
    fs::create_dir_all(meta_path.parent().unwrap()).unwrap();
    fs::write(dir.path().join("certs/a.test/cert.pem"), b"NEWER CHAIN").unwrap();
    fs::write(dir.path().join("certs/a.test/key.pem"), b"NEWER KEY").unwrap();
    let newer = br#"{"format_version": 7, "names": ["a.test"], "directory": "d"}"#;
    fs::write(&meta_path, newer).unwrap();
    let err = store
        .load("a.test")
        .err()
        .expect("newer meta refused")
        .to_string();
    assert!(
        err.contains("a.test/meta.json") && err.contains("format_version 7"),
        "{err}"
    );
    assert!(store.save("a.test", b"CHAIN", b"KEY", &meta).is_err());
    assert_eq!(fs::read(&meta_path).unwrap(), newer);
    assert_eq!(
        fs::read(dir.path().join("certs/a.test/key.pem")).unwrap(),
        b"NEWER KEY"
    );

    store.save("b.test", b"CHAIN", b"KEY", &meta).unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("certs/b.test/meta.json")).unwrap())
            .unwrap();
    assert_eq!(written["format_version"], META_FORMAT);
    assert_eq!(store.load("b.test").unwrap().unwrap().meta, meta);
}
