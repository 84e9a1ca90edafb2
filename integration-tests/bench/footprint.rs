//! Benchmark (issue 17): resident memory of haloy's host stack beside Docker's, same machine,
//! same run, same 3 apps × 3 replicas of the busybox `web` fixture.
//!
//! 1. Log drivers alone: 9 × `haloyd` re-executed as driver (the old design) and 9 ×
//!    `haloy-logd`, each fed 1,000 lines through pipes; PSS per driver.
//! 2. haloy: a private containerd + haloyd (the package's build, `haloy-logd` beside it),
//!    3 apps × 3 replicas deployed with the real CLI (one shim per app, or
//!    `FOOTPRINT_SHIM=replica|host` for haloyd's `containerd.shim`), then idle; PSS of haloyd,
//!    containerd, the shims and the log drivers; then a 4th app of 3 replicas for haloyd's
//!    growth per extra replica.
//! 3. Docker: a fresh private containerd + `dockerd --containerd <it>` with private data-root,
//!    exec-root, pidfile, socket, bridge and cgroup parent (no iptables), the same image loaded
//!    and 9 containers run (json-file logs, written by dockerd itself).
//!
//! PSS comes from /proc/<pid>/smaps_rollup, so shared pages are split among all processes
//! mapping them (other containerd shims on the machine lower both sides alike). Prints every
//! component, both totals and the ratio (targets: log path ≤ 1 MiB per replica, haloyd ≤ 20
//! MiB, haloy/Docker ≤ 0.5), and the same split into anonymous and file-backed PSS (`pss::Pss`).
//! Nothing is asserted: run `integration-tests/bench/footprint.sh`. `FOOTPRINT_HALOY_ONLY=1`
//! measures haloy's stack alone (A/B of haloy builds).

// Benchmarks start real containerd, dockerd, registries and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "../harness/mod.rs"]
mod harness;
mod pss;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use harness::haloyd::{Haloyd, HaloydOptions};
use harness::{require_binary, stop_child, unmount_all_under, Containerd, OciImage, Registry};
use pss::{mib, processes, pss_kib, pss_split, pss_split_sum, pss_sum, shims_of, Pss};

const APPS: [&str; 3] = ["fp-a", "fp-b", "fp-c"];
const REPLICAS: u32 = 3;
/// Idle time before each PSS reading, the same for both stacks: past two of Go's forced GCs
/// (every 2 minutes). After the first, containerd and dockerd still hold what a pull or load
/// grew: sync.Pool buffers survive one GC, and the heap goal is set from them. haloy's
/// containerd takes the image writes Docker's never sees, so at 130 s it held 2.3–3.8 MiB more
/// anonymous memory than Docker's; at 270 s the two are equal (9.7 vs 9.8 MiB), and their live
/// heaps after a forced GC were already equal (3.5 MB each, containerd's debug heap profile).
/// `FOOTPRINT_SETTLE_SECS=5` for a quick run.
fn settle() -> Duration {
    let secs = std::env::var("FOOTPRINT_SETTLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(270);
    Duration::from_secs(secs)
}
const DRIVER_ARG: &str = "_HALOY_LOG_DRIVER";

/// PSS in KiB per component of one stack.
#[derive(Debug, Default, Clone, Copy)]
struct Stack {
    daemon: Pss,
    containerd: Pss,
    shims: Pss,
    shim_count: usize,
    log_path: Pss,
    log_count: usize,
}

impl Stack {
    fn total(&self) -> Pss {
        self.daemon + self.containerd + self.shims + self.log_path
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin_dir = harness::haloyd::haloyd_binary()
        .parent()
        .context("haloyd has no folder")?
        .to_path_buf();
    let drivers = measure_drivers(&bin_dir)?;
    eprintln!(
        "log drivers measured: {} KiB each as haloyd, {} KiB each as haloy-logd",
        drivers.haloyd_as_driver, drivers.haloy_logd
    );
    let (haloy, haloyd_growth) = haloy_stack().await?;
    eprintln!("haloy stack measured: {haloy:?}, haloyd growth per replica {haloyd_growth} KiB");
    if std::env::var_os("FOOTPRINT_HALOY_ONLY").is_some() {
        // A/B of haloy builds: Docker's side does not change between them.
        let total = haloy.total();
        println!(
            "haloy only: haloyd {} MiB (anon {}), total {} MiB (anon {})",
            mib(haloy.daemon.total),
            mib(haloy.daemon.anon),
            mib(total.total),
            mib(total.anon)
        );
        return Ok(());
    }
    let docker = docker_stack().await?;

    report(&drivers, &haloy, haloyd_growth, &docker);
    Ok(())
}

/// PSS per driver (KiB) of each driver binary, 9 running at once.
struct DriverReading {
    haloyd_as_driver: u64,
    haloy_logd: u64,
}

fn measure_drivers(bin_dir: &Path) -> anyhow::Result<DriverReading> {
    let count = APPS.len() * REPLICAS as usize;
    let haloyd_as_driver = drivers_pss(&bin_dir.join("haloyd"), count)?;
    let haloy_logd = drivers_pss(&bin_dir.join("haloy-logd"), count)?;
    Ok(DriverReading {
        haloyd_as_driver,
        haloy_logd,
    })
}

/// Starts `count` drivers of `binary` the way the shim does (fds 3/4/5 = stdout, stderr and the
/// ready pipe; here FIFOs opened by a shell), writes 1,000 lines to each, returns PSS per driver.
fn drivers_pss(binary: &Path, count: usize) -> anyhow::Result<u64> {
    anyhow::ensure!(
        binary.is_file(),
        "{} missing: build it first",
        binary.display()
    );
    let dir = tempfile::Builder::new().prefix("haloy-fp-drv-").tempdir()?;
    let config = format!(
        r#"{{"dir":"{}","max_size":1048576,"max_files":2}}"#,
        dir.path().join("logs").display()
    );
    let mut running = Vec::new();
    for i in 0..count {
        let fifo = |name: &str| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(format!("{name}-{i}"));
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU)?;
            Ok(path)
        };
        let (out, err) = (fifo("out")?, fifo("err")?);
        // Read-write opens never block on a FIFO; the driver then holds a writer too, so it
        // ends by SIGTERM (its normal stop) rather than by EOF.
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<>"$OUT" 4<>"$ERR" 5>/dev/null"#)
            .arg(binary)
            .arg(DRIVER_ARG)
            .arg(&config)
            .env_clear()
            .env("OUT", &out)
            .env("ERR", &err)
            .env("CONTAINER_ID", format!("drv-{i}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        running.push((child, out, err));
    }
    for (_, out, err) in &running {
        let mut stdout = std::fs::OpenOptions::new().write(true).open(out)?;
        let mut stderr = std::fs::OpenOptions::new().write(true).open(err)?;
        for n in 0..500 {
            use std::io::Write;
            writeln!(stdout, "GET /index.html 200 {n} bytes=1234 ua=bench")?;
            writeln!(stderr, "warning: request {n} took a while")?;
        }
    }
    let logs = dir.path().join("logs");
    wait_for(
        Duration::from_secs(30),
        "drivers writing their logs",
        || {
            (0..count).all(|i| {
                std::fs::read_to_string(logs.join(format!("drv-{i}.log")))
                    .map(|t| t.lines().count() >= 1000)
                    .unwrap_or(false)
            })
        },
    )?;
    let pids: Vec<u32> = running.iter().map(|(c, _, _)| c.id()).collect();
    let total = pss_sum(&pids);
    for (mut child, _, _) in running {
        stop_child(&mut child, Duration::from_secs(5));
    }
    Ok(total / count as u64)
}

/// haloy's stack with 3 × 3 replicas; also haloyd's PSS growth per extra replica (KiB).
async fn haloy_stack() -> anyhow::Result<(Stack, i64)> {
    let containerd = Containerd::start().await;
    let registry = Registry::start().await;
    registry.push_fixtures().await;
    let options = HaloydOptions {
        deploy_timeout: Duration::from_secs(120),
        // Production's default interval; the harness's 1 s would make "idle" busier.
        health_interval: Duration::from_secs(10),
        insecure_registries: vec![registry.addr().to_string()],
        shim: std::env::var("FOOTPRINT_SHIM").ok(),
        ..HaloydOptions::default()
    };
    let haloyd = Haloyd::start(&containerd, options).await;
    let haloyd_pid = haloyd.pid().context("haloyd has no pid")?;
    for app in APPS {
        deploy(&haloyd, &registry, app, REPLICAS)?;
    }
    std::thread::sleep(settle());
    let stack = read_haloy_stack(haloyd_pid, &containerd);
    for (perms, size, rss) in pss::binary_mappings(haloyd_pid) {
        eprintln!("haloyd's own binary, {perms} mapping: {rss} of {size} KiB resident");
    }
    anyhow::ensure!(
        stack.log_count == APPS.len() * REPLICAS as usize,
        "expected {} haloy-logd drivers, found {} (is haloy-logd built beside haloyd?)",
        APPS.len() * REPLICAS as usize,
        stack.log_count
    );
    deploy(&haloyd, &registry, "fp-d", REPLICAS)?;
    std::thread::sleep(settle());
    let grown = pss_kib(haloyd_pid);
    let growth = (grown as i64 - stack.daemon.total as i64) / REPLICAS as i64;
    // Field order of the harness guards: haloyd first, then registry, then containerd.
    drop(haloyd);
    drop(registry);
    drop(containerd);
    Ok((stack, growth))
}

fn deploy(haloyd: &Haloyd, registry: &Registry, app: &str, replicas: u32) -> anyhow::Result<()> {
    let body = format!(
        "name: {app}\nimage: {image}\nreplicas: {replicas}\nport: 8080\n\
         health_check_path: /health\ndomains:\n  - domain: {app}.test\n",
        image = registry.fixture_ref("web", "v1"),
    );
    let config = haloyd.write_app_config(app, &body);
    let run = haloyd.cli(&config, &["deploy"]);
    if run.code() != Some(0) {
        bail!("haloy deploy {app} failed:\n{}", run.both());
    }
    Ok(())
}

fn read_haloy_stack(haloyd_pid: u32, containerd: &Containerd) -> Stack {
    let procs = processes();
    let shims = shims_of(&procs, containerd.socket());
    let drivers = pss::children_with_arg(&procs, &shims, DRIVER_ARG);
    let logd = procs
        .iter()
        .filter(|p| drivers.contains(&p.pid) && p.program() == "haloy-logd")
        .count();
    if logd != drivers.len() {
        eprintln!(
            "note: {} of {} log drivers are haloyd itself (no haloy-logd beside haloyd)",
            drivers.len() - logd,
            drivers.len()
        );
    }
    Stack {
        daemon: pss_split(haloyd_pid),
        containerd: containerd.pid().map(pss_split).unwrap_or_default(),
        shims: pss_split_sum(&shims),
        shim_count: shims.len(),
        log_path: pss_split_sum(&drivers),
        log_count: drivers.len(),
    }
}

/// Docker's stack with the same 3 × 3 containers on a fresh private containerd.
async fn docker_stack() -> anyhow::Result<Stack> {
    let containerd = Containerd::start().await;
    let dockerd = Dockerd::start(&containerd)?;
    let archive = dockerd.dir.path().join("web.tar");
    OciImage::fixture("web", "v1").write_docker_archive(&archive, "haloy-fixtures/web:v1");
    dockerd.docker_ok(&["load", "-i", &archive.to_string_lossy()])?;
    for app in APPS {
        for replica in 0..REPLICAS {
            let name = format!("{app}-{replica}");
            dockerd.docker_ok(&[
                "run",
                "-d",
                "--name",
                &name,
                "--log-driver",
                "json-file",
                "--log-opt",
                "max-size=10m",
                "haloy-fixtures/web:v1",
            ])?;
        }
    }
    std::thread::sleep(settle());
    let procs = processes();
    let shims = shims_of(&procs, containerd.socket());
    let stack = Stack {
        daemon: dockerd
            .child
            .as_ref()
            .map(|c| pss_split(c.id()))
            .unwrap_or_default(),
        containerd: containerd.pid().map(pss_split).unwrap_or_default(),
        shims: pss_split_sum(&shims),
        shim_count: shims.len(),
        log_path: Pss::default(),
        log_count: 0,
    };
    drop(dockerd);
    drop(containerd);
    Ok(stack)
}

/// A private dockerd on a harness containerd; everything it made is removed on drop.
struct Dockerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    docker: PathBuf,
    socket: PathBuf,
    bridge: String,
    cgroup_parent: String,
}

impl Dockerd {
    fn start(containerd: &Containerd) -> anyhow::Result<Dockerd> {
        let dockerd = require_binary("dockerd", "docker.io");
        // The CLI from the same package first (a newer one elsewhere on PATH may refuse the
        // older daemon's API).
        let packaged = PathBuf::from("/usr/bin/docker");
        let docker = if packaged.is_file() {
            packaged
        } else {
            require_binary("docker", "docker.io")
        };
        let dir = tempfile::Builder::new()
            .prefix("haloy-fp-docker-")
            .tempdir()?;
        let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
        let bridge = format!("hfd{suffix:06x}");
        let subnet = format!("10.251.{}", rand::random::<u8>());
        run_ok("ip", &["link", "add", "name", &bridge, "type", "bridge"])?;
        let cgroup_parent = format!("/haloy-fp-docker-{suffix:06x}");
        let socket = dir.path().join("docker.sock");
        let config_file = dir.path().join("daemon.json");
        std::fs::write(&config_file, "{}")?;
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        let mut daemon = Dockerd {
            child: None,
            dir,
            docker,
            socket,
            bridge,
            cgroup_parent,
        };
        run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{subnet}.1/24"),
                "dev",
                &daemon.bridge,
            ],
        )?;
        run_ok("ip", &["link", "set", &daemon.bridge, "up"])?;
        let dir = daemon.dir.path();
        let child = Command::new(&dockerd)
            .arg("--containerd")
            .arg(containerd.socket())
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", daemon.socket.display()))
            .arg("--config-file")
            .arg(&config_file)
            .args(["--bridge", &daemon.bridge])
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .args(["--cgroup-parent", &daemon.cgroup_parent])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start dockerd")?;
        daemon.child = Some(child);
        wait_for(Duration::from_secs(60), "dockerd answering", || {
            daemon
                .docker(&["version"])
                .is_ok_and(|o| o.status.success())
        })
        .with_context(|| daemon.log())?;
        Ok(daemon)
    }

    fn docker(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new(&self.docker)
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null())
            .output()
    }

    fn docker_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.docker(args)?;
        if !out.status.success() {
            bail!(
                "docker {}: {}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(ids) = self.docker_ok(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        if let Some(child) = self.child.as_mut() {
            stop_child(child, Duration::from_secs(20));
        }
        let _ = run_ok("ip", &["link", "del", &self.bridge]);
        unmount_all_under(self.dir.path());
        harness::remove_cgroup_parent(&self.cgroup_parent);
    }
}

fn run_ok(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

fn report(drivers: &DriverReading, haloy: &Stack, growth: i64, docker: &Stack) {
    let replicas = APPS.len() * REPLICAS as usize;
    println!("\nLog driver alone, {replicas} running, PSS each:");
    println!(
        "  haloyd re-executed as driver: {} MiB   haloy-logd: {} MiB   ratio {:.2}",
        mib(drivers.haloyd_as_driver),
        mib(drivers.haloy_logd),
        drivers.haloy_logd as f64 / drivers.haloyd_as_driver.max(1) as f64
    );
    let shim = std::env::var("FOOTPRINT_SHIM").unwrap_or_else(|_| "app (default)".into());
    println!(
        "\nHost stack PSS (MiB), {} apps x {REPLICAS} replicas, idle {} s; haloyd's containerd.shim: {shim}",
        APPS.len(),
        settle().as_secs()
    );
    println!(
        "  {:<28} {:>10} {:>10}   {:>11} {:>11}",
        "component", "haloy", "docker", "haloy anon", "docker anon"
    );
    let row = |name: &str, h: Pss, d: Pss| {
        println!(
            "  {name:<28} {:>10} {:>10}   {:>11} {:>11}",
            mib(h.total),
            mib(d.total),
            mib(h.anon),
            mib(d.anon)
        )
    };
    row("daemon (haloyd / dockerd)", haloy.daemon, docker.daemon);
    row("containerd", haloy.containerd, docker.containerd);
    row(
        &format!("shims ({} / {})", haloy.shim_count, docker.shim_count),
        haloy.shims,
        docker.shims,
    );
    row(
        &format!("log path ({} drivers / dockerd)", haloy.log_count),
        haloy.log_path,
        docker.log_path,
    );
    let (haloy_total, docker_total) = (haloy.total(), docker.total());
    row("total", haloy_total, docker_total);
    println!(
        "  (anon: heap, stacks and shared memory; the rest is mapped program files, clean page\n   \
         cache whose resident share depends on the kernel: haloy file-backed {} MiB, docker {} MiB)",
        mib(haloy_total.file()),
        mib(docker_total.file())
    );
    println!(
        "\nratio haloy/docker: {:.2} (target <= 0.50); anonymous memory alone: {:.2}",
        haloy_total.total as f64 / docker_total.total.max(1) as f64,
        haloy_total.anon as f64 / docker_total.anon.max(1) as f64
    );
    println!(
        "log path per replica: {} MiB (target <= 1.0)",
        mib(haloy.log_path.total / haloy.log_count.max(1) as u64)
    );
    println!("haloyd: {} MiB (target <= 20.0)", mib(haloy.daemon.total));
    println!("haloyd growth per extra replica: {growth} KiB");
}
