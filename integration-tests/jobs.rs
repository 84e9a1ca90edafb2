//! Operations as server-side jobs (issue 12): a `haloy stop` or `haloy rollback` killed midway
//! still completes on haloyd and `haloy status` shows its outcome; a stop signals every replica
//! at once; `init: true` runs tini as PID 1 (signals forwarded, orphans reaped); and haloyd
//! starts on the stored formats of the previous release. A private containerd, registry and
//! haloyd per test, driven by the real `haloy` CLI.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_client::services::v1::GetRequest;
use haloy::api::types::{AppStatus, OperationSummary};
use harness::haloyd::HaloydOptions;
use harness::stack::Stack;

/// haloyd's log line when a task outlived its stop_timeout (src/runtime/task.rs).
const SIGKILL_LINE: &str = "task ignored SIGTERM; sending SIGKILL";

type Rig = Stack;

/// haloyd started on the state files in `seed_state`.
async fn start_on_state(seed_state: PathBuf) -> Rig {
    Stack::start_with(HaloydOptions {
        seed_state: Some(seed_state),
        ..HaloydOptions::default()
    })
    .await
}

/// The task of a container, if it still has one: (host pid, status code).
async fn task(rig: &Rig, container_id: &str) -> Option<(u32, i32)> {
    let client = rig.containerd.client(rig.haloyd.namespace()).await;
    let get = GetRequest {
        container_id: container_id.to_string(),
        exec_id: String::new(),
    };
    match client.tasks().get(client.request(get)).await {
        Ok(answer) => answer.into_inner().process.map(|p| (p.pid, p.status)),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => panic!("Tasks.Get {container_id}: {s}"),
    }
}

/// Containers of `ids` that still have a running task.
async fn running(rig: &Rig, ids: &BTreeSet<String>) -> Vec<String> {
    let mut running = Vec::new();
    for id in ids {
        // 2 is RUNNING in containerd's task Status enum.
        if matches!(task(rig, id).await, Some((_, 2))) {
            running.push(id.clone());
        }
    }
    running
}

fn sigkills(rig: &Rig) -> usize {
    rig.haloyd.log().matches(SIGKILL_LINE).count()
}

fn container_ids(status: &AppStatus) -> BTreeSet<String> {
    status
        .replicas
        .iter()
        .map(|r| r.container_id.clone())
        .collect()
}

fn finished(op: Option<&OperationSummary>, kind: &str) -> bool {
    op.is_some_and(|op| op.kind == kind && op.state == "succeeded")
}

/// Kills the CLI by its PID and reaps it.
fn kill_cli(mut cli: std::process::Child) {
    cli.kill().expect("kill the haloy CLI");
    let _ = cli.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_cli_is_killed_midway_still_stops_every_replica() {
    let rig = Rig::start().await;
    let config = rig.app_config("halfstop", "ignore-sigterm", "v1", 2, "stop_timeout: 6\n");
    rig.ok(&config, &["deploy"]);
    let before = rig.status(&config, &[]);
    let ids = container_ids(&before);
    assert_eq!(ids.len(), 2, "{before:#?}");

    let cli = rig.haloyd.spawn_cli(&config, &["stop"], "stop");
    // The replicas ignore SIGTERM, so the stop waits out stop_timeout: kill the CLI inside it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill_cli(cli);
    eprintln!(
        "stop CLI output before it was killed:\n{}",
        rig.haloyd.cli_output("stop")
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = running(&rig, &ids).await;
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas still running 30s after a killed `haloy stop`: {running:?}\n--- haloyd log (tail)\n{}",
            rig.haloyd.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = rig
        .wait_for_status(&config, Duration::from_secs(10), "the stop recorded", |s| {
            finished(s.last_operation.as_ref(), "stop")
        })
        .await;
    assert!(
        after
            .replicas
            .iter()
            .all(|r| r.state == haloy::api::types::ReplicaState::Stopped),
        "{after:#?}"
    );
    assert_eq!(rig.get("halfstop.test", "/").await.0, 503);
    let text = rig.ok(&config, &["status"]).stdout();
    assert!(text.contains("last op     stop"), "{text}");

    // The stop is on record: it stays stopped through a haloyd restart.
    let mut rig = rig;
    rig.haloyd.kill();
    rig.haloyd.start_again().await;
    let restarted = rig.status(&config, &[]);
    assert!(
        finished(restarted.last_operation.as_ref(), "stop"),
        "{restarted:#?}"
    );
    assert!(running(&rig, &ids).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_cli_is_killed_midway_still_completes() {
    let rig = Rig::start().await;
    let v1 = rig.app_config("halfback", "web", "v1", 2, "");
    rig.ok(&v1, &["deploy"]);
    let v1_id = rig.status(&v1, &[]).deployment_id;
    // v2 ignores SIGTERM: rolling back retires each of its replicas only after stop_timeout.
    let v2 = rig.app_config("halfback", "ignore-sigterm", "v1", 2, "stop_timeout: 5\n");
    rig.ok(&v2, &["deploy"]);
    let v2_ids = container_ids(&rig.status(&v2, &[]));

    let cli = rig
        .haloyd
        .spawn_cli(&v1, &["rollback", v1_id.as_str()], "rollback");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rig.haloyd.cli_output("rollback").contains("draining") {
        assert!(
            Instant::now() < deadline,
            "the rollback never reached a retirement:\n{}",
            rig.haloyd.cli_output("rollback")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill_cli(cli);
    eprintln!(
        "rollback CLI output before it was killed:\n{}",
        rig.haloyd.cli_output("rollback")
    );

    let after = rig
        .wait_for_status(&v1, Duration::from_secs(40), "the rollback finished", |s| {
            finished(s.last_operation.as_ref(), "rollback")
        })
        .await;
    assert!(after.image.ends_with(":v1"), "{after:#?}");
    assert_eq!(after.replicas.len(), 2, "{after:#?}");
    assert!(container_ids(&after).is_disjoint(&v2_ids));
    assert!(
        running(&rig, &v2_ids).await.is_empty(),
        "v2 replicas left running"
    );
    for _ in 0..6 {
        let (code, body) = rig.get("halfback.test", "/").await;
        assert_eq!(code, 200, "{body}");
        assert!(
            body.contains("haloy fixture web") && body.contains("version: v1"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signals_every_replica_at_once() {
    let rig = Rig::start().await;
    let stop_timeout = Duration::from_secs(4);
    let config = rig.app_config("together", "ignore-sigterm", "v1", 3, "stop_timeout: 4\n");
    rig.ok(&config, &["deploy"]);
    let before = sigkills(&rig);

    let started = Instant::now();
    let run = rig.ok(&config, &["stop"]);
    let took = started.elapsed();
    eprintln!(
        "stopping 3 SIGTERM-ignoring replicas took {took:?}\n{}",
        run.stdout()
    );
    assert_eq!(sigkills(&rig) - before, 3, "{}", rig.haloyd.log_tail(30));
    // One stop_timeout for all, not one each (3 × 4 s); the bound leaves room for a slow host.
    assert!(
        took < 2 * stop_timeout,
        "stop took {took:?}; the replicas were stopped one after another?\n{}",
        rig.haloyd.log_tail(30)
    );
    assert!(
        run.stdout()
            .contains("stop succeeded: 3 replica(s) stopped"),
        "{}",
        run.stdout()
    );
}

/// Zombie processes whose parent is `pid`.
fn zombies_of(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid ...`; comm may hold spaces, so split after the last ')'.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let mut fields = rest.split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(pid.to_string().as_str())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_true_forwards_sigterm_and_reaps_orphans() {
    let rig = Rig::start().await;
    let with_init = rig.app_config(
        "withinit",
        "no-term-handler",
        "v1",
        1,
        "init: true\nstop_timeout: 20\n",
    );
    let without = rig.app_config("noinit", "no-term-handler", "v1", 1, "stop_timeout: 1\n");
    rig.ok(&with_init, &["deploy"]);
    rig.ok(&without, &["deploy"]);
    let init_id = rig.status(&with_init, &[]).replicas[0].container_id.clone();
    let plain_id = rig.status(&without, &[]).replicas[0].container_id.clone();
    let (init_pid, _) = task(&rig, &init_id).await.expect("task with init");
    let (plain_pid, _) = task(&rig, &plain_id).await.expect("task without init");
    let comm = std::fs::read_to_string(format!("/proc/{init_pid}/comm")).unwrap_or_default();
    assert!(
        comm.starts_with("init") || comm.starts_with("tini"),
        "PID 1 is {comm:?}"
    );

    // The orphans exit 0.2 s after start; only a reaping PID 1 collects them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        zombies_of(plain_pid) >= 1,
        "the control replica (no init) should hold zombies; is the fixture right?"
    );
    assert_eq!(zombies_of(init_pid), 0, "tini left zombies");

    let started = Instant::now();
    rig.ok(&with_init, &["stop"]);
    let took = started.elapsed();
    eprintln!("stopping a replica without SIGTERM handler behind tini took {took:?}");
    let log = rig.haloyd.log();
    assert!(
        !log.lines()
            .any(|l| l.contains(SIGKILL_LINE) && l.contains(&init_id)),
        "the app behind tini needed SIGKILL:\n{}",
        rig.haloyd.log_tail(30)
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haloyd_starts_on_the_stored_formats_of_the_previous_release() {
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/fixtures/state/v1");
    let rig = start_on_state(fixtures.join("state")).await;
    let yaml = format!(
        "server: {}\nname: fixture\nimage: registry.test/fixture/web:v1\n",
        rig.haloyd.api_addr()
    );
    let dir = rig.haloyd.dir().join("apps/fixture");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("haloy.yaml"), yaml).unwrap();
    let config = dir.join("haloy.yaml");

    let status = rig.status(&config, &[]);
    assert_eq!(
        status.deployment_id, "01JDFX00000000000000000004",
        "{status:#?}"
    );
    assert_eq!(status.domains, ["fixture.test"]);
    let run = rig.ok(&config, &["rollback-targets"]);
    eprintln!("{}", run.stdout());
    // The start rewrote the history in the current format, all four records kept.
    let path = rig.haloyd.dir().join("state/deployments/fixture.json");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["format_version"], haloy::state::HISTORY_FORMAT);
    assert_eq!(written["deployments"].as_array().map(Vec::len), Some(4));
    let stopped =
        std::fs::read_to_string(rig.haloyd.dir().join("state/deployments/stopped-app.json"))
            .unwrap();
    assert!(stopped.contains("\"stopped\": true"), "{stopped}");
}
