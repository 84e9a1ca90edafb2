//! Unit tests of `runtime::task`.

use super::*;

#[test]
fn container_ids_are_valid_containerd_identifiers() {
    assert_eq!(container_id("web", "01JABCDEF", 2), "web-01jabcdef-2");
    assert_eq!(container_id("My_App!", "dep--1", 0), "my-app-dep-1-0");
    let long = container_id(&"a".repeat(200), &"b".repeat(100), 12);
    assert!(long.len() <= MAX_ID_LEN, "{}", long.len());
    assert!(long.ends_with(&format!("{}-12", "b".repeat(26))));
    for id in [long, container_id("-x-", "_", 1)] {
        assert!(id.chars().next().unwrap().is_ascii_alphanumeric(), "{id}");
        assert!(!id.contains("--"), "{id}");
        crate::network::validate_id(&id).unwrap();
    }
}

#[test]
fn hostnames_fit_63_chars() {
    assert_eq!(hostname_for("web", 3), "web-3");
    assert!(hostname_for(&"x".repeat(100), 10).len() <= 63);
}

#[test]
fn rootfs_files_come_from_the_topmost_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (upper, top, base) = (
        dir.path().join("u"),
        dir.path().join("l1"),
        dir.path().join("l2"),
    );
    for d in [&upper, &top, &base] {
        std::fs::create_dir_all(d.join("etc")).unwrap();
    }
    std::fs::write(base.join("etc/passwd"), "base").unwrap();
    std::fs::write(top.join("etc/passwd"), "top").unwrap();
    std::fs::write(base.join("etc/group"), "g").unwrap();
    let overlay = Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("workdir={}", dir.path().join("w").display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}:{}", top.display(), base.display()),
        ],
    };
    assert_eq!(
        read_rootfs_file(std::slice::from_ref(&overlay), "etc/passwd").as_deref(),
        Some("top")
    );
    assert_eq!(
        read_rootfs_file(std::slice::from_ref(&overlay), "etc/group").as_deref(),
        Some("g")
    );
    assert_eq!(read_rootfs_file(&[overlay], "etc/shadow"), None);
    let bind = Mount {
        r#type: "bind".into(),
        source: base.display().to_string(),
        target: String::new(),
        options: vec!["ro".into(), "rbind".into()],
    };
    assert_eq!(
        read_rootfs_file(&[bind], "etc/passwd").as_deref(),
        Some("base")
    );
}

#[test]
fn replica_info_comes_from_labels() {
    let container = Container {
        id: "web-d1-1".into(),
        labels: HashMap::from([
            (base_labels::APP.to_string(), "web".to_string()),
            (base_labels::DEPLOYMENT_ID.to_string(), "d1".to_string()),
            (base_labels::REPLICA.to_string(), "1".to_string()),
            (base_labels::PORT.to_string(), "8080".to_string()),
            (labels::IP.to_string(), "10.9.0.2".to_string()),
        ]),
        ..Default::default()
    };
    let process = Process {
        pid: 42,
        status: Status::Running as i32,
        ..Default::default()
    };
    let info = replica_info(container.clone(), Some(process));
    assert_eq!(
        (info.app.as_str(), info.replica, info.port),
        ("web", 1, 8080)
    );
    assert_eq!(info.ip.unwrap().to_string(), "10.9.0.2");
    assert_eq!((info.state, info.pid), (TaskStatus::Running, Some(42)));
    let stopped = Process {
        status: Status::Stopped as i32,
        exit_status: 137,
        ..Default::default()
    };
    let info = replica_info(container.clone(), Some(stopped));
    assert_eq!(
        (info.state, info.exit_code),
        (TaskStatus::Stopped, Some(137))
    );
    assert_eq!(replica_info(container, None).state, TaskStatus::Stopped);
}
