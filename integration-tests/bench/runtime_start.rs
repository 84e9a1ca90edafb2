//! Benchmark (not a test): cached pull + create + start of 10 `web` replicas through haloy's
//! runtime module, against containerd's own path for the same work in the same run:
//! `ctr run -d` with the same `binary://` log driver, plus the same CNI attach per replica
//! (ctr itself does no CNI). Prints both totals and the ratio; the target is <= 1.3x.
//!
//! Run through `integration-tests/bench/runtime-start.sh` (builds haloyd and this example).

#[path = "../harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use haloy::network::{CniNetwork, CniSettings, Network};
use haloy::runtime::log_driver::{log_uri, LogDriverConfig};
use haloy::runtime::task::TaskSettings;
use haloy::runtime::{
    ContainerdRuntime, ImageRequest, PullPolicy, ReplicaSpec, Resources, Runtime, RuntimeConfig,
};
use harness::images::OciImage;

const REPLICAS: u32 = 10;

fn haloyd_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("HALOYD_BIN") {
        return Ok(std::path::absolute(path)?);
    }
    // target/<profile>/examples/<this> → target/<profile>/haloyd
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .context("cannot locate target dir")?;
    let haloyd = profile_dir.join("haloyd");
    if !haloyd.is_file() {
        bail!(
            "{} missing: run `cargo build --bin haloyd` first or set HALOYD_BIN",
            haloyd.display()
        );
    }
    Ok(haloyd)
}

fn spec(image: &haloy::runtime::ImageInfo, replica: u32) -> ReplicaSpec {
    ReplicaSpec {
        app: "bench".into(),
        deployment_id: "01BENCH".into(),
        replica,
        image: image.clone(),
        env: vec![],
        port: 8080,
        health_check_path: "/health".into(),
        domains: vec![],
        labels: Default::default(),
        volumes: vec![],
        resources: Resources::default(),
        stop_timeout: Duration::from_secs(2),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let haloyd = haloyd_binary()?;
    let ctr = harness::require_binary("ctr", "containerd");
    let containerd = harness::Containerd::start().await;
    let registry = harness::Registry::start().await;
    let dir = tempfile::Builder::new().prefix("haloy-bench-").tempdir()?;
    let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
    let network_settings = CniSettings {
        plugin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        network_name: format!("hlbench-{suffix:06x}"),
        bridge: format!("hlb{suffix:06x}"),
        subnet: format!("10.252.{}.0/24", rand::random::<u8>()),
        ipam_data_dir: dir.path().join("ipam"),
        netns_dir: dir.path().join("netns"),
        cache_dir: dir.path().join("cni-cache"),
        conflist_template: None,
    };
    let mut config = RuntimeConfig::new(containerd.socket());
    // ctr puts its tasks under the cgroup /<namespace>: share the parent so cleanup is one rmdir.
    config.namespace = format!("haloy-bench-{suffix:06x}");
    config.network = network_settings.clone();
    config.tasks = TaskSettings {
        state_dir: dir.path().join("state"),
        log_dir: dir.path().join("logs"),
        log_driver_binary: Some(haloyd.clone()),
        cgroup_parent: format!("/{}", config.namespace),
        ..TaskSettings::default()
    };
    let network = Arc::new(CniNetwork::new(network_settings)?);
    let runtime = ContainerdRuntime::connect_with_network(config.clone(), network.clone()).await?;
    let reference = registry
        .push(&OciImage::fixture("web", "v1"), "haloy-fixtures/web", "v1")
        .await;
    let request = ImageRequest::new(&reference, PullPolicy::IfMissing);
    runtime.ensure_image(&request).await?; // warm the cache: the benchmark measures cached pulls

    let result = run(
        &runtime,
        &request,
        &ctr,
        &containerd,
        &haloyd,
        &network,
        &config,
    )
    .await;

    // Teardown (not timed).
    for replica in runtime.list_replicas(None).await.unwrap_or_default() {
        let _ = runtime.remove_replica(&replica.container_id).await;
    }
    for i in 1..=REPLICAS {
        let _ = network.detach(&format!("ctr-bench-{i}")).await;
    }
    drop(runtime);
    drop(containerd);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &config.network.bridge])
        .status();
    harness::unmount_all_under(dir.path());
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        let _ = std::fs::remove_dir(
            hierarchy
                .path()
                .join(config.tasks.cgroup_parent.trim_start_matches('/')),
        );
    }
    result
}

async fn run(
    runtime: &ContainerdRuntime,
    request: &ImageRequest,
    ctr: &std::path::Path,
    containerd: &harness::Containerd,
    haloyd: &std::path::Path,
    network: &CniNetwork,
    config: &RuntimeConfig,
) -> anyhow::Result<()> {
    // haloy: cached pull + network + snapshot + container + task + start, per replica.
    let began = Instant::now();
    for replica in 1..=REPLICAS {
        let image = runtime.ensure_image(request).await?;
        runtime.start_replica(&spec(&image, replica)).await?;
    }
    let ours = began.elapsed();

    // containerd's own path: ctr run -d with the same log driver, plus the same CNI attach.
    let peer_logs = LogDriverConfig {
        dir: config.tasks.log_dir.join("ctr"),
        max_size: config.tasks.log_max_size,
        max_files: config.tasks.log_max_files,
    };
    let uri = log_uri(haloyd, &peer_logs)?;
    let mut cni = Duration::ZERO;
    let began = Instant::now();
    for i in 1..=REPLICAS {
        let id = format!("ctr-bench-{i}");
        let attach_began = Instant::now();
        network.attach(&id).await?;
        cni += attach_began.elapsed();
        let status = tokio::process::Command::new(ctr)
            .arg("--address")
            .arg(containerd.socket())
            .args([
                "-n",
                &config.namespace,
                "run",
                "-d",
                "--snapshotter",
                "overlayfs",
            ])
            .args(["--log-uri", &uri, &request.reference, &id])
            .status()
            .await?;
        if !status.success() {
            bail!("ctr run -d {id} failed: {status}");
        }
    }
    let peer = began.elapsed();

    let per = |d: Duration| d.as_secs_f64() * 1000.0 / REPLICAS as f64;
    println!("replicas: {REPLICAS} (image cached, web fixture, CNI bridge + firewall)");
    println!(
        "haloy runtime module:      {:8.1} ms total, {:6.1} ms/replica",
        ours.as_secs_f64() * 1000.0,
        per(ours)
    );
    println!(
        "ctr run -d + CNI attach:   {:8.1} ms total, {:6.1} ms/replica (CNI part {:.1} ms/replica)",
        peer.as_secs_f64() * 1000.0,
        per(peer),
        per(cni)
    );
    println!(
        "ratio haloy / containerd path: {:.2}x (target <= 1.30x)",
        ours.as_secs_f64() / peer.as_secs_f64()
    );
    Ok(())
}
