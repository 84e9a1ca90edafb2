//! Unit tests of `jobs`.

use super::*;

#[test]
fn a_missing_init_binary_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tini-static");
    let err = check_init_binary(&missing).unwrap_err();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("apt-get install tini"), "{err}");
    std::fs::write(&missing, b"not executable").unwrap();
    let err = check_init_binary(&missing).unwrap_err();
    assert!(err.contains("not an executable file"), "{err}");
    std::fs::set_permissions(
        &missing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(check_init_binary(&missing).is_ok());
}

#[test]
fn recorded_operations_read_well_on_the_wire() {
    let op = OperationRecord {
        id: "01JOB".into(),
        kind: OperationKind::Remove,
        state: OperationState::Failed,
        started_at: "2026-12-01T10:00:00Z".into(),
        finished_at: Some("2026-12-01T10:00:05Z".into()),
        message: Some("cannot stop".into()),
    };
    let wire = summary(&op);
    assert_eq!(
        (
            wire.kind.as_str(),
            wire.state.as_str(),
            wire.job_id.as_str()
        ),
        ("remove", "failed", "01JOB")
    );
}
