//! A private containerd per test: own root, state, sockets and config (CRI plugin disabled),
//! started as a child process and stopped on drop after its leftover tasks were removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use containerd_client::services::v1::{
    DeleteTaskRequest, KillRequest, ListNamespacesRequest, ListTasksRequest,
};
use tempfile::TempDir;

use super::{require_binary, stop_child, unmount_all_under};

/// How long containerd may take to answer its first Version call.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Containerd {
    child: Option<Child>,
    dir: Option<TempDir>,
    socket: PathBuf,
}

impl Containerd {
    /// Starts containerd in a fresh temp dir and waits until it answers gRPC Version calls.
    pub async fn start() -> Containerd {
        require_binary("runc", "runc");
        require_binary("containerd-shim-runc-v2", "containerd");
        let dir = tempfile::Builder::new()
            .prefix("haloy-ctd-")
            .tempdir()
            .expect("create containerd temp dir");
        let socket = dir.path().join("containerd.sock");
        let mut harness = Containerd {
            child: None,
            dir: Some(dir),
            socket,
        };
        harness.spawn();
        harness.wait_until_answering().await;
        harness
    }

    /// pid of the containerd process the harness started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The gRPC socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temp dir holding root, state, config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("containerd dir").path()
    }

    /// containerd's --root (content store, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    /// A runtime client in `namespace` for this containerd.
    pub async fn client(&self, namespace: &str) -> haloy::runtime::Containerd {
        haloy::runtime::Containerd::connect(&self.socket, namespace)
            .await
            .expect("connect to the harness containerd")
    }

    /// The containerd log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    /// Stops containerd (SIGTERM) and starts it again on the same root and socket, like a
    /// service restart. Tasks keep running in their shims.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
        self.spawn();
        self.wait_until_answering().await;
    }

    /// Kills containerd (SIGKILL) without starting it again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts containerd again after `kill`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "containerd is still running");
        self.spawn();
        self.wait_until_answering().await;
    }

    fn spawn(&mut self) {
        let binary = require_binary("containerd", "containerd");
        let dir = self.dir().to_path_buf();
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &self.socket)).expect("write containerd config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .expect("open containerd log");
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.child = Some(child);
    }

    async fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("containerd exited at start ({status}):\n{}", self.log());
                }
            }
            if self.socket.exists() {
                let client = haloy::runtime::Containerd::connect(&self.socket, "default").await;
                if client.is_ok() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills and deletes every task still known to this containerd, so their shims exit.
    fn remove_leftover_tasks(&self) {
        let socket = self.socket.clone();
        // Drop may run inside a tokio runtime: do the async cleanup on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let work = remove_tasks_in_all_namespaces(&socket);
                let _ = tokio::time::timeout(Duration::from_secs(20), work).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn remove_tasks_in_all_namespaces(socket: &Path) {
    let Ok(probe) = haloy::runtime::Containerd::connect(socket, "default").await else {
        return;
    };
    let Ok(namespaces) = probe
        .namespaces()
        .list(probe.request(ListNamespacesRequest::default()))
        .await
    else {
        return;
    };
    for namespace in namespaces.into_inner().namespaces {
        let Ok(client) = haloy::runtime::Containerd::connect(socket, &namespace.name).await else {
            continue;
        };
        let Ok(tasks) = client
            .tasks()
            .list(client.request(ListTasksRequest::default()))
            .await
        else {
            continue;
        };
        for task in tasks.into_inner().tasks {
            let kill = KillRequest {
                container_id: task.id.clone(),
                signal: 9,
                all: true,
                ..Default::default()
            };
            let _ = client.tasks().kill(client.request(kill)).await;
            for _ in 0..50 {
                let delete = DeleteTaskRequest {
                    container_id: task.id.clone(),
                };
                if client.tasks().delete(client.request(delete)).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `TaskSettings::default().cgroup_parent`, which haloyd uses.
const DAEMON_CGROUP_PARENT: &str = "/haloy";

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_leftover_tasks();
        }
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
        // haloyd (the e2e fixture) puts tasks under its default cgroup parent; once this
        // containerd's tasks are gone the parent is empty, unless another test still uses it.
        super::remove_cgroup_parent(DAEMON_CGROUP_PARENT);
        if let Some(dir) = self.dir.take() {
            unmount_all_under(dir.path());
            let _ = std::fs::remove_dir_all(dir.path());
        }
    }
}

fn config_toml(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
        socket = socket.display()
    )
}
