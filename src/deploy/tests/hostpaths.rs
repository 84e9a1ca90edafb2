//! Unit tests of `deploy::hostpaths`.

use super::*;

fn bind(host: &str) -> VolumeSpec {
    VolumeSpec::Bind {
        host: host.into(),
        container: "/mnt".into(),
        read_only: true,
    }
}

fn policy(allowed: &[&str]) -> HostPathPolicy {
    HostPathPolicy::new(
        &[
            (PathBuf::from("/srv/haloy-state"), "haloyd's state dir"),
            (PathBuf::from("/run/haloy-test"), "haloyd's run dir"),
            (
                PathBuf::from("/run/ctr-test/containerd.sock"),
                "the containerd socket",
            ),
        ],
        allowed.iter().map(PathBuf::from).collect(),
    )
}

fn refused(policy: &HostPathPolicy, host: &str) -> Option<String> {
    policy.problems(&[bind(host)]).into_iter().next()
}

#[test]
fn system_paths_their_contents_and_their_parents_are_refused() {
    let p = policy(&[]);
    for host in [
        "/",
        "/etc",
        "/etc/ssl",
        "/proc",
        "/proc/1/root",
        "/sys/fs/cgroup",
        "/dev",
        "/dev/shm",
        "/boot",
        "/srv/haloy-state",
        "/srv/haloy-state/volumes/other-app",
        "/srv",
        "/run/haloy-test",
        "/run/ctr-test/containerd.sock",
        "/run/ctr-test",
        "/run",
        "/etc/../etc",
        "/data/../etc/",
    ] {
        assert!(refused(&p, host).is_some(), "{host} accepted");
    }
}

#[test]
fn ordinary_paths_pass() {
    let p = policy(&[]);
    for host in [
        "/srv/app-data",
        "/home/app/uploads",
        "/var/www",
        "/etcetera",
        "/opt",
    ] {
        assert_eq!(refused(&p, host), None, "{host}");
    }
    let named = VolumeSpec::Named {
        name: "data".into(),
        container: "/data".into(),
        read_only: false,
    };
    assert!(p.problems(&[named]).is_empty());
}

#[test]
fn the_error_names_volume_path_and_setting() {
    let p = policy(&[]);
    let problems = p.problems(&[bind("/srv/app"), bind("/etc")]);
    assert_eq!(problems.len(), 1);
    let message = &problems[0];
    assert!(message.starts_with("volumes[1]: "), "{message}");
    assert!(message.contains("`/etc`"), "{message}");
    assert!(message.contains("security.allowed_host_paths"), "{message}");
    assert!(message.contains("configuration"), "{message}");
}

#[test]
fn allowed_host_paths_lift_the_refusal_for_that_path_and_below_only() {
    let p = policy(&["/etc/ssl", "/run/ctr-test/containerd.sock"]);
    assert_eq!(refused(&p, "/etc/ssl"), None);
    assert_eq!(refused(&p, "/etc/ssl/certs"), None);
    assert_eq!(refused(&p, "/run/ctr-test/containerd.sock"), None);
    assert!(refused(&p, "/etc").is_some());
    assert!(refused(&p, "/etc/shadow").is_some());
    assert!(refused(&p, "/run/ctr-test").is_some());
}

#[test]
fn a_symlink_to_a_protected_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let p = policy(&[]);
    let message = refused(&p, link.to_str().unwrap()).expect("symlink to /etc accepted");
    assert!(message.contains("(/etc)"), "{message}");
}

#[test]
fn the_default_policy_protects_haloyds_default_paths() {
    let p = HostPathPolicy::default();
    for host in [
        "/var/lib/haloy",
        "/var/lib",
        "/run/containerd",
        "/run/haloy/netns",
    ] {
        assert!(refused(&p, host).is_some(), "{host} accepted");
    }
}
