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

/// The stored formats of the previous release, checked in (integration-tests/fixtures).
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/fixtures/state/v1/state")
}

fn copy_fixture_history(to: &Path) -> StateStore {
    let store = StateStore::open(to).unwrap();
    for entry in fs::read_dir(fixtures().join("deployments")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join("deployments").join(entry.file_name())).unwrap();
    }
    store
}

#[test]
fn format_1_history_loads_with_every_field_and_upgrades_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = copy_fixture_history(dir.path());
    assert_eq!(store.apps().unwrap(), ["fixture", "stopped-app"]);
    let history = store.history("fixture").unwrap();
    let statuses: Vec<DeployStatus> = history.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            DeployStatus::Superseded,
            DeployStatus::Failed,
            DeployStatus::Superseded,
            DeployStatus::Succeeded
        ]
    );
    let current = store.current("fixture").unwrap().unwrap();
    assert_eq!(current.id, "01JDFX00000000000000000004");
    assert_eq!(
        current.rollback_of.as_deref(),
        Some("01JDFX00000000000000000001")
    );
    assert_eq!(current.config.stop_timeout, 5);
    assert!(!current.config.init, "format 1 configs have no init");
    assert_eq!(current.config.domains[0].aliases, ["www.fixture.test"]);
    assert!(store.is_stopped("stopped-app").unwrap());
    assert!(!store.is_stopped("fixture").unwrap());
    assert_eq!(store.last_operation("fixture").unwrap(), None);

    // The first write stores the current format, and nothing is lost on the way.
    store.set_stopped("fixture", true).unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("deployments/fixture.json")).unwrap())
            .unwrap();
    assert_eq!(written["format_version"], HISTORY_FORMAT);
    assert_eq!(store.history("fixture").unwrap().len(), 4);
    assert!(store.is_stopped("fixture").unwrap());
}

#[test]
fn a_history_of_a_newer_format_is_refused_by_name_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let path = dir.path().join("deployments/web.json");
    let newer = br#"{"format_version": 99, "deployments": "a shape this version cannot read"}"#;
    fs::write(&path, newer).unwrap();
    let err = store.history("web").unwrap_err().to_string();
    assert!(err.contains("deployments/web.json"), "{err}");
    assert!(err.contains("format_version 99"), "{err}");
    assert!(store.set_stopped("web", true).is_err());
    assert!(store.fail_interrupted().is_err());
    assert_eq!(
        fs::read(&path).unwrap(),
        newer,
        "the newer file was rewritten"
    );
}

#[test]
fn interrupted_jobs_are_recorded_as_failed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let op = OperationRecord {
        id: "01STOP".into(),
        kind: OperationKind::Stop,
        state: OperationState::Running,
        started_at: "2026-12-01T10:00:00Z".into(),
        finished_at: None,
        message: None,
    };
    store.set_last_operation("web", op).unwrap();
    store.fail_interrupted().unwrap();
    let op = store.last_operation("web").unwrap().unwrap();
    assert_eq!(op.state, OperationState::Failed);
    assert!(op.message.unwrap().contains("interrupted"));
}
