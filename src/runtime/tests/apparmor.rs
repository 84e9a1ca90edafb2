//! Unit tests of `runtime::apparmor::decide` against fake sysfs trees.

use super::*;

fn sys(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

const ENABLED: (&str, &str) = ("module/apparmor/parameters/enabled", "Y\n");

#[test]
fn a_loaded_container_profile_is_used() {
    let dir = sys(&[
        ENABLED,
        (
            "kernel/security/apparmor/profiles",
            "/usr/bin/man (enforce)\ncri-containerd.apparmor.d (enforce)\n",
        ),
    ]);
    assert_eq!(
        decide(dir.path()),
        LsmDecision::AppArmor("cri-containerd.apparmor.d".into())
    );
    let dir = sys(&[
        ENABLED,
        (
            "kernel/security/apparmor/profiles",
            "docker-default (enforce)\ncri-containerd.apparmor.d (enforce)\n",
        ),
    ]);
    assert_eq!(
        decide(dir.path()),
        LsmDecision::AppArmor("docker-default".into())
    );
}

#[test]
fn enabled_without_a_container_profile_says_which_is_missing() {
    let dir = sys(&[
        ENABLED,
        (
            "kernel/security/apparmor/profiles",
            "/usr/bin/man (enforce)\n",
        ),
    ]);
    match decide(dir.path()) {
        LsmDecision::None(why) => {
            assert!(why.contains("AppArmor is enabled"), "{why}");
            assert!(why.contains("docker-default"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn disabled_apparmor_and_selinux_are_named() {
    let dir = sys(&[("module/apparmor/parameters/enabled", "N\n")]);
    match decide(dir.path()) {
        LsmDecision::None(why) => assert!(why.contains("neither AppArmor nor SELinux"), "{why}"),
        other => panic!("{other:?}"),
    }
    let dir = sys(&[("fs/selinux/enforce", "1\n")]);
    match decide(dir.path()) {
        LsmDecision::None(why) => assert!(why.starts_with("SELinux is enabled"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn this_host_gets_a_decision() {
    // Whatever the machine has, deciding never fails; on a host without AppArmor it is None.
    let decision = decide(Path::new("/sys"));
    if !Path::new("/sys/module/apparmor/parameters/enabled").exists() {
        assert!(matches!(decision, LsmDecision::None(_)), "{decision:?}");
    }
}
