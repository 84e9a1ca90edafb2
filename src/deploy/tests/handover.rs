use super::*;
use crate::runtime::fake::FakeRuntime;

fn deployer(dir: &std::path::Path) -> Arc<Deployer> {
    let runtime: Arc<dyn Runtime> = Arc::new(FakeRuntime::new());
    let settings = DeploySettings {
        deploy_timeout: Duration::from_secs(5),
        health_attempt_timeout: Duration::from_secs(1),
        monitor: MonitorSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
        },
        drain_timeout: Duration::from_secs(1),
        volumes_dir: dir.join("volumes"),
        host_paths: Default::default(),
        init_binary: crate::runtime::DEFAULT_INIT_BINARY.into(),
    };
    let state = StateStore::open(dir).expect("state store");
    Deployer::new(runtime, Routes::new(), state, settings)
}

#[tokio::test]
async fn a_pause_refuses_stops_and_its_resume_lets_them_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deployer = deployer(dir.path());
    deployer.entry("web");
    let pause = deployer
        .pause_for_handover(Duration::from_secs(1))
        .await
        .expect("nothing running");
    let refused = deployer.stop("web", false, false);
    assert!(
        matches!(refused, Err(DeployError::HandingOver)),
        "{refused:?}"
    );
    pause.resume();
    deployer
        .stop("web", false, false)
        .expect("stop after the resume");
}

#[tokio::test]
async fn a_pause_waits_for_a_running_operation_and_gives_up_at_its_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deployer = deployer(dir.path());
    let entry = deployer.entry("web");
    let held = entry.lock.clone().lock_owned().await;
    let err = deployer
        .pause_for_handover(Duration::from_millis(100))
        .await
        .err()
        .expect("the app is busy");
    assert!(
        matches!(err, DeployError::HandoverBusy { ref app, .. } if app == "web"),
        "{err}"
    );
    assert!(
        !deployer.is_paused(),
        "a failed pause must not leave haloyd paused"
    );
    // Released in time: the pause gets it.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
    });
    let pause = deployer
        .pause_for_handover(Duration::from_secs(2))
        .await
        .expect("lock released within the wait");
    release.await.expect("release task");
    assert!(deployer.is_paused());
    drop(pause);
}
