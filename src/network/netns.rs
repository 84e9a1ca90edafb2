//! Named network namespaces as bind-mounted files (what `ip netns add/del` does, done with nix).
//! A namespace lives as long as its bind mount, independent of any process.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use nix::unistd::gettid;

use super::NetworkError;

/// The syscalls behind network namespaces; blocking calls (run them off the async threads).
pub trait NetnsOps: Send + Sync {
    /// Creates a new, empty network namespace pinned at `path`.
    fn create(&self, path: &Path) -> Result<(), NetworkError>;
    /// Unmounts and deletes `path`; a missing or unmounted file is fine.
    fn remove(&self, path: &Path) -> Result<(), NetworkError>;
    /// True when `path` is a mounted network namespace.
    fn is_netns(&self, path: &Path) -> bool;
}

/// The real implementation on the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostNetns;

/// Serialises the "make the directory a shared mount point" step: two racing bind mounts of
/// the same directory onto itself would stack.
static DIR_SETUP: Mutex<()> = Mutex::new(());

fn netns_err(path: &Path, action: &'static str, errno: Errno) -> NetworkError {
    NetworkError::Netns {
        path: path.to_path_buf(),
        action,
        source: io::Error::from(errno),
    }
}

/// Like `ip netns`: the directory becomes a shared mount point so that unmounting a namespace
/// also unmounts the copies other mount namespaces made of it (otherwise they pin it).
fn ensure_shared_dir(dir: &Path) -> Result<(), NetworkError> {
    let _guard = DIR_SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fs::create_dir_all(dir).map_err(|source| NetworkError::Netns {
        path: dir.to_path_buf(),
        action: "create directory",
        source,
    })?;
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet; bind it onto itself first.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| netns_err(dir, "bind-mount directory onto itself", e))?;
            make_shared().map_err(|e| netns_err(dir, "make directory a shared mount", e))
        }
        Err(e) => Err(netns_err(dir, "make directory a shared mount", e)),
    }
}

/// Runs on a throwaway thread: unshare moves only this thread into the new namespace, and the
/// thread ends right after, so no pooled thread is ever left in the wrong namespace.
fn unshare_and_pin(path: &Path) -> Result<(), NetworkError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(path, "unshare(CLONE_NEWNET)", e))?;
    let own_ns = format!("/proc/self/task/{}/ns/net", gettid());
    mount(
        Some(own_ns.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| netns_err(path, "bind-mount the new namespace", e))
}

impl NetnsOps for HostNetns {
    fn create(&self, path: &Path) -> Result<(), NetworkError> {
        if let Some(dir) = path.parent() {
            ensure_shared_dir(dir)?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| NetworkError::Netns {
                path: path.to_path_buf(),
                action: "create mount point file",
                source,
            })?;
        let target = path.to_path_buf();
        let pinned = std::thread::spawn(move || unshare_and_pin(&target))
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::Netns {
                    path: path.to_path_buf(),
                    action: "create namespace thread",
                    source: io::Error::other("thread panicked"),
                })
            });
        if pinned.is_err() {
            let _ = fs::remove_file(path);
        }
        pinned
    }

    fn remove(&self, path: &Path) -> Result<(), NetworkError> {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::ENOENT) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(netns_err(path, "unmount", e)),
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetworkError::Netns {
                path: path.to_path_buf(),
                action: "remove file",
                source,
            }),
        }
    }

    fn is_netns(&self, path: &Path) -> bool {
        statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
    }
}
