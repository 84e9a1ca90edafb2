use super::*;

fn container_spec() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sh", "/app/start.sh"],
            "env": ["PATH=/bin", "SECRET=x"],
            "cwd": "/app",
            "user": {"uid": 65534, "gid": 65534},
            "noNewPrivileges": true,
            "consoleSize": {"height": 1, "width": 1}
        },
        "root": {"path": "rootfs"}
    }))
    .unwrap()
}

#[test]
fn the_exec_runs_as_the_app_with_its_own_command() {
    let spec = ExecSpec {
        args: vec!["echo".into(), "hi".into()],
        ..ExecSpec::default()
    };
    let process = exec_process_json(&container_spec(), &spec).unwrap();
    assert_eq!(process["args"], serde_json::json!(["echo", "hi"]));
    assert_eq!(process["terminal"], serde_json::json!(false));
    assert_eq!(process["user"]["uid"], serde_json::json!(65534));
    assert_eq!(process["env"][1], serde_json::json!("SECRET=x"));
    assert_eq!(process["noNewPrivileges"], serde_json::json!(true));
    assert!(process.get("consoleSize").is_none());
}

#[test]
fn a_tty_exec_gets_the_clients_terminal_size() {
    let spec = ExecSpec {
        args: vec!["sh".into()],
        tty: true,
        stdin: true,
        console_size: Some((101, 37)),
    };
    let process = exec_process_json(&container_spec(), &spec).unwrap();
    assert_eq!(process["terminal"], serde_json::json!(true));
    assert_eq!(
        process["consoleSize"],
        serde_json::json!({"height": 37, "width": 101})
    );
}

#[test]
fn a_spec_without_process_is_a_clear_error() {
    let err = exec_process_json(b"{\"root\":{}}", &ExecSpec::default()).unwrap_err();
    assert!(err.contains("no `process`"), "{err}");
    let err = exec_process_json(b"not json", &ExecSpec::default()).unwrap_err();
    assert!(err.contains("not JSON"), "{err}");
}
