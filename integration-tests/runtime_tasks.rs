//! Replica tasks on a real (private) containerd with runc and the CNI plugins: pull fixture
//! images from a private registry, start replicas on a private bridge, reach them over HTTP,
//! watch exits, stop with SIGKILL escalation, read logs written by the `binary://` log driver
//! (haloyd itself), and check that teardown leaves no container, task, snapshot, lease, netns,
//! IPAM lease or veth.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
use containerd_client::services::v1::{
    ListContainersRequest, ListRequest as ListLeasesRequest, ListTasksRequest,
};
use futures_util::StreamExt;
use haloy::network::{CniNetwork, CniSettings, Network};
use haloy::runtime::task::{ShimGrouping, TaskSettings};
use haloy::runtime::{
    ContainerdRuntime, ImageInfo, ImageRequest, LogStreamKind, PullPolicy, ReplicaSpec, Resources,
    Runtime, RuntimeConfig, SeccompMode, TaskExit, TaskStatus,
};
use harness::images::OciImage;

const CNI_DIR: &str = "/usr/lib/cni";

/// A private containerd, bridge, subnet, namespace and state/log dirs; all removed on drop.
struct Rig {
    containerd: harness::Containerd,
    registry: harness::Registry,
    runtime: Option<ContainerdRuntime>,
    network: Arc<CniNetwork>,
    config: RuntimeConfig,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn start(tag: &str) -> Rig {
        Rig::start_grouped(tag, ShimGrouping::default()).await
    }

    async fn start_grouped(tag: &str, shim_grouping: ShimGrouping) -> Rig {
        let subnet = format!("10.251.{}.0/24", rand::random::<u8>());
        Rig::start_with(tag, subnet, shim_grouping).await
    }

    async fn start_on(tag: &str, subnet: String) -> Rig {
        Rig::start_with(tag, subnet, ShimGrouping::default()).await
    }

    async fn start_with(tag: &str, subnet: String, shim_grouping: ShimGrouping) -> Rig {
        harness::require_binary("ip", "iproute2");
        // The bridge plugin's ipMasq and the firewall plugin call iptables.
        harness::require_binary("iptables", "iptables");
        assert!(
            Path::new(CNI_DIR).join("bridge").is_file(),
            "{CNI_DIR}/bridge missing: install the Debian package containernetworking-plugins"
        );
        let containerd = harness::Containerd::start().await;
        let registry = harness::Registry::start().await;
        let dir = tempfile::Builder::new()
            .prefix("haloy-tasks-")
            .tempdir()
            .unwrap();
        let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
        let network_settings = CniSettings {
            plugin_dirs: vec![PathBuf::from(CNI_DIR)],
            network_name: format!("hlt-{tag}-{suffix:06x}"),
            bridge: format!("hlr{suffix:06x}"),
            subnet,
            ipam_data_dir: dir.path().join("ipam"),
            netns_dir: dir.path().join("netns"),
            cache_dir: dir.path().join("cni-cache"),
            conflist_template: None,
        };
        let mut config = RuntimeConfig::new(containerd.socket());
        config.namespace = format!("hlt-{tag}");
        config.network = network_settings.clone();
        config.tasks = TaskSettings {
            state_dir: dir.path().join("state"),
            log_dir: dir.path().join("logs"),
            log_max_size: 1024 * 1024,
            log_max_files: 3,
            log_driver_binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_haloyd"))),
            cgroup_parent: format!("/haloy-test-{tag}-{suffix:06x}"),
            pids_limit: haloy::runtime::task::DEFAULT_PIDS_LIMIT,
            apparmor_profile: None,
            init_binary: haloy::runtime::DEFAULT_INIT_BINARY.into(),
            nameserver: None,
            shim_grouping,
        };
        let network = Arc::new(CniNetwork::new(network_settings).unwrap());
        let runtime = ContainerdRuntime::connect_with_network(config.clone(), network.clone())
            .await
            .unwrap();
        Rig {
            containerd,
            registry,
            runtime: Some(runtime),
            network,
            config,
            dir,
        }
    }

    fn runtime(&self) -> &ContainerdRuntime {
        self.runtime.as_ref().unwrap()
    }

    /// Pushes fixture `name` to the rig's registry and pulls it through the runtime.
    async fn image(&self, name: &str) -> ImageInfo {
        let reference = self
            .registry
            .push(
                &OciImage::fixture(name, "v1"),
                &format!("haloy-fixtures/{name}"),
                "v1",
            )
            .await;
        self.runtime()
            .ensure_image(&ImageRequest::new(&reference, PullPolicy::IfMissing))
            .await
            .unwrap()
    }

    fn replica(&self, image: &ImageInfo, app: &str, replica: u32) -> ReplicaSpec {
        ReplicaSpec {
            app: app.to_string(),
            deployment_id: "01TESTDEPLOY".into(),
            replica,
            image: image.clone(),
            env: vec![("GREETING".into(), "hello".into())],
            port: 8080,
            health_check_path: "/health".into(),
            domains: vec![format!("{app}.example.test")],
            labels: Default::default(),
            volumes: vec![],
            resources: Resources::default(),
            seccomp: SeccompMode::Default,
            stop_timeout: Duration::from_secs(2),
            init: false,
        }
    }

    fn netns_files(&self) -> Vec<PathBuf> {
        read_dir_paths(&self.config.network.netns_dir)
    }

    fn ipam_leases(&self) -> Vec<PathBuf> {
        let dir = self
            .config
            .network
            .ipam_data_dir
            .join(&self.config.network.network_name);
        read_dir_paths(&dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.parse::<IpAddr>().is_ok())
            })
            .collect()
    }

    fn bridge_ports(&self) -> Vec<PathBuf> {
        read_dir_paths(
            &Path::new("/sys/class/net")
                .join(&self.config.network.bridge)
                .join("brif"),
        )
    }

    /// Everything a replica creates is gone; image snapshots (committed) may stay.
    async fn assert_nothing_left(&self) {
        let client = self.runtime().client();
        let containers = client
            .containers()
            .list(client.request(ListContainersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let tasks = client
            .tasks()
            .list(client.request(ListTasksRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        assert!(tasks.is_empty(), "tasks left: {tasks:?}");
        let mut stream = client
            .snapshots()
            .list(client.request(ListSnapshotsRequest {
                snapshotter: "overlayfs".into(),
                filters: vec![],
            }))
            .await
            .unwrap()
            .into_inner();
        let mut active = Vec::new();
        while let Some(batch) = stream.message().await.unwrap() {
            // Kind 2 = active: a container's writable layer. Committed (3) = image layers.
            active.extend(
                batch
                    .info
                    .into_iter()
                    .filter(|i| i.kind != 3)
                    .map(|i| i.name),
            );
        }
        assert!(active.is_empty(), "non-image snapshots left: {active:?}");
        let leases = client
            .leases()
            .list(client.request(ListLeasesRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .leases;
        assert!(leases.is_empty(), "leases left: {leases:?}");
        assert_eq!(
            self.netns_files(),
            Vec::<PathBuf>::new(),
            "netns files left"
        );
        assert_eq!(
            self.ipam_leases(),
            Vec::<PathBuf>::new(),
            "IPAM leases left"
        );
        assert_eq!(
            self.bridge_ports(),
            Vec::<PathBuf>::new(),
            "veths left on the bridge"
        );
        let task_dirs = read_dir_paths(&self.config.tasks.state_dir.join("tasks"));
        assert!(task_dirs.is_empty(), "task state dirs left: {task_dirs:?}");
        let logs = read_dir_paths(&self.config.tasks.log_dir);
        assert!(logs.is_empty(), "log files left: {logs:?}");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Remove replicas through the runtime (also after a failed assertion), then the rest.
        if let Some(runtime) = self.runtime.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    if let Ok(replicas) = runtime.list_replicas(None).await {
                        for replica in replicas {
                            let _ = runtime.remove_replica(&replica.container_id).await;
                        }
                    }
                });
            })
            .join();
        }
        for netns in self.netns_files() {
            let id = netns.file_name().unwrap().to_string_lossy().into_owned();
            let network = self.network.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                let _ = rt.block_on(network.detach(&id));
            })
            .join();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.config.network.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        harness::unmount_all_under(self.dir.path());
        harness::remove_cgroup_parent(&self.config.tasks.cgroup_parent);
    }
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// GET `path` over plain HTTP/1.0; returns (status, body).
fn http_get(ip: IpAddr, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls until the task's HTTP server answers (it needs a moment after Tasks.Start).
async fn wait_http(ip: IpAddr, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let path = path.to_string();
    loop {
        let p = path.clone();
        let result = tokio::task::spawn_blocking(move || http_get(ip, 8080, &p))
            .await
            .unwrap();
        match result {
            Ok(answer) => return answer,
            Err(err) if Instant::now() > deadline => panic!("GET http://{ip}:8080{path}: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn next_exit_of(
    exits: &mut tokio::sync::broadcast::Receiver<TaskExit>,
    container_id: &str,
    limit: Duration,
) -> Option<TaskExit> {
    tokio::time::timeout(limit, async {
        loop {
            match exits.recv().await {
                Ok(exit) if exit.container_id == container_id => return exit,
                Ok(_) => continue,
                Err(err) => panic!("exit channel: {err}"),
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_web_replicas_get_own_ips_and_teardown_leaves_nothing() {
    let rig = Rig::start("three").await;
    let image = rig.image("web").await;
    let mut started = Vec::new();
    for replica in 1..=3 {
        let spec = rig.replica(&image, "web", replica);
        started.push(rig.runtime().start_replica(&spec).await.unwrap());
    }
    let ips: HashSet<IpAddr> = started.iter().map(|r| r.ip).collect();
    assert_eq!(ips.len(), 3, "{started:?}");
    let prefix = rig
        .config
        .network
        .subnet
        .rsplit_once(".0/")
        .unwrap()
        .0
        .to_string();
    for replica in &started {
        let ip = replica.ip;
        assert!(
            ip.to_string().starts_with(&prefix),
            "{ip} not in {prefix}.0/24"
        );
        let (status, body) = wait_http(ip, "/health").await;
        assert_eq!(
            (status, body.trim()),
            (200, "ok"),
            "replica {}",
            replica.replica
        );
        let (_, version) = wait_http(ip, "/version.txt").await;
        assert!(
            version.contains(&format!("replica={}", replica.replica)),
            "HALOY_REPLICA_ID not in the task env: {version}"
        );
        assert!(
            version.contains(&format!("hostname=web-{}", replica.replica)),
            "{version}"
        );
    }

    let listed = rig.runtime().list_replicas(Some("web")).await.unwrap();
    assert_eq!(listed.len(), 3);
    for (info, start) in listed.iter().zip(&started) {
        assert_eq!(info.container_id, start.container_id);
        assert_eq!(info.state, TaskStatus::Running);
        assert_eq!(info.ip, Some(start.ip));
        assert_eq!(info.port, 8080);
        assert!(info.pid.is_some());
        assert_eq!(info.labels["dev.haloy.health-path"], "/health");
    }
    assert!(rig
        .runtime()
        .list_replicas(Some("other"))
        .await
        .unwrap()
        .is_empty());

    for replica in &started {
        rig.runtime()
            .stop_replica(&replica.container_id, Duration::from_secs(5))
            .await
            .unwrap();
        let info = &rig.runtime().list_replicas(Some("web")).await.unwrap();
        let me = info
            .iter()
            .find(|i| i.container_id == replica.container_id)
            .unwrap();
        assert_eq!(me.state, TaskStatus::Stopped);
        rig.runtime()
            .remove_replica(&replica.container_id)
            .await
            .unwrap();
        // Idempotent: a second stop and remove find nothing and succeed.
        rig.runtime()
            .stop_replica(&replica.container_id, Duration::from_secs(5))
            .await
            .unwrap();
        rig.runtime()
            .remove_replica(&replica.container_id)
            .await
            .unwrap();
    }
    rig.assert_nothing_left().await;
}

/// The parent of a task's PID 1: the containerd-shim-runc-v2 serving it.
async fn shim_pid_of(rig: &Rig, container_id: &str) -> i32 {
    let replicas = rig.runtime().list_replicas(None).await.unwrap();
    let task_pid = replicas
        .iter()
        .find(|r| r.container_id == container_id)
        .and_then(|r| r.pid)
        .unwrap_or_else(|| panic!("no running task {container_id}: {replicas:?}"));
    let stat = std::fs::read_to_string(format!("/proc/{task_pid}/stat")).unwrap();
    // Fields after the parenthesised command: state, then ppid.
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let ppid: i32 = after_comm.split(' ').nth(1).unwrap().parse().unwrap();
    let exe = std::fs::read_link(format!("/proc/{ppid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().contains("containerd-shim-runc-v2"),
        "parent of {container_id}'s PID 1 is {exe:?}"
    );
    ppid
}

async fn log_lines(rig: &Rig, container_id: &str) -> Vec<String> {
    rig.runtime()
        .logs(container_id, None, false)
        .await
        .unwrap()
        .map(|l| l.unwrap().line)
        .collect()
        .await
}

async fn wait_log_line(rig: &Rig, container_id: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = log_lines(rig, container_id).await;
        if lines.iter().any(|l| l.contains(needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{container_id}: no log line with {needle:?}: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_an_app_share_one_shim_yet_exit_log_and_go_one_by_one() {
    let rig = Rig::start_grouped("shim", ShimGrouping::PerApp).await;
    let image = rig.image("web").await;
    let mut exits = rig.runtime().subscribe_exits();
    let start = |app: &'static str, replica: u32| {
        let spec = rig.replica(&image, app, replica);
        let rig = &rig;
        async move {
            let started = rig.runtime().start_replica(&spec).await.unwrap();
            wait_http(started.ip, "/health").await;
            started
        }
    };
    // Started together: the group's first shim start must not be raced into two shims.
    let (web1, web2) = tokio::join!(start("web", 1), start("web", 2));
    let other = start("other", 1).await;
    let shim = shim_pid_of(&rig, &web1.container_id).await;
    assert_eq!(shim_pid_of(&rig, &web2.container_id).await, shim);
    let other_shim = shim_pid_of(&rig, &other.container_id).await;
    assert_ne!(other_shim, shim, "another app got the same shim");

    // One replica dies: only its exit arrives, its neighbour keeps serving.
    let web1_pid = rig.runtime().list_replicas(Some("web")).await.unwrap()[0]
        .pid
        .unwrap();
    sigkill(web1_pid as i32);
    let exit = next_exit_of(&mut exits, &web1.container_id, Duration::from_secs(10))
        .await
        .expect("exit event of the killed replica");
    assert_eq!(exit.exit_status, 137);
    assert_eq!(wait_http(web2.ip, "/health").await.0, 200);
    // Removing the task the shim was started for (its bundle, the shim's working directory,
    // goes) leaves the shim serving the others, and a new replica still joins it with a
    // working log driver.
    rig.runtime()
        .remove_replica(&web1.container_id)
        .await
        .unwrap();
    let web3 = start("web", 3).await;
    assert_eq!(shim_pid_of(&rig, &web3.container_id).await, shim);
    assert_eq!(shim_pid_of(&rig, &web2.container_id).await, shim);
    wait_log_line(&rig, &web3.container_id, "listening on 8080").await;

    // A graceful stop of one replica: SIGTERM reaches it and its log, not the neighbour.
    rig.runtime()
        .stop_replica(&web2.container_id, Duration::from_secs(5))
        .await
        .unwrap();
    wait_log_line(&rig, &web2.container_id, "web: SIGTERM, exiting").await;
    assert_eq!(wait_http(web3.ip, "/health").await.0, 200);
    rig.runtime()
        .remove_replica(&web2.container_id)
        .await
        .unwrap();

    // The shared shim crashes: every task it served reports an exit, the other app's does not.
    let web4 = start("web", 4).await;
    sigkill(shim);
    // Both exits, in whatever order they come.
    let mut waiting: HashSet<String> = [&web3.container_id, &web4.container_id]
        .into_iter()
        .cloned()
        .collect();
    let all_exited = tokio::time::timeout(Duration::from_secs(20), async {
        while !waiting.is_empty() {
            match exits.recv().await {
                Ok(exit) => {
                    waiting.remove(&exit.container_id);
                }
                Err(err) => panic!("exit channel: {err}"),
            }
        }
    })
    .await;
    assert!(
        all_exited.is_ok(),
        "no exit event after their shim was killed for {waiting:?}"
    );
    assert_eq!(wait_http(other.ip, "/health").await.0, 200);
    for id in [&web3.container_id, &web4.container_id, &other.container_id] {
        rig.runtime().remove_replica(id).await.unwrap();
    }
    rig.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_replica_shims_when_the_server_config_asks() {
    let rig = Rig::start_grouped("shim1", ShimGrouping::PerReplica).await;
    let image = rig.image("web").await;
    let mut ids = Vec::new();
    for replica in 1..=2 {
        let started = rig
            .runtime()
            .start_replica(&rig.replica(&image, "web", replica))
            .await
            .unwrap();
        wait_http(started.ip, "/health").await;
        ids.push(started.container_id);
    }
    assert_ne!(
        shim_pid_of(&rig, &ids[0]).await,
        shim_pid_of(&rig, &ids[1]).await
    );
    for id in &ids {
        rig.runtime().remove_replica(id).await.unwrap();
    }
    rig.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_from_outside_reaches_the_exit_channel_also_after_containerd_restart() {
    let mut rig = Rig::start("exit").await;
    let image = rig.image("web").await;
    let mut exits = rig.runtime().subscribe_exits();

    let first = rig
        .runtime()
        .start_replica(&rig.replica(&image, "exit", 1))
        .await
        .unwrap();
    wait_http(first.ip, "/health").await;
    let pid = rig.runtime().list_replicas(Some("exit")).await.unwrap()[0]
        .pid
        .unwrap();
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = next_exit_of(&mut exits, &first.container_id, Duration::from_secs(1))
        .await
        .unwrap_or_else(|| panic!("no exit event within 1 s of SIGKILL"));
    assert_eq!(exit.exit_status, 137);
    assert!(killed_at.elapsed() <= Duration::from_secs(1));
    rig.runtime()
        .remove_replica(&first.container_id)
        .await
        .unwrap();

    // containerd restarts: the subscription is made again and exits keep arriving.
    let second = rig
        .runtime()
        .start_replica(&rig.replica(&image, "exit", 2))
        .await
        .unwrap();
    wait_http(second.ip, "/health").await;
    rig.containerd.restart().await;
    // The watcher resubscribes with backoff (starting at 100 ms) once containerd is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = rig.runtime().list_replicas(Some("exit")).await.unwrap()[0]
        .pid
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = next_exit_of(&mut exits, &second.container_id, Duration::from_secs(1)).await;
    assert_eq!(
        exit.map(|e| e.exit_status),
        Some(137),
        "no exit event after restart"
    );
    rig.runtime()
        .remove_replica(&second.container_id)
        .await
        .unwrap();
    rig.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let rig = Rig::start("sigterm").await;
    let image = rig.image("ignore-sigterm").await;
    let mut exits = rig.runtime().subscribe_exits();
    let replica = rig
        .runtime()
        .start_replica(&rig.replica(&image, "stubborn", 1))
        .await
        .unwrap();
    wait_http(replica.ip, "/health").await;

    let stop_timeout = Duration::from_secs(2);
    let began = Instant::now();
    rig.runtime()
        .stop_replica(&replica.container_id, stop_timeout)
        .await
        .unwrap();
    assert!(
        began.elapsed() >= stop_timeout,
        "stop returned before stop_timeout"
    );
    let exit = next_exit_of(&mut exits, &replica.container_id, Duration::from_secs(5))
        .await
        .expect("exit event");
    assert_eq!(exit.exit_status, 137, "not ended by SIGKILL");

    let lines: Vec<String> = rig
        .runtime()
        .logs(&replica.container_id, None, false)
        .await
        .unwrap()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert!(
        lines.iter().any(|l| l.contains("got SIGTERM, ignoring it")),
        "SIGTERM was not delivered first: {lines:?}"
    );
    rig.runtime()
        .remove_replica(&replica.container_id)
        .await
        .unwrap();
    rig.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatty_logs_come_back_in_order_and_keep_flowing_without_a_reader() {
    let mut rig = Rig::start("logs").await;
    let image = rig.image("chatty").await;
    let replica = rig
        .runtime()
        .start_replica(&rig.replica(&image, "chatty", 1))
        .await
        .unwrap();
    let id = replica.container_id.clone();
    wait_http(replica.ip, "/health").await;

    // haloyd's side goes away entirely: the log driver is the shim's child, not ours.
    let runtime = rig.runtime.take().unwrap();
    drop(runtime);
    let log_file = rig.config.tasks.log_dir.join(format!("{id}.log"));
    let size_before = std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let size_after = std::fs::metadata(&log_file).unwrap().len();
    assert!(
        size_after > size_before,
        "nothing written while no reader: {size_before} -> {size_after}"
    );

    let network: Arc<dyn Network> = rig.network.clone();
    rig.runtime = Some(
        ContainerdRuntime::connect_with_network(rig.config.clone(), network)
            .await
            .unwrap(),
    );
    let lines: Vec<_> = rig
        .runtime()
        .logs(&id, None, false)
        .await
        .unwrap()
        .map(|l| l.unwrap())
        .collect()
        .await;
    let numbered: Vec<_> = lines
        .iter()
        .filter(|l| l.line.starts_with("line "))
        .collect();
    assert!(numbered.len() >= 10, "{lines:?}");
    for (i, line) in numbered.iter().enumerate() {
        let n = i + 1;
        let (expected_text, expected_stream) = if n % 2 == 1 {
            (format!("line {n} stdout"), LogStreamKind::Stdout)
        } else {
            (format!("line {n} stderr"), LogStreamKind::Stderr)
        };
        assert_eq!(line.line, expected_text);
        assert_eq!(line.stream, expected_stream, "{}", line.line);
    }
    for pair in lines.windows(2) {
        assert!(pair[0].time <= pair[1].time, "timestamps out of order");
    }

    let last = rig
        .runtime()
        .logs(&id, Some(2), false)
        .await
        .unwrap()
        .map(|l| l.unwrap().line)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(last.len(), 2);

    // Follow: after the tail, new lines arrive as the task writes them.
    let mut follow = rig.runtime().logs(&id, Some(1), true).await.unwrap();
    let first = follow.next().await.unwrap().unwrap().line;
    let first_n: usize = first.split_whitespace().nth(1).unwrap().parse().unwrap();
    for k in 1..=5 {
        let next = tokio::time::timeout(Duration::from_secs(5), follow.next())
            .await
            .expect("follow got no new line")
            .unwrap()
            .unwrap();
        let n: usize = next
            .line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(n, first_n + k, "{}", next.line);
    }

    rig.runtime()
        .stop_replica(&id, Duration::from_secs(5))
        .await
        .unwrap();
    rig.runtime().remove_replica(&id).await.unwrap();
    // The follower drains what is left and ends once the replica's logs are gone.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while follow.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "follow kept running after remove_replica");
    assert!(matches!(
        rig.runtime().logs(&id, None, false).await,
        Err(haloy::runtime::RuntimeError::ContainerNotFound { .. })
    ));
    rig.assert_nothing_left().await;
}

/// Prints what the spec gave it, then idles. Runs as `nobody` (looked up in the image).
const SPEC_PROBE: &str = r#"
trap 'exit 0' TERM
id
echo "hostname=$(cat /etc/hostname)"
echo "hosts=$(tail -n 1 /etc/hosts)"
echo "env GREETING=$GREETING HALOY_REPLICA_ID=$HALOY_REPLICA_ID"
echo "volume=$(cat /data/from-host.txt)"
if touch /config/probe 2>/dev/null; then echo "config writable"; else echo "config read-only"; fi
echo "cwd=$(pwd)"
httpd -f -p 80 -h /tmp &
echo done
while true; do sleep 1; done
"#;

fn cgroup_value(parent: &str, id: &str, v1: (&str, &str), v2: &str) -> String {
    let parent = parent.trim_start_matches('/');
    let v1_path = Path::new("/sys/fs/cgroup")
        .join(v1.0)
        .join(parent)
        .join(id)
        .join(v1.1);
    let v2_path = Path::new("/sys/fs/cgroup").join(parent).join(id).join(v2);
    std::fs::read_to_string(&v1_path)
        .or_else(|_| std::fs::read_to_string(&v2_path))
        .unwrap_or_else(|e| panic!("{} / {}: {e}", v1_path.display(), v2_path.display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_applies_user_env_etc_files_volumes_and_limits() {
    use harness::images::{base_layer, single_file_layer};
    let rig = Rig::start("spec").await;
    let config = serde_json::json!({
        "Env": ["PATH=/bin"],
        "Cmd": ["sh", "/app/start.sh"],
        "WorkingDir": "/app",
        "User": "nobody",
    });
    let probe = OciImage::from_layers(
        vec![
            base_layer().clone(),
            single_file_layer("app/start.sh", SPEC_PROBE.as_bytes()),
        ],
        config,
        std::env::consts::ARCH,
    );
    let reference = rig
        .registry
        .push(&probe, "haloy-fixtures/spec-probe", "v1")
        .await;
    let image = rig
        .runtime()
        .ensure_image(&ImageRequest::new(&reference, PullPolicy::IfMissing))
        .await
        .unwrap();

    // Named volume content prepared on the host; a bind mount that nobody could write if rw.
    let named = rig.config.tasks.state_dir.join("volumes/probe/data");
    std::fs::create_dir_all(&named).unwrap();
    std::fs::write(named.join("from-host.txt"), "kept on host").unwrap();
    let bind = rig.dir.path().join("config-dir");
    std::fs::create_dir_all(&bind).unwrap();
    std::fs::set_permissions(&bind, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    let mut spec = rig.replica(&image, "probe", 1);
    spec.volumes = vec![
        haloy::runtime::VolumeMount {
            source: haloy::runtime::VolumeSource::Named("data".into()),
            target: "/data".into(),
            read_only: false,
        },
        haloy::runtime::VolumeMount {
            source: haloy::runtime::VolumeSource::Bind(bind.clone()),
            target: "/config".into(),
            read_only: true,
        },
    ];
    spec.resources = Resources {
        memory_bytes: Some(64 * 1024 * 1024),
        cpus: Some(0.5),
        pids: None,
    };
    let replica = rig.runtime().start_replica(&spec).await.unwrap();
    let id = replica.container_id.clone();

    let mut follow = rig.runtime().logs(&id, None, true).await.unwrap();
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some("done") {
        let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .unwrap_or_else(|_| panic!("probe did not finish: {lines:?}"))
            .unwrap()
            .unwrap();
        lines.push(line.line);
    }
    drop(follow);
    let ip = replica.ip.to_string();
    for expected in [
        "uid=65534(nobody) gid=65534(nogroup)".to_string(),
        "hostname=probe-1".to_string(),
        format!("hosts={ip}\tprobe-1"),
        "env GREETING=hello HALOY_REPLICA_ID=1".to_string(),
        "volume=kept on host".to_string(),
        "config read-only".to_string(),
        "cwd=/app".to_string(),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&expected)),
            "{expected:?} not in {lines:?}"
        );
    }
    assert!(!bind.join("probe").exists());
    // Docker's net.ipv4.ip_unprivileged_port_start=0: nobody may listen on port 80.
    let ip_addr = replica.ip;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let answer = tokio::task::spawn_blocking(move || http_get(ip_addr, 80, "/"))
            .await
            .unwrap();
        match answer {
            Ok((status, _)) => break status,
            Err(err) if Instant::now() > deadline => panic!("port 80 as nobody: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(status > 0);

    let parent = &rig.config.tasks.cgroup_parent;
    let memory = cgroup_value(
        parent,
        &id,
        ("memory", "memory.limit_in_bytes"),
        "memory.max",
    );
    assert_eq!(memory, "67108864");
    let quota = cgroup_value(parent, &id, ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    assert!(
        quota == "50000" || quota == "50000 100000",
        "cpu quota {quota}"
    );

    rig.runtime()
        .stop_replica(&id, Duration::from_secs(5))
        .await
        .unwrap();
    rig.runtime().remove_replica(&id).await.unwrap();
    rig.assert_nothing_left().await;
    // Named volumes outlive their replicas.
    assert!(named.join("from-host.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_leaves_nothing_and_an_interrupted_start_is_recovered() {
    let rig = Rig::start("fail").await;
    let image = rig.image("web").await;

    // Fails after network, snapshot and lease exist (the volume is checked while building the spec).
    let mut bad = rig.replica(&image, "fail", 1);
    bad.volumes = vec![haloy::runtime::VolumeMount {
        source: haloy::runtime::VolumeSource::Bind("relative/path".into()),
        target: "/data".into(),
        read_only: false,
    }];
    let err = rig.runtime().start_replica(&bad).await.unwrap_err();
    assert!(err.to_string().contains("relative/path"), "{err}");
    rig.assert_nothing_left().await;

    // A namespace left by a start that died before creating its container does not block
    // the same replica id later.
    let good = rig.replica(&image, "fail", 1);
    let id = haloy::runtime::task::container_id(&good.app, &good.deployment_id, good.replica);
    rig.network.attach(&id).await.unwrap();
    let replica = rig.runtime().start_replica(&good).await.unwrap();
    assert_eq!(replica.container_id, id);
    wait_http(replica.ip, "/health").await;
    rig.runtime().remove_replica(&id).await.unwrap();
    rig.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_cni_add_during_container_creation_leaves_nothing() {
    // A /30 has one address for tasks beside the gateway: the second replica's IPAM fails
    // while its container and task are being created in parallel.
    let subnet = format!(
        "10.253.{}.{}/30",
        rand::random::<u8>(),
        rand::random::<u8>() & 0xfc
    );
    let rig = Rig::start_on("full", subnet).await;
    let image = rig.image("web").await;
    let first = rig
        .runtime()
        .start_replica(&rig.replica(&image, "full", 1))
        .await
        .unwrap();
    let err = rig
        .runtime()
        .start_replica(&rig.replica(&image, "full", 2))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("host-local") || err.to_string().contains("bridge"),
        "error should name the CNI plugin: {err}"
    );
    let listed = rig.runtime().list_replicas(None).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(rig.netns_files().len(), 1);
    wait_http(first.ip, "/health").await;
    rig.runtime()
        .remove_replica(&first.container_id)
        .await
        .unwrap();
    rig.assert_nothing_left().await;
}

/// Pushes and pulls a busybox image that runs `script` as root.
async fn script_image(rig: &Rig, name: &str, script: &str) -> ImageInfo {
    use harness::images::{base_layer, single_file_layer};
    let config = serde_json::json!({
        "Env": ["PATH=/bin"],
        "Cmd": ["sh", "/app/start.sh"],
    });
    let image = OciImage::from_layers(
        vec![
            base_layer().clone(),
            single_file_layer("app/start.sh", script.as_bytes()),
        ],
        config,
        std::env::consts::ARCH,
    );
    let reference = rig
        .registry
        .push(&image, &format!("haloy-fixtures/{name}"), "v1")
        .await;
    rig.runtime()
        .ensure_image(&ImageRequest::new(&reference, PullPolicy::IfMissing))
        .await
        .unwrap()
}

/// The task's log lines up to and including `done`.
async fn lines_until_done(rig: &Rig, id: &str) -> Vec<String> {
    let mut follow = rig.runtime().logs(id, None, true).await.unwrap();
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some("done") {
        let line = tokio::time::timeout(Duration::from_secs(20), follow.next())
            .await
            .unwrap_or_else(|_| panic!("probe did not finish: {lines:?}"))
            .unwrap_or_else(|| panic!("log ended early: {lines:?}"))
            .unwrap();
        lines.push(line.line);
    }
    lines
}

async fn run_probe(rig: &Rig, spec: &ReplicaSpec) -> (String, Vec<String>) {
    let started = Instant::now();
    let replica = rig.runtime().start_replica(spec).await.unwrap();
    eprintln!(
        "start_replica {} (seccomp {:?}): {:?}",
        spec.app,
        spec.seccomp,
        started.elapsed()
    );
    let id = replica.container_id.clone();
    let lines = lines_until_done(rig, &id).await;
    (id, lines)
}

async fn remove(rig: &Rig, id: &str) {
    rig.runtime()
        .stop_replica(id, Duration::from_secs(2))
        .await
        .unwrap();
    rig.runtime().remove_replica(id).await.unwrap();
}

/// Reports the seccomp mode, then tries what the issue found a replica could do: a user
/// namespace with a mount namespace, and a mount inside it.
const SECCOMP_PROBE: &str = r#"
grep '^Seccomp:' /proc/self/status | tr -d '\t'
mkdir -p /scratch
if unshare -U -r -m sh -c 'mount -t tmpfs none /scratch && echo inner-mount=ok' 2>&1; then
  echo userns=ok
else
  echo userns=refused
fi
if mount -t tmpfs none /scratch 2>/dev/null; then echo mount=ok; else echo mount=refused; fi
echo done
while true; do sleep 1; done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_seccomp_refuses_user_namespaces_and_mount_unconfined_does_not() {
    let rig = Rig::start("seccomp").await;
    let image = script_image(&rig, "seccomp-probe", SECCOMP_PROBE).await;

    let confined = rig.replica(&image, "confined", 1);
    let (id, lines) = run_probe(&rig, &confined).await;
    for expected in ["Seccomp:2", "userns=refused", "mount=refused"] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} not in {lines:?}"
        );
    }
    assert!(!lines.iter().any(|l| l == "inner-mount=ok"), "{lines:?}");
    remove(&rig, &id).await;

    let mut unconfined = rig.replica(&image, "unconfined", 1);
    unconfined.seccomp = SeccompMode::Unconfined;
    let (id, lines) = run_probe(&rig, &unconfined).await;
    // Without the filter only the kernel's own checks remain: a user namespace (and a mount
    // in it) works, a mount in the replica's namespace still lacks CAP_SYS_ADMIN.
    for expected in ["Seccomp:0", "inner-mount=ok", "userns=ok", "mount=refused"] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} not in {lines:?}"
        );
    }
    remove(&rig, &id).await;
    rig.assert_nothing_left().await;
}

/// Starts background sleeps until the shell cannot fork any more (or 100 are running).
const FORK_PROBE: &str = r#"
sh -c 'n=0; while [ $n -lt 100 ]; do sleep 30 & n=$((n+1)); echo "forked $n"; done; echo all-forked' 2>&1
echo "inner-exit=$?"
echo done
exec sleep 3600
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_loop_stops_at_the_pids_limit_and_the_host_is_fine() {
    let rig = Rig::start("pids").await;
    let image = script_image(&rig, "fork-probe", FORK_PROBE).await;
    let mut spec = rig.replica(&image, "forker", 1);
    spec.resources.pids = Some(20);
    let (id, lines) = run_probe(&rig, &spec).await;
    let forked = lines.iter().filter(|l| l.starts_with("forked ")).count();
    assert!(
        !lines.iter().any(|l| l == "all-forked") && (1..20).contains(&forked),
        "the loop was not stopped by the limit: {forked} forks, {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Resource temporarily unavailable")),
        "no EAGAIN in {lines:?}"
    );
    let parent = &rig.config.tasks.cgroup_parent;
    assert_eq!(
        cgroup_value(parent, &id, ("pids", "pids.max"), "pids.max"),
        "20"
    );
    // The host still forks.
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
    remove(&rig, &id).await;

    // Without an app setting, the runtime's default applies.
    let image = script_image(&rig, "idle", "echo done\nexec sleep 3600\n").await;
    let (id, _) = run_probe(&rig, &rig.replica(&image, "idle", 1)).await;
    let expected = haloy::runtime::task::DEFAULT_PIDS_LIMIT.to_string();
    assert_eq!(
        cgroup_value(parent, &id, ("pids", "pids.max"), "pids.max"),
        expected
    );
    remove(&rig, &id).await;
    rig.assert_nothing_left().await;
}

const RRO_PROBE: &str = r#"
if touch /host/top 2>/dev/null; then echo top=writable; else echo top=read-only; fi
if touch /host/sub/x 2>/dev/null; then echo sub=writable; else echo sub=read-only; fi
echo done
while true; do sleep 1; done
"#;

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_binds_are_recursive_and_task_logs_are_private() {
    let rig = Rig::start("rro").await;
    let image = script_image(&rig, "rro-probe", RRO_PROBE).await;
    // A host directory with a file system mounted below it, like /proc under a bound `/`.
    let source = rig.dir.path().join("ro-source");
    let sub = source.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "haloy-rro-test"])
        .arg(&sub)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs on {}", sub.display());

    let mut spec = rig.replica(&image, "rro", 1);
    spec.volumes = vec![haloy::runtime::VolumeMount {
        source: haloy::runtime::VolumeSource::Bind(source.clone()),
        target: "/host".into(),
        read_only: true,
    }];
    let (id, lines) = run_probe(&rig, &spec).await;

    let mut failures = Vec::new();
    for expected in ["top=read-only", "sub=read-only"] {
        if !lines.iter().any(|l| l == expected) {
            failures.push(format!("{expected} not in {lines:?}"));
        }
    }
    if sub.join("x").exists() {
        failures.push("the replica wrote into the submount".to_string());
    }
    let log_dir = &rig.config.tasks.log_dir;
    let log_file = log_dir.join(format!("{id}.log"));
    if mode_of(log_dir) != 0o700 {
        failures.push(format!("log dir mode {:o}", mode_of(log_dir)));
    }
    if mode_of(&log_file) != 0o600 {
        failures.push(format!("log file mode {:o}", mode_of(&log_file)));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    remove(&rig, &id).await;
    let _ = std::process::Command::new("umount").arg(&sub).status();
    rig.assert_nothing_left().await;
}
