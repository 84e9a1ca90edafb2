//! The deployer as the DNS `Directory`, against `FakeRuntime`: names follow deploys, networks
//! and stops with nothing but the route table and the live configs.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::*;
use crate::dns::Directory;
use crate::runtime::fake::FakeRuntime;
use crate::state::OperationState;

const IMAGE: &str = "example.test/web:good";

fn settings(dir: &std::path::Path) -> DeploySettings {
    DeploySettings {
        deploy_timeout: Duration::from_secs(5),
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

fn app(name: &str, replicas: u32, extra: &str) -> ResolvedApp {
    let yaml = format!("name: {name}\nimage: {IMAGE}\nreplicas: {replicas}\nport: 47614\n{extra}");
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

/// Waits until job `id` of `app` ended; true when it succeeded.
async fn finished(deployer: &Deployer, app: &str, id: &str) -> bool {
    let started = Instant::now();
    loop {
        if let Ok(Some(op)) = deployer.state.last_operation(app) {
            if op.id == id && op.state != OperationState::Running {
                let entry = deployer.entry(app);
                while entry.lock.try_lock().is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return op.state == OperationState::Succeeded;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "job {id} of {app} did not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deploy(deployer: &Arc<Deployer>, app: ResolvedApp) {
    let name = app.name.clone();
    let id = deployer.deploy(app, None).await.expect("deploy accepted");
    assert!(finished(deployer, &name, &id).await, "deploy of {name}");
}

fn replica_ips(deployer: &Deployer, app: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = deployer
        .status(Some(app))
        .pop()
        .map(|s| s.replicas)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.ip.as_deref()?.parse().ok())
        .collect();
    ips.sort();
    ips
}

fn sorted(ips: Option<Vec<IpAddr>>) -> Option<Vec<IpAddr>> {
    ips.map(|mut v| {
        v.sort();
        v
    })
}

#[tokio::test]
async fn names_follow_deploys_networks_and_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = Arc::new(FakeRuntime::new());
    let state = StateStore::open(dir.path()).expect("state store");
    let deployer = Deployer::new(runtime, Routes::new(), state, settings(dir.path()));

    deploy(&deployer, app("db", 2, "")).await;
    deploy(&deployer, app("ledger", 1, "network: billing\n")).await;
    let db = replica_ips(&deployer, "db");
    let ledger = replica_ips(&deployer, "ledger");
    assert_eq!(db.len(), 2);

    assert_eq!(sorted(deployer.addresses("db", "haloy")), Some(db.clone()));
    assert_eq!(deployer.addresses("db", "billing"), None);
    assert_eq!(
        deployer.addresses("ledger", "billing"),
        Some(ledger.clone())
    );
    assert_eq!(deployer.addresses("ledger", "haloy"), None);
    assert_eq!(deployer.addresses("nope", "haloy"), None);
    assert_eq!(deployer.network_of(db[0]).as_deref(), Some("haloy"));
    assert_eq!(deployer.network_of(ledger[0]).as_deref(), Some("billing"));
    assert_eq!(deployer.network_of(IpAddr::from([192, 0, 2, 1])), None);

    // A replica its health monitor took out of rotation is no longer an answer.
    let route = deployer.routes.app("db").expect("db is routed");
    // (Its monitor may flip it back between the two calls: then the answer is not judged.)
    let left: Vec<IpAddr> = route.backends[1..].iter().map(|b| b.addr().ip()).collect();
    loop {
        route.backends[0].set_ready(false);
        let answer = deployer.addresses("db", "haloy");
        if !route.backends[0].is_ready() {
            assert_eq!(answer, Some(left));
            break;
        }
    }
    route.backends[0].set_ready(true);

    // A redeploy moves the name to the new replicas only.
    deploy(
        &deployer,
        app("db", 2, "env:\n  - name: V\n    value: \"2\"\n"),
    )
    .await;
    let redeployed = replica_ips(&deployer, "db");
    assert_eq!(sorted(deployer.addresses("db", "haloy")), Some(redeployed));

    // A stopped app is known, with no address (NXDOMAIN, not forwarded).
    let id = deployer.stop("db", false, false).expect("stop accepted");
    assert!(finished(&deployer, "db", &id).await, "stop of db");
    assert_eq!(deployer.addresses("db", "haloy"), Some(Vec::new()));
}
