//! Leak check (issue 17): N deploy/stop cycles of a one-replica app (default 1,000) through
//! the real `haloy` CLI against a private containerd + haloyd, with what a leak would leave
//! behind read before and after: haloyd's PSS, open fds and threads; containerd's tasks,
//! containers, snapshots and leases in haloyd's namespace; netns mounts, veths on haloyd's
//! bridge and host-local IPAM lease files. The baseline is taken after warm-up cycles (image
//! pulled and unpacked, and the progress hub holding its full 64 finished jobs, which it keeps
//! for `haloy attach`) and the final reading after an idle settle.
//!
//! Bounds (growth from baseline to the end; any excess makes the exit code 1):
//! - tasks, containers, snapshots, leases, netns mounts, veths, IPAM files: 0;
//! - haloyd open fds: 4 (a pooled connection more or less);
//! - haloyd threads: 8 (tokio's blocking pool keeps idle threads for 10 s);
//! - haloyd's live tokio tasks (`haloy_process_tasks` from its /metrics): 4 (a leaked
//!   health monitor, proxy connection or job would add one per cycle);
//! - containerd shims: 0;
//! - haloyd PSS: 3 MiB (allocator and page-cache noise; a 4 KiB-per-cycle leak exceeds it
//!   within the default 1,000 cycles).
//!
//! This is not a timing benchmark: nothing is timed. `integration-tests/bench/churn.sh [N]`.

// Benchmarks start real containerd, registries and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "../harness/mod.rs"]
mod harness;
mod pss;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use harness::haloyd::{Haloyd, HaloydOptions};
use harness::{require_binary, Containerd, Registry};

const APP: &str = "churn";
const DEFAULT_CYCLES: u32 = 1000;
/// Two jobs per cycle: enough cycles to fill `deploy::progress`'s 64 kept finished jobs, so
/// their (bounded) memory is in the baseline.
const WARMUP_CYCLES: u32 = 40;
/// Idle time before the final reading: tokio's idle blocking threads exit after 10 s.
const SETTLE: Duration = Duration::from_secs(12);

/// One reading of everything that must not grow.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    pss_kib: u64,
    fds: usize,
    threads: usize,
    tokio_tasks: usize,
    shims: usize,
    tasks: usize,
    containers: usize,
    snapshots: usize,
    leases: usize,
    netns_mounts: usize,
    veths: usize,
    ipam_files: usize,
}

/// `(name, before, after, allowed growth)` for each reading.
fn compare(before: &Reading, after: &Reading) -> Vec<(&'static str, u64, u64, u64)> {
    let c = |v: usize| v as u64;
    vec![
        ("haloyd PSS (KiB)", before.pss_kib, after.pss_kib, 3 * 1024),
        ("haloyd open fds", c(before.fds), c(after.fds), 4),
        ("haloyd threads", c(before.threads), c(after.threads), 8),
        (
            "haloyd tokio tasks",
            c(before.tokio_tasks),
            c(after.tokio_tasks),
            4,
        ),
        ("containerd shims", c(before.shims), c(after.shims), 0),
        ("containerd tasks", c(before.tasks), c(after.tasks), 0),
        ("containers", c(before.containers), c(after.containers), 0),
        ("snapshots", c(before.snapshots), c(after.snapshots), 0),
        ("containerd leases", c(before.leases), c(after.leases), 0),
        (
            "netns mounts",
            c(before.netns_mounts),
            c(after.netns_mounts),
            0,
        ),
        ("veths on bridge", c(before.veths), c(after.veths), 0),
        ("IPAM files", c(before.ipam_files), c(after.ipam_files), 0),
    ]
}

struct Rig {
    haloyd: Haloyd,
    _registry: Registry,
    containerd: Containerd,
    ctr: PathBuf,
    config: PathBuf,
    bridge: String,
    metrics: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cycles = match std::env::args().nth(1) {
        Some(n) => n.parse().context("usage: churn [CYCLES]")?,
        None => DEFAULT_CYCLES,
    };
    let rig = Rig::start().await?;
    for warmup in 0..WARMUP_CYCLES {
        rig.cycle(warmup)?;
    }
    std::thread::sleep(SETTLE);
    let before = rig.read()?;
    for cycle in 1..=cycles {
        rig.cycle(WARMUP_CYCLES + cycle)?;
        if cycle % 50 == 0 {
            let now = rig.read()?;
            let per_cycle = (now.pss_kib as f64 - before.pss_kib as f64) / f64::from(cycle);
            println!(
                "  after {cycle} cycles: haloyd PSS {} KiB ({per_cycle:+.2} KiB/cycle), fds {}, \
                 threads {}, tokio tasks {}",
                now.pss_kib, now.fds, now.threads, now.tokio_tasks
            );
        }
    }
    std::thread::sleep(SETTLE);
    let after = rig.read()?;
    let failed = report(cycles, &before, &after);
    drop(rig);
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

impl Rig {
    async fn start() -> anyhow::Result<Rig> {
        let ctr = require_binary("ctr", "containerd");
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        let metrics: SocketAddr = ([127, 0, 0, 1], harness::free_port()).into();
        let options = HaloydOptions {
            insecure_registries: vec![registry.addr().to_string()],
            extra_config: vec![format!("metrics: {{listen: \"{metrics}\"}}")],
            ..HaloydOptions::default()
        };
        let haloyd = Haloyd::start(&containerd, options).await;
        let body = format!(
            "name: {APP}\nimage: {image}\nreplicas: 1\nport: 8080\n\
             health_check_path: /health\ndomains:\n  - domain: {APP}.test\n",
            image = registry.fixture_ref("web", "v1"),
        );
        let config = haloyd.write_app_config(APP, &body);
        let bridge = bridge_of(haloyd.config_path())?;
        Ok(Rig {
            haloyd,
            _registry: registry,
            containerd,
            ctr,
            config,
            bridge,
            metrics,
        })
    }

    /// One `haloy deploy` and one `haloy stop --remove-containers`, both must succeed.
    fn cycle(&self, n: u32) -> anyhow::Result<()> {
        for args in [&["deploy"][..], &["stop", "--remove-containers"][..]] {
            let run = self.haloyd.cli(&self.config, args);
            if run.code() != Some(0) {
                bail!(
                    "cycle {n}: haloy {} failed:\n{}\nhaloyd log:\n{}",
                    args.join(" "),
                    run.both(),
                    self.haloyd.log_tail(40)
                );
            }
        }
        Ok(())
    }

    fn read(&self) -> anyhow::Result<Reading> {
        let pid = self.haloyd.pid().context("haloyd has no pid")?;
        let run_dir = self.haloyd.dir().join("run");
        Ok(Reading {
            pss_kib: pss::pss_kib(pid),
            fds: pss::open_fds(pid),
            threads: pss::threads(pid),
            tokio_tasks: self.tokio_tasks()?,
            shims: self.shims(),
            tasks: self.ctr_count(&["tasks", "ls", "-q"])?,
            containers: self.ctr_count(&["containers", "ls", "-q"])?,
            snapshots: self.ctr_count(&["snapshots", "ls"])?.saturating_sub(1),
            leases: self.ctr_count(&["leases", "ls", "-q"])?,
            netns_mounts: pss::mounts_under(&run_dir.join("netns")),
            veths: pss::veths_on(&self.bridge),
            ipam_files: files_below(&run_dir.join("cni/ipam")),
        })
    }

    /// `haloy_process_tasks` from haloyd's /metrics.
    fn tokio_tasks(&self) -> anyhow::Result<usize> {
        let mut conn = TcpStream::connect(self.metrics)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(conn, "GET /metrics HTTP/1.0\r\nHost: churn\r\n\r\n")?;
        let mut body = String::new();
        conn.read_to_string(&mut body)?;
        body.lines()
            .find_map(|l| l.strip_prefix("haloy_process_tasks "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as usize)
            .with_context(|| format!("no haloy_process_tasks in haloyd's /metrics: {body}"))
    }

    /// containerd-shim-runc-v2 processes serving this test's containerd.
    fn shims(&self) -> usize {
        pss::shims_of(&pss::processes(), self.containerd.socket()).len()
    }

    /// Lines `ctr` prints for `args` in haloyd's namespace.
    fn ctr_count(&self, args: &[&str]) -> anyhow::Result<usize> {
        let out = Command::new(&self.ctr)
            .arg("--address")
            .arg(self.containerd.socket())
            .args(["--namespace", self.haloyd.namespace()])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count())
    }
}

/// The `network: {bridge: X, ...}` the harness wrote into haloyd's config.
fn bridge_of(config: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config)?;
    text.lines()
        .find_map(|l| l.strip_prefix("network: {bridge: "))
        .and_then(|rest| rest.split(',').next())
        .map(str::to_string)
        .with_context(|| format!("{}: no network bridge", config.display()))
}

/// Regular files anywhere below `dir`.
fn files_below(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_below(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// Prints before/after/bound per reading; true when any grew beyond its bound.
fn report(cycles: u32, before: &Reading, after: &Reading) -> bool {
    println!("\n{cycles} deploy/stop cycles of a one-replica app:");
    println!(
        "  {:<20} {:>10} {:>10} {:>8} {:>8}",
        "reading", "before", "after", "bound", "ok"
    );
    let mut failed = false;
    for (name, b, a, bound) in compare(before, after) {
        let ok = a <= b + bound;
        failed |= !ok;
        println!(
            "  {name:<20} {b:>10} {a:>10} {:>8} {:>8}",
            format!("+{bound}"),
            if ok { "ok" } else { "LEAK" }
        );
    }
    if failed {
        println!("FAILED: growth beyond the bound (see LEAK rows)");
    } else {
        println!("all within bounds");
    }
    failed
}
