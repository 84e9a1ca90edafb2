//! Unit tests of `runtime::spec`.

use super::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          www:x:33:33:www:/var/www:/bin/false\n\
                          app:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwww:x:33:\napp:x:1000:\nvideo:x:44:app,www\naudio:x:29:app\n";

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/bin/httpd".into()],
        cmd: vec!["-f".into(), "-p".into(), "8080".into()],
        env: vec![
            "PATH=/custom/bin".into(),
            "MODE=image".into(),
            "KEEP=1".into(),
        ],
        working_dir: Some("/www".into()),
        user: None,
        exposed_ports: vec![],
    }
}

fn files() -> TaskFiles {
    TaskFiles {
        hosts: "/state/t1/hosts".into(),
        resolv_conf: "/state/t1/resolv.conf".into(),
        hostname: "/state/t1/hostname".into(),
    }
}

fn build(image: &ImageConfig, resources: Resources, volumes: &[ResolvedVolume]) -> Spec {
    build_with(image, resources, volumes, SeccompMode::Default, None)
}

fn build_with_init(
    image: &ImageConfig,
    resources: Resources,
    volumes: &[ResolvedVolume],
    init: Option<&Path>,
) -> Spec {
    build_all(image, resources, volumes, SeccompMode::Default, None, init)
}

fn build_with(
    image: &ImageConfig,
    resources: Resources,
    volumes: &[ResolvedVolume],
    seccomp: SeccompMode,
    apparmor_profile: Option<&str>,
) -> Spec {
    build_all(image, resources, volumes, seccomp, apparmor_profile, None)
}

fn build_all(
    image: &ImageConfig,
    resources: Resources,
    volumes: &[ResolvedVolume],
    seccomp: SeccompMode,
    apparmor_profile: Option<&str>,
    init: Option<&Path>,
) -> Spec {
    build_grouped(
        image,
        resources,
        volumes,
        seccomp,
        apparmor_profile,
        init,
        None,
    )
}

fn build_grouped(
    image: &ImageConfig,
    resources: Resources,
    volumes: &[ResolvedVolume],
    seccomp: SeccompMode,
    apparmor_profile: Option<&str>,
    init: Option<&Path>,
    shim_group: Option<&str>,
) -> Spec {
    let files = files();
    let env = vec![("MODE".to_string(), "app".to_string())];
    build_spec(&SpecInput {
        hostname: "web-1",
        image,
        app_env: &env,
        replica_id: "1",
        user: ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![44],
        },
        netns_path: Path::new("/run/haloy/netns/t1"),
        cgroups_path: "/haloy/t1",
        resources,
        files: &files,
        volumes,
        nofile: NOFILE_LIMIT,
        seccomp,
        apparmor_profile,
        init,
        shim_group,
    })
    .unwrap()
}

#[test]
fn shim_group_is_the_runc_v2_group_annotation_and_absent_without_one() {
    let volumes = [];
    let grouped = build_grouped(
        &image(),
        Resources::default(),
        &volumes,
        SeccompMode::Default,
        None,
        None,
        Some("haloy.app.web"),
    );
    let annotations = grouped.annotations().clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("io.containerd.runc.v2.group")
            .map(String::as_str),
        Some("haloy.app.web")
    );
    let alone = build(&image(), Resources::default(), &volumes);
    let alone_annotations = alone.annotations().clone().unwrap_or_default();
    assert!(!alone_annotations.contains_key("io.containerd.runc.v2.group"));
}

#[test]
fn init_runs_as_pid_1_in_front_of_the_args_from_a_read_only_mount() {
    let spec = build_with_init(
        &image(),
        Resources::default(),
        &[],
        Some(Path::new("/usr/bin/tini-static")),
    );
    let args = spec.process().as_ref().unwrap().args().clone().unwrap();
    assert_eq!(
        args,
        ["/.haloy/init", "--", "/bin/httpd", "-f", "-p", "8080"]
    );
    let mount = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(INIT_PATH))
        .expect("init mount");
    assert_eq!(
        mount.source().as_deref(),
        Some(Path::new("/usr/bin/tini-static"))
    );
    assert!(mount.options().as_ref().unwrap().iter().any(|o| o == "ro"));

    let plain = build(&image(), Resources::default(), &[]);
    let args = plain.process().as_ref().unwrap().args().clone().unwrap();
    assert_eq!(args[0], "/bin/httpd");
    assert!(!plain
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.destination() == Path::new(INIT_PATH)));
}

#[test]
fn args_are_entrypoint_then_cmd() {
    assert_eq!(
        process_args(&image()).unwrap(),
        ["/bin/httpd", "-f", "-p", "8080"]
    );
    let cmd_only = ImageConfig {
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        ..image()
    };
    assert_eq!(process_args(&cmd_only).unwrap(), ["sh"]);
    let nothing = ImageConfig {
        entrypoint: vec![],
        cmd: vec![],
        ..image()
    };
    assert!(matches!(process_args(&nothing), Err(SpecError::NoCommand)));
}

#[test]
fn env_merges_image_app_and_replica_id_with_later_winning() {
    let env = merge_env(
        "h",
        &image().env,
        &[("MODE".into(), "app".into()), ("NEW".into(), "x".into())],
        "2",
    );
    assert_eq!(
        env,
        [
            "HOSTNAME=h",
            "PATH=/custom/bin",
            "MODE=app",
            "KEEP=1",
            "NEW=x",
            "HALOY_REPLICA_ID=2"
        ]
    );
    let no_path = merge_env(
        "h",
        &[],
        &[("HALOY_REPLICA_ID".into(), "spoof".into())],
        "3",
    );
    assert_eq!(no_path[0], DEFAULT_PATH);
    assert_eq!(no_path.last().unwrap(), "HALOY_REPLICA_ID=3");
}

#[test]
fn users_resolve_like_runc() {
    let r = |u: &str| resolve_user(Some(u), Some(PASSWD), Some(GROUP));
    assert_eq!(r("").unwrap(), ResolvedUser::default());
    assert_eq!(
        resolve_user(None, None, None).unwrap(),
        ResolvedUser::default()
    );
    let app = r("app").unwrap();
    assert_eq!((app.uid, app.gid), (1000, 1000));
    assert_eq!(app.additional_gids, [44, 29]);
    assert_eq!(r("33").unwrap().gid, 33, "numeric uid takes passwd's gid");
    assert_eq!(
        r("4242").unwrap(),
        ResolvedUser {
            uid: 4242,
            gid: 0,
            additional_gids: vec![]
        }
    );
    assert_eq!(
        r("www:video").unwrap(),
        ResolvedUser {
            uid: 33,
            gid: 44,
            additional_gids: vec![]
        }
    );
    assert_eq!(
        r("5:6").unwrap(),
        ResolvedUser {
            uid: 5,
            gid: 6,
            additional_gids: vec![]
        }
    );
    assert!(matches!(
        r("nobody-here"),
        Err(SpecError::UnknownUser { .. })
    ));
    assert!(matches!(
        r("app:nogroup"),
        Err(SpecError::UnknownGroup { .. })
    ));
    assert!(!user_needs_lookup(Some("5:6")));
    assert!(!user_needs_lookup(None));
    assert!(user_needs_lookup(Some("5")));
    assert!(user_needs_lookup(Some("app")));
}

#[test]
fn resolv_conf_drops_loopback_nameservers() {
    let host = "search example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n";
    assert_eq!(
        task_resolv_conf(host).unwrap(),
        "search example.com\nnameserver 10.0.0.2\noptions edns0\n"
    );
    assert_eq!(
        task_resolv_conf("nameserver 127.0.0.53\nnameserver ::1\n"),
        None
    );
    let etc = Some("nameserver 127.0.0.53\n".to_string());
    let resolved = Some("nameserver 192.0.2.1\n".to_string());
    let p = Path::new("x");
    assert_eq!(
        choose_resolv_conf(&[(p, etc.clone()), (p, resolved)]),
        "nameserver 192.0.2.1\n"
    );
    assert_eq!(
        choose_resolv_conf(&[(p, etc), (p, None)]),
        "nameserver 127.0.0.53\n"
    );
}

#[test]
fn hosts_file_names_the_task() {
    let hosts = hosts_file("web-1", Some("10.1.0.5".parse().unwrap()));
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
    assert!(hosts.ends_with("10.1.0.5\tweb-1\n"));
}

#[test]
fn spec_has_engine_defaults_and_task_specifics() {
    let spec = build(&image(), Resources::default(), &[]);
    let json = serde_json::to_value(&spec).unwrap();
    let process = &json["process"];
    assert_eq!(process["args"][0], "/bin/httpd");
    assert_eq!(process["cwd"], "/www");
    assert_eq!(process["noNewPrivileges"], true);
    assert_eq!(process["user"]["uid"], 1000);
    assert_eq!(process["user"]["additionalGids"][0], 44);
    assert_eq!(process["rlimits"][0]["type"], "RLIMIT_NOFILE");
    let caps = process["capabilities"]["bounding"].as_array().unwrap();
    assert_eq!(caps.len(), 14);
    assert!(caps.contains(&"CAP_NET_BIND_SERVICE".into()));
    assert!(!caps.contains(&"CAP_SYS_ADMIN".into()));
    assert_eq!(json["hostname"], "web-1");
    assert_eq!(json["root"]["path"], "rootfs");
    let ns = json["linux"]["namespaces"].as_array().unwrap();
    let net = ns.iter().find(|n| n["type"] == "network").unwrap();
    assert_eq!(net["path"], "/run/haloy/netns/t1");
    assert_eq!(json["linux"]["cgroupsPath"], "/haloy/t1");
    assert_eq!(
        json["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
        "0"
    );
    assert!(json["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&"/proc/kcore".into()));
    assert!(json["linux"]["readonlyPaths"]
        .as_array()
        .unwrap()
        .contains(&"/proc/sys".into()));
    assert!(json["linux"]["resources"].get("memory").is_none());
    let mounts: Vec<&str> = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    for wanted in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
    ] {
        assert!(mounts.contains(&wanted), "{wanted} missing in {mounts:?}");
    }
    let any = spec_any(&spec).unwrap();
    assert_eq!(any.type_url, SPEC_TYPE_URL);
    let back: Spec = serde_json::from_slice(&any.value).unwrap();
    assert_eq!(back.hostname().as_deref(), Some("web-1"));
}

#[test]
fn resources_become_cgroup_limits() {
    let resources = Resources {
        memory_bytes: Some(512 * 1024 * 1024),
        cpus: Some(0.5),
        pids: Some(4096),
    };
    let json = serde_json::to_value(build(&image(), resources, &[])).unwrap();
    let res = &json["linux"]["resources"];
    assert_eq!(res["memory"]["limit"], 536870912);
    assert_eq!(res["cpu"]["quota"], 50000);
    assert_eq!(res["cpu"]["period"], 100000);
    assert_eq!(res["pids"]["limit"], 4096);
    assert_eq!(res["devices"][0]["allow"], false);
    let unlimited = serde_json::to_value(build(&image(), Resources::default(), &[])).unwrap();
    assert!(unlimited["linux"]["resources"].get("pids").is_none());
}

#[test]
fn every_replica_gets_the_default_seccomp_profile_unless_unconfined() {
    let spec = serde_json::to_value(build(&image(), Resources::default(), &[])).unwrap();
    let seccomp = &spec["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
    let names: Vec<&str> = seccomp["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["names"].as_array().unwrap())
        .filter_map(|n| n.as_str())
        .collect();
    assert!(names.contains(&"read") && names.contains(&"clone"));
    assert!(!names.contains(&"unshare") && !names.contains(&"mount"));
    let open = build_with(
        &image(),
        Resources::default(),
        &[],
        SeccompMode::Unconfined,
        None,
    );
    let open = serde_json::to_value(open).unwrap();
    assert!(open["linux"].get("seccomp").is_none());
}

#[test]
fn the_hosts_apparmor_profile_is_applied_when_given() {
    let spec = build_with(
        &image(),
        Resources::default(),
        &[],
        SeccompMode::Default,
        Some("docker-default"),
    );
    let json = serde_json::to_value(spec).unwrap();
    assert_eq!(json["process"]["apparmorProfile"], "docker-default");
    let none = serde_json::to_value(build(&image(), Resources::default(), &[])).unwrap();
    assert!(none["process"].get("apparmorProfile").is_none());
}

#[test]
fn volumes_become_bind_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let volumes = vec![
        VolumeMount {
            source: VolumeSource::Named("data".into()),
            target: "/data".into(),
            read_only: false,
        },
        VolumeMount {
            source: VolumeSource::Bind("/srv/config".into()),
            target: "/config".into(),
            read_only: true,
        },
    ];
    let resolved = resolve_volumes(&volumes, "web", dir.path()).unwrap();
    assert_eq!(resolved[0].host_path, dir.path().join("web/data"));
    assert!(resolved[0].host_path.is_dir());
    let json = serde_json::to_value(build(&image(), Resources::default(), &resolved)).unwrap();
    let mounts = json["mounts"].as_array().unwrap();
    let config = mounts
        .iter()
        .find(|m| m["destination"] == "/config")
        .unwrap();
    assert_eq!(config["source"], "/srv/config");
    assert_eq!(config["type"], "bind");
    let options = config["options"].as_array().unwrap();
    assert!(options.contains(&"ro".into()), "{options:?}");
    assert!(
        options.contains(&"rro".into()),
        "read-only is recursive: {options:?}"
    );
    let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
    assert!(!data["options"].as_array().unwrap().contains(&"rro".into()));

    let bad = |source, target: &str| VolumeMount {
        source,
        target: target.into(),
        read_only: false,
    };
    for (volume, expected) in [
        (bad(VolumeSource::Named("../x".into()), "/d"), "volume name"),
        (
            bad(VolumeSource::Bind("rel/path".into()), "/d"),
            "absolute host path",
        ),
        (
            bad(VolumeSource::Named("ok".into()), "relative"),
            "volume target",
        ),
        (
            bad(VolumeSource::Named("ok".into()), "/a/../b"),
            "volume target",
        ),
    ] {
        let err = resolve_volumes(&[volume], "web", dir.path()).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn task_files_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_task_files(&dir.path().join("t1"), "web-1", None, None).unwrap();
    assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "web-1\n");
    assert!(std::fs::read_to_string(&files.hosts)
        .unwrap()
        .contains("localhost"));
    assert!(files.resolv_conf.exists());
}

#[test]
fn resolv_conf_via_haloyd_searches_the_internal_zone_first() {
    let host = "nameserver 127.0.0.53\nsearch corp.example\noptions edns0 trust-ad\n";
    let text = resolv_conf_via("10.89.0.1".parse().unwrap(), host);
    assert_eq!(
        text,
        "nameserver 10.89.0.1\nsearch haloy.internal corp.example\noptions edns0 trust-ad\n"
    );
    assert_eq!(
        resolv_conf_via("10.89.0.1".parse().unwrap(), ""),
        "nameserver 10.89.0.1\nsearch haloy.internal\n"
    );
}
