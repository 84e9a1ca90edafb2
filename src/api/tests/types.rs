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
