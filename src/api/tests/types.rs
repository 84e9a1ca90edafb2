//! Unit tests of `api::types`.

use super::*;

#[test]
fn event_wire_format() {
    let ev: DeployEvent = serde_json::from_str(
            r#"{"deployment_id":"01J","app":"web","time":"2026-01-01T00:00:00Z","kind":"step","replica":2,"step":"in_rotation","message":"ready"}"#,
        )
        .unwrap();
    assert_eq!(ev.kind, EventKind::Step);
    assert_eq!(ev.ok, None);
    let json = serde_json::to_value(ReplicaState::WaitingMinReady).unwrap();
    assert_eq!(json, "waiting_min_ready");
}

#[test]
fn logs_query_string() {
    let q = LogsQuery {
        tail: 5,
        follow: false,
        all: true,
        container: Some("a b".into()),
    };
    assert_eq!(
        q.to_query_string(),
        "tail=5&follow=false&all=true&container=a%20b"
    );
}

#[test]
fn a_format_1_deploy_request_still_decodes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration-tests/fixtures/state/v1/deploy-request.json");
    let bytes = std::fs::read(&path).unwrap();
    let request: DeployRequest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(request.app.name, "fixture");
    assert_eq!(request.app.replicas, 2);
    assert!(!request.app.init);
    assert!(request.app.validate_for_deploy().is_empty());
}

#[test]
fn status_without_last_operation_still_decodes() {
    let status: AppStatus = serde_json::from_str(
        r#"{"name":"web","deployment_id":"01J","image":"r/web:v1","digest":null,"strategy":"rolling","domains":[],"replicas":[]}"#,
    )
    .unwrap();
    assert_eq!(status.last_operation, None);
}
