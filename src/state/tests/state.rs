//! Unit tests of `state`.

use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn history_is_written_atomically_and_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.json");
    write_atomic(&path, b"{\"deployments\":[]}").unwrap();
    write_atomic(&path, b"{\"deployments\":[],\"stopped\":true}").unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let store = StateStore::open(dir.path()).unwrap();
    assert!(store.apps().unwrap().is_empty());
    let mode = fs::metadata(dir.path().join("deployments"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn corrupt_history_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    fs::write(dir.path().join("deployments/web.json"), b"{not json").unwrap();
    let err = store.history("web").unwrap_err().to_string();
    assert!(err.contains("deployments/web.json"), "{err}");
    assert!(err.contains("corrupt"), "{err}");
}
