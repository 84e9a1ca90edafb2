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
