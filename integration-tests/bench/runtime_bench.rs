//! Benchmark (issue 3): time to ensure a cached image and create + start N replicas through
//! haloy's runtime module (containerd gRPC + CNI networking + binary:// log driver), beside
//! containerd's own path for the same image in the same run (`ctr run -d`, N times). Prints
//! both medians and their ratio; the target is <= 1.3x. Not a test: nothing is asserted.
//!
//! With `--deploy` (issue 5) the timed path is a whole deploy through `deploy::Deployer`
//! (pull check, start, health check, into the proxy's rotation; min_ready_seconds 0) instead
//! of the bare runtime calls.
//!
//! `cargo run --example runtime-bench -- [--replicas N] [--rounds R] [--deploy]` (as root).
//! Note the peer does less: `ctr run` gives each task an empty netns (no CNI bridge/IPAM/veth)
//! and no log driver.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "../harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use haloy::api::types::EventKind;
use haloy::config::resolve_text;
use haloy::config::tree::Format;
use haloy::deploy::{DeploySettings, Deployer};
use haloy::health::MonitorSettings;
use haloy::network::CniSettings;
use haloy::proxy::Routes;
use haloy::runtime::task::TaskSettings;
use haloy::runtime::{
    ContainerdRuntime, ImageInfo, ImageRequest, PullPolicy, ReplicaSpec, Resources, Runtime,
    RuntimeConfig,
};
use haloy::state::StateStore;
use harness::images::OciImage;

const CNI_DIR: &str = "/usr/lib/cni";
const NAMESPACE: &str = "haloy-bench";

struct Options {
    replicas: u32,
    rounds: u32,
    deploy: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        replicas: 10,
        rounds: 5,
        deploy: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--deploy" {
            options.deploy = true;
            continue;
        }
        let value = args.next().context("every option takes a value")?;
        match arg.as_str() {
            "--replicas" => options.replicas = value.parse()?,
            "--rounds" => options.rounds = value.parse()?,
            other => {
                bail!("unknown option {other}; usage: runtime-bench [--replicas N] [--rounds R] [--deploy]")
            }
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse_args()?;
    // Opt-in phase timings from the runtime's own logs: RUST_LOG=haloy=debug.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let ctr = harness::require_binary("ctr", "containerd");
    let containerd = harness::Containerd::start().await;
    let registry = harness::Registry::start().await;
    let reference = registry
        .push(&OciImage::fixture("web", "v1"), "haloy-fixtures/web", "v1")
        .await;
    let dir = tempfile::Builder::new().prefix("haloy-bench-").tempdir()?;
    let config = runtime_config(containerd.socket(), dir.path());
    let bridge = config.network.bridge.clone();
    let _cgroups = harness::CgroupParentGuard(config.tasks.cgroup_parent.clone());
    let runtime = Arc::new(ContainerdRuntime::connect(config).await?);
    let deployer = options
        .deploy
        .then(|| deployer(runtime.clone(), dir.path()))
        .transpose()?;
    let bench = Bench {
        runtime,
        deployer,
        ctr,
        socket: containerd.socket().to_path_buf(),
        reference,
        replicas: options.replicas,
    };

    let image = bench.ensure().await?;
    // Warm-up (untimed): first bridge setup, shim binary and page cache.
    bench.haloy_round(&image, "warmup").await?;
    bench.haloy_teardown("warmup").await?;
    bench.ctr_round("warmup")?;
    bench.ctr_teardown("warmup");

    let mut haloy_times = Vec::new();
    let mut ctr_times = Vec::new();
    for round in 0..options.rounds {
        let id = format!("r{round}");
        // Alternate the order so neither path always runs on a warmer machine.
        if round % 2 == 0 {
            haloy_times.push(bench.timed_haloy(&id).await?);
            ctr_times.push(bench.timed_ctr(&id)?);
        } else {
            ctr_times.push(bench.timed_ctr(&id)?);
            haloy_times.push(bench.timed_haloy(&id).await?);
        }
        println!(
            "round {round}: haloy {:>7.1} ms   ctr run -d {:>7.1} ms",
            ms(haloy_times[round as usize]),
            ms(ctr_times[round as usize])
        );
    }
    let haloy = median(&mut haloy_times);
    let ctr = median(&mut ctr_times);
    println!(
        "\n{} replicas, median of {} rounds{}:\n  haloy runtime (ensure cached image + create + start, CNI, log driver): {:.1} ms\n  containerd's own path (ctr run -d x{}):                                  {:.1} ms\n  ratio haloy/ctr: {:.2}x (target <= 1.30x)",
        options.replicas,
        options.rounds,
        if options.deploy { " (haloy side: whole deploy until every replica is in rotation)" } else { "" },
        ms(haloy),
        options.replicas,
        ms(ctr),
        haloy.as_secs_f64() / ctr.as_secs_f64()
    );
    drop(bench);
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    harness::unmount_all_under(dir.path());
    Ok(())
}

struct Bench {
    runtime: Arc<ContainerdRuntime>,
    deployer: Option<Arc<Deployer>>,
    ctr: PathBuf,
    socket: PathBuf,
    reference: String,
    replicas: u32,
}

impl Bench {
    async fn ensure(&self) -> anyhow::Result<ImageInfo> {
        Ok(self
            .runtime
            .ensure_image(&ImageRequest::new(&self.reference, PullPolicy::IfMissing))
            .await?)
    }

    async fn timed_haloy(&self, round: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let image = self.ensure().await?;
        let ensured = started.elapsed();
        self.haloy_round(&image, round).await?;
        println!(
            "  (haloy: ensure_image of the cached image took {:.1} ms)",
            ms(ensured)
        );
        let elapsed = started.elapsed();
        self.haloy_teardown(round).await?;
        Ok(elapsed)
    }

    fn timed_ctr(&self, round: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.ctr_round(round)?;
        let elapsed = started.elapsed();
        self.ctr_teardown(round);
        Ok(elapsed)
    }

    async fn haloy_round(&self, image: &ImageInfo, round: &str) -> anyhow::Result<()> {
        if let Some(deployer) = &self.deployer {
            return deploy_round(deployer, &self.reference, self.replicas).await;
        }
        for replica in 0..self.replicas {
            self.runtime
                .start_replica(&spec(image, round, replica))
                .await?;
        }
        Ok(())
    }

    async fn haloy_teardown(&self, round: &str) -> anyhow::Result<()> {
        if let Some(deployer) = &self.deployer {
            let id = deployer.stop("bench", true, false)?;
            return wait_for_job(deployer, &id, "stop").await;
        }
        let deployment = deployment_id(round);
        for replica in self.runtime.list_replicas(Some("bench")).await? {
            if replica.deployment_id == deployment {
                self.runtime
                    .stop_replica(&replica.container_id, Duration::from_secs(2))
                    .await?;
                self.runtime.remove_replica(&replica.container_id).await?;
            }
        }
        Ok(())
    }

    fn ctr_round(&self, round: &str) -> anyhow::Result<()> {
        for replica in 0..self.replicas {
            let id = format!("ctr-{round}-{replica}");
            let out = self
                .ctr_command()
                .args([
                    "run",
                    "-d",
                    "--snapshotter",
                    "overlayfs",
                    &self.reference,
                    &id,
                ])
                .output()?;
            if !out.status.success() {
                bail!("ctr run {id}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }

    fn ctr_teardown(&self, round: &str) {
        for replica in 0..self.replicas {
            let id = format!("ctr-{round}-{replica}");
            let _ = self
                .ctr_command()
                .args(["task", "delete", "--force", &id])
                .output();
            let _ = self
                .ctr_command()
                .args(["container", "delete", &id])
                .output();
        }
    }

    fn ctr_command(&self) -> Command {
        let mut command = Command::new(&self.ctr);
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE]);
        command
    }
}

fn deployer(runtime: Arc<ContainerdRuntime>, dir: &Path) -> anyhow::Result<Arc<Deployer>> {
    let settings = DeploySettings {
        deploy_timeout: Duration::from_secs(60),
        health_attempt_timeout: Duration::from_secs(2),
        monitor: MonitorSettings::default(),
        drain_timeout: Duration::from_secs(5),
        volumes_dir: dir.join("volumes"),
        host_paths: Default::default(),
        init_binary: haloy::runtime::DEFAULT_INIT_BINARY.into(),
    };
    let state = StateStore::open(&dir.join("deploy-state"))?;
    Ok(Deployer::new(runtime, Routes::new(), state, settings))
}

/// One deploy of `replicas` replicas, timed until the last one is in rotation.
async fn deploy_round(
    deployer: &Arc<Deployer>,
    reference: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    let yaml = format!(
        "name: bench\nimage: {reference}\nreplicas: {replicas}\nport: 8080\nhealth_check_path: /health\n"
    );
    let (mut apps, _) = resolve_text(
        &yaml,
        Format::Yaml,
        "bench.yaml",
        Path::new("."),
        &Default::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut app = apps.pop().context("bench config resolved to no app")?;
    app.image.pull_policy = haloy::config::PullPolicy::IfMissing;
    let id = deployer.deploy(app, None).await?;
    wait_for_job(deployer, &id, "deploy").await
}

/// Follows a job's events until it finishes; an error unless it succeeded.
async fn wait_for_job(deployer: &Arc<Deployer>, id: &str, what: &str) -> anyhow::Result<()> {
    let mut events = Box::pin(
        deployer
            .events(id)
            .with_context(|| format!("{what} has no progress stream"))?,
    );
    while let Some(event) = events.next().await {
        if event.kind == EventKind::Finished {
            if event.ok == Some(true) {
                return Ok(());
            }
            bail!("bench {what} failed: {}", event.message);
        }
    }
    bail!("bench {what} ended without a result")
}

fn runtime_config(socket: &Path, dir: &Path) -> RuntimeConfig {
    let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
    let mut config = RuntimeConfig::new(socket);
    config.namespace = NAMESPACE.to_string();
    config.network = CniSettings {
        plugin_dirs: vec![PathBuf::from(CNI_DIR)],
        network_name: format!("hlb-{suffix:06x}"),
        bridge: format!("hlb{suffix:06x}"),
        subnet: format!("10.252.{}.0/24", rand::random::<u8>()),
        ipam_data_dir: dir.join("ipam"),
        netns_dir: dir.join("netns"),
        cache_dir: dir.join("cni-cache"),
        conflist_template: None,
    };
    config.tasks = TaskSettings {
        state_dir: dir.join("state"),
        log_dir: dir.join("logs"),
        log_max_size: 1024 * 1024,
        log_max_files: 2,
        log_driver_binary: Some(haloyd_binary()),
        cgroup_parent: format!("/haloy-bench-{suffix:06x}"),
        init_binary: haloy::runtime::DEFAULT_INIT_BINARY.into(),
        ..Default::default()
    };
    config
}

/// haloyd is the log driver; it sits next to the examples dir in the target dir.
fn haloyd_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join("haloyd")
}

fn deployment_id(round: &str) -> String {
    format!("01BENCH{}", round.to_uppercase())
}

fn spec(image: &ImageInfo, round: &str, replica: u32) -> ReplicaSpec {
    ReplicaSpec {
        app: "bench".into(),
        deployment_id: deployment_id(round),
        replica,
        image: image.clone(),
        env: vec![],
        port: 8080,
        health_check_path: "/health".into(),
        domains: vec![],
        labels: Default::default(),
        volumes: vec![],
        resources: Resources::default(),
        seccomp: Default::default(),
        stop_timeout: Duration::from_secs(2),
        init: false,
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
