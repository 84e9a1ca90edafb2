//! Shared integration-test rig: a private containerd, a local `docker-registry`, and OCI test
//! images built in-process from /bin/busybox (busybox-static). Everything a test starts is torn
//! down when its guard drops (also on panic): only the child processes started here are
//! signalled, by PID, and their temp dirs are unmounted and removed.
//!
//! Include with `#[path = "harness/mod.rs"] mod harness;`. A missing binary fails the test with
//! the Debian package that provides it.
#![allow(dead_code, unused_imports)]

pub mod containerd;
pub mod haloyd;
mod host;
pub mod images;
pub mod prometheus;
pub mod registry;
pub mod stack;
pub mod token_server;

pub use containerd::Containerd;
pub use host::{free_port, require_binary};
pub use images::{Fixture, OciImage, FIXTURES};
pub use registry::Registry;

use std::path::{Path, PathBuf};

/// runc removes each task's cgroup, but not the parent a test or benchmark made for its tasks
/// (`TaskSettings::cgroup_parent`); this removes that empty parent in every hierarchy.
pub fn remove_cgroup_parent(parent: &str) {
    let relative = parent.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for hierarchy in hierarchies.iter().map(PathBuf::as_path).chain([root]) {
        let _ = std::fs::remove_dir(hierarchy.join(relative));
    }
}

/// Removes a cgroup parent (see [`remove_cgroup_parent`]) on drop, also when a test panics.
pub struct CgroupParentGuard(pub String);

impl Drop for CgroupParentGuard {
    fn drop(&mut self) {
        remove_cgroup_parent(&self.0);
    }
}

/// Lazily unmounts every mount point at or below `dir` (deepest first), e.g. overlay rootfs
/// mounts a killed containerd left behind, so the directory can be removed.
pub fn unmount_all_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Sends SIGTERM to a child we started, waits up to `grace`, then SIGKILLs it; reaps it.
pub fn stop_child(child: &mut std::process::Child, grace: std::time::Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
