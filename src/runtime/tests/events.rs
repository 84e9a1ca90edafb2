//! Unit tests of `runtime::events`.

use super::*;

fn encoded(container_id: &str, id: &str, status: u32) -> Vec<u8> {
    TaskExitEvent {
        container_id: container_id.into(),
        id: id.into(),
        pid: 42,
        exit_status: status,
        exited_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
    }
    .encode_to_vec()
}

#[test]
fn decodes_exit_with_any_type_url_prefix() {
    for url in [
        "containerd.events.TaskExit",
        "/containerd.events.TaskExit",
        "types.containerd.io/containerd.events.TaskExit",
    ] {
        let exit = decode_task_exit(url, &encoded("web-1", "web-1", 137)).unwrap();
        assert_eq!(exit.container_id, "web-1");
        assert_eq!(exit.exit_status, 137);
        assert_eq!(exit.exited_at, UNIX_EPOCH + Duration::new(1_700_000_000, 5));
    }
}

#[test]
fn ignores_exec_exits_and_other_events() {
    assert!(
        decode_task_exit("containerd.events.TaskExit", &encoded("web-1", "exec-7", 0)).is_none()
    );
    assert!(decode_task_exit("containerd.events.TaskStart", &encoded("a", "a", 0)).is_none());
    assert!(decode_task_exit("containerd.events.TaskExit", b"\xff\xff").is_none());
}

#[test]
fn filter_names_topic_and_namespace() {
    assert_eq!(
        exit_filter("haloy"),
        "topic==\"/tasks/exit\",namespace==\"haloy\""
    );
}
