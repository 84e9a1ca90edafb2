//! Deploy logic without root: rollouts, restore-on-failure, crash restarts, crash-looping,
//! stop and recovery, driven through `Deployer`'s public API against `FakeRuntime` (each
//! replica a tiny HTTP server on its own loopback address). Crash tests run on tokio's
//! paused clock, so the 2/4/8 s restart backoffs cost no wall time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::api::types::ReplicaState as Wire;
use crate::runtime::fake::{Behaviour, FakeRuntime};
use crate::state::OperationState;

const GOOD: &str = "example.test/web:good";
const BAD: &str = "example.test/web:bad";
const BROKEN: &str = "example.test/web:broken";

struct Harness {
    dir: tempfile::TempDir,
    runtime: Arc<FakeRuntime>,
    deployer: Arc<Deployer>,
}

fn settings(dir: &std::path::Path) -> DeploySettings {
    DeploySettings {
        // Short: a never-healthy replica fails its deploy in about a second.
        deploy_timeout: Duration::from_secs(1),
        health_attempt_timeout: Duration::from_millis(500),
        monitor: MonitorSettings {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
            fall: 3,
            rise: 2,
        },
        drain_timeout: Duration::from_millis(100),
        volumes_dir: dir.join("volumes"),
        host_paths: Default::default(),
        init_binary: crate::runtime::DEFAULT_INIT_BINARY.into(),
    }
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = Arc::new(FakeRuntime::new());
        runtime.script(BAD, Behaviour::NeverHealthy);
        runtime.script(BROKEN, Behaviour::FailStart);
        let deployer = Self::deployer_on(&runtime, dir.path());
        Harness {
            dir,
            runtime,
            deployer,
        }
    }

    /// A fresh haloyd over the same containerd and state dir (as after a restart).
    fn deployer_on(runtime: &Arc<FakeRuntime>, dir: &std::path::Path) -> Arc<Deployer> {
        let state = StateStore::open(dir).expect("state store");
        Deployer::new(runtime.clone(), Routes::new(), state, settings(dir))
    }

    /// Deploys and waits for the job's end; true when it succeeded.
    async fn deploy(&self, image: &str, replicas: u32, strategy: &str) -> bool {
        let id = self
            .deployer
            .deploy(app(image, replicas, strategy), None)
            .await
            .expect("deploy accepted");
        self.finished(&id).await
    }

    async fn stop(&self) -> bool {
        let id = self
            .deployer
            .stop("web", false, false)
            .expect("stop accepted");
        self.finished(&id).await
    }

    /// Waits until the one replica of "web" is another container than `first`, and ready.
    async fn replaced_and_ready(&self, first: &str) {
        wait_for("the restart", || {
            let r = self.deployer.status(Some("web")).pop()?.replicas.pop()?;
            (r.container_id != first && r.state == Wire::Ready).then_some(())
        })
        .await;
    }

    async fn finished(&self, id: &str) -> bool {
        let deployer = self.deployer.clone();
        let id = id.to_string();
        let state = wait_for("the job to finish", move || {
            let op = deployer.state.last_operation("web").ok()??;
            (op.id == id && op.state != OperationState::Running).then_some(op.state)
        })
        .await;
        // The lock is released just after the history is written.
        let entry = self.deployer.entry("web");
        wait_for("the app lock", || entry.lock.try_lock().ok().map(drop)).await;
        state == OperationState::Succeeded
    }

    fn replicas(&self) -> Vec<crate::api::types::ReplicaStatus> {
        self.deployer
            .status(Some("web"))
            .pop()
            .map(|s| s.replicas)
            .unwrap_or_default()
    }

    /// Backends the proxy would send traffic to.
    fn serving(&self) -> usize {
        self.deployer
            .routes
            .app("web")
            .map_or(0, |r| r.backends.iter().filter(|b| b.is_ready()).count())
    }

    fn images_running(&self) -> Vec<String> {
        let running = self.runtime.running();
        let mut deployed: Vec<String> = self
            .deployer
            .entry("web")
            .live_lock()
            .replicas
            .iter()
            .filter(|r| running.contains(&r.container_id))
            .map(|r| r.spec.image.name.clone())
            .collect();
        deployed.sort();
        deployed
    }
}

fn app(image: &str, replicas: u32, strategy: &str) -> ResolvedApp {
    let yaml = format!(
        "name: web\nimage: {image}\nreplicas: {replicas}\nport: 47613\n\
         deployment_strategy: {strategy}\ndomains:\n  - domain: web.example.test\n"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut apps, _) = crate::config::resolve_text(
        &yaml,
        crate::config::tree::Format::Yaml,
        "haloy.yaml",
        dir.path(),
        &Default::default(),
    )
    .expect("valid test config");
    apps.remove(0)
}

/// Polls `check` until it gives a value; wall-clock limit, so it also holds on paused time.
async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct RolloutCase {
    name: &'static str,
    /// (image, replicas) deployed first; must succeed.
    before: (&'static str, u32),
    /// The deploy under test.
    then: (&'static str, u32, &'static str),
    succeeds: bool,
    /// Images of the running replicas afterwards, sorted.
    running: &'static [&'static str],
}

const ROLLOUTS: &[RolloutCase] = &[
    RolloutCase {
        name: "scale up",
        before: (GOOD, 1),
        then: (GOOD, 3, "rolling"),
        succeeds: true,
        running: &[GOOD, GOOD, GOOD],
    },
    RolloutCase {
        name: "scale down",
        before: (GOOD, 3),
        then: (GOOD, 1, "rolling"),
        succeeds: true,
        running: &[GOOD],
    },
    RolloutCase {
        name: "rolling: never-healthy new version restores the old one",
        before: (GOOD, 2),
        then: (BAD, 2, "rolling"),
        succeeds: false,
        running: &[GOOD, GOOD],
    },
    RolloutCase {
        name: "rolling: failing start leaves the old version serving",
        before: (GOOD, 2),
        then: (BROKEN, 2, "rolling"),
        succeeds: false,
        running: &[GOOD, GOOD],
    },
    RolloutCase {
        name: "rolling: failing scale-up removes what it started",
        before: (GOOD, 1),
        then: (BAD, 3, "rolling"),
        succeeds: false,
        running: &[GOOD],
    },
    RolloutCase {
        name: "replace: a failure leaves nothing (the old ones were stopped first)",
        before: (GOOD, 2),
        then: (BAD, 2, "replace"),
        succeeds: false,
        running: &[],
    },
];

#[tokio::test]
async fn rollouts() {
    for case in ROLLOUTS {
        let h = Harness::new();
        assert!(
            h.deploy(case.before.0, case.before.1, "rolling").await,
            "{}: first deploy",
            case.name
        );
        let (image, replicas, strategy) = case.then;
        let ok = h.deploy(image, replicas, strategy).await;
        assert_eq!(ok, case.succeeds, "{}: outcome", case.name);
        assert_eq!(h.images_running(), case.running, "{}: running", case.name);
        assert_eq!(
            h.serving(),
            case.running.len(),
            "{}: in rotation",
            case.name
        );
        // Nothing leaks: every container haloyd does not track is gone.
        assert_eq!(
            h.runtime.containers().len(),
            case.running.len(),
            "{}: containers left in the runtime",
            case.name
        );
        drop(h.dir);
    }
}

#[tokio::test]
async fn stop_takes_every_replica_out_and_stops_it() {
    let h = Harness::new();
    assert!(h.deploy(GOOD, 2, "rolling").await);
    assert_eq!(h.serving(), 2);
    assert!(h.stop().await, "stop succeeds");
    assert_eq!(h.serving(), 0);
    assert!(h.runtime.running().is_empty());
    let states: Vec<Wire> = h.replicas().into_iter().map(|r| r.state).collect();
    assert_eq!(states, [Wire::Stopped, Wire::Stopped]);
    assert!(h.deployer.state.is_stopped("web").expect("history"));
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_restarted_after_a_backoff() {
    let h = Harness::new();
    h.deployer.start().await.expect("start");
    assert!(h.deploy(GOOD, 1, "rolling").await);
    let first = h.replicas()[0].container_id.clone();
    let crashed_at = tokio::time::Instant::now();
    h.runtime.crash(&first, 1);
    h.replaced_and_ready(&first).await;
    assert!(
        crashed_at.elapsed() >= Duration::from_secs(2),
        "restarted after {:?}, before the first 2 s backoff",
        crashed_at.elapsed()
    );
    let r = &h.replicas()[0];
    assert_eq!(r.restarts, 1);
    assert_eq!(h.serving(), 1);
    assert_eq!(h.runtime.running(), std::slice::from_ref(&r.container_id));
}

#[tokio::test(start_paused = true)]
async fn an_exit_missed_while_the_runtime_was_away_is_found_at_its_resync() {
    let h = Harness::new();
    h.deployer.start().await.expect("start");
    assert!(h.deploy(GOOD, 1, "rolling").await);
    let first = h.replicas()[0].container_id.clone();
    h.runtime.crash_unheard(&first, 137);
    // No event: only the health monitor sees it; nothing restarts it yet.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let r = &h.replicas()[0];
    assert_eq!((r.container_id.as_str(), r.restarts), (first.as_str(), 0));

    let resynced_at = tokio::time::Instant::now();
    h.runtime.resync();
    h.replaced_and_ready(&first).await;
    // Well before the periodic safety net (minutes): the resync found it.
    assert!(
        resynced_at.elapsed() < Duration::from_secs(30),
        "restarted {:?} after the resync",
        resynced_at.elapsed()
    );
    assert_eq!(h.replicas()[0].restarts, 1);
    assert_eq!(h.serving(), 1);
}

#[tokio::test(start_paused = true)]
async fn three_crashes_make_a_replica_crash_looping() {
    let h = Harness::new();
    h.deployer.start().await.expect("start");
    assert!(h.deploy(GOOD, 1, "rolling").await);
    let started = tokio::time::Instant::now();
    for crash in 1..=3u32 {
        let id = h.replicas()[0].container_id.clone();
        h.runtime.crash(&id, 1);
        let deployer = h.deployer.clone();
        wait_for("the restart", || {
            let r = deployer.status(Some("web")).pop()?.replicas.pop()?;
            (r.container_id != id && r.restarts == crash && h.serving() == 1).then_some(())
        })
        .await;
    }
    // Backoffs of 2, 4 and 8 s.
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    let r = &h.replicas()[0];
    assert_eq!(r.state, Wire::CrashLooping, "{r:?}");
    assert_eq!(r.restarts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_app_is_not_restarted_when_a_task_exits() {
    let h = Harness::new();
    h.deployer.start().await.expect("start");
    assert!(h.deploy(GOOD, 1, "rolling").await);
    assert!(h.stop().await);
    let (starts, _) = h.runtime.counts();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.runtime.counts().0, starts, "nothing was started again");
}

struct RecoveryCase {
    name: &'static str,
    /// What happens while haloyd is away.
    crash_one: bool,
    stopped: bool,
    /// Replica states after the new haloyd started and settled.
    states: &'static [Wire],
    serving: usize,
}

const RECOVERIES: &[RecoveryCase] = &[
    RecoveryCase {
        name: "running replicas go straight back into rotation",
        crash_one: false,
        stopped: false,
        states: &[Wire::Ready, Wire::Ready],
        serving: 2,
    },
    RecoveryCase {
        name: "a replica that died meanwhile is restarted",
        crash_one: true,
        stopped: false,
        states: &[Wire::Ready, Wire::Ready],
        serving: 2,
    },
    RecoveryCase {
        name: "a stopped app stays stopped",
        crash_one: false,
        stopped: true,
        states: &[Wire::Stopped, Wire::Stopped],
        serving: 0,
    },
];

#[tokio::test(start_paused = true)]
async fn recovery_after_a_haloyd_restart() {
    for case in RECOVERIES {
        let h = Harness::new();
        assert!(h.deploy(GOOD, 2, "rolling").await, "{}", case.name);
        if case.stopped {
            assert!(h.stop().await, "{}", case.name);
        }
        let before: Vec<String> = h.replicas().into_iter().map(|r| r.container_id).collect();
        if case.crash_one {
            h.runtime.crash(&before[0], 137);
        }
        let next = Harness::deployer_on(&h.runtime, h.dir.path());
        next.start().await.expect("recovery");
        let serving = |d: &Deployer| {
            d.routes
                .app("web")
                .map_or(0, |r| r.backends.iter().filter(|b| b.is_ready()).count())
        };
        let settled = next.clone();
        wait_for(case.name, || {
            let replicas = settled.status(Some("web")).pop()?.replicas;
            let states: Vec<Wire> = replicas.iter().map(|r| r.state).collect();
            (states == case.states && serving(&settled) == case.serving).then_some(())
        })
        .await;
        let after: Vec<String> = next
            .status(Some("web"))
            .pop()
            .map(|s| s.replicas.into_iter().map(|r| r.container_id).collect())
            .unwrap_or_default();
        let kept = after.iter().filter(|id| before.contains(id)).count();
        let expected_kept = if case.crash_one { 1 } else { 2 };
        assert_eq!(kept, expected_kept, "{}: containers kept", case.name);
    }
}
