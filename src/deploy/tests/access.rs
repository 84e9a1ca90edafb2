use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::proxy::Backend;
use crate::runtime::{ImageInfo, ReplicaSpec};

fn replica(index: u32, ip: &str, phase: Phase) -> Arc<LiveReplica> {
    let spec = ReplicaSpec {
        app: "db".into(),
        deployment_id: "d1".into(),
        replica: index,
        image: ImageInfo {
            name: "example.test/db:1".into(),
            digest: String::new(),
            config: Default::default(),
            chain_id: String::new(),
        },
        env: vec![],
        port: 5432,
        health_check_path: "/".into(),
        domains: vec![],
        labels: Default::default(),
        volumes: vec![],
        resources: Default::default(),
        seccomp: Default::default(),
        stop_timeout: Duration::from_secs(1),
        init: false,
    };
    let addr = format!("{ip}:5432").parse().unwrap();
    let id = format!("db-d1-{index}");
    let live = LiveReplica::new(
        id.clone(),
        spec,
        Duration::ZERO,
        Backend::new(id, index, addr),
        0,
    );
    live.set_phase(phase);
    live
}

#[test]
fn the_first_running_replica_is_the_default() {
    let replicas = [
        replica(1, "10.0.0.3", Phase::Ready),
        replica(0, "10.0.0.2", Phase::Exited),
        replica(2, "10.0.0.4", Phase::WaitingHealth),
    ];
    let target = choose("db", &replicas, None).unwrap();
    assert_eq!(target.replica, 1);
    assert_eq!(target.container_id, "db-d1-1");
    assert_eq!(target.ip.to_string(), "10.0.0.3");
}

#[test]
fn a_replica_index_picks_that_replica_or_names_the_running_ones() {
    let replicas = [
        replica(0, "10.0.0.2", Phase::Ready),
        replica(1, "10.0.0.3", Phase::Ready),
        replica(2, "10.0.0.4", Phase::Stopped),
    ];
    assert_eq!(
        choose("db", &replicas, Some(1)).unwrap().ip.to_string(),
        "10.0.0.3"
    );
    let err = choose("db", &replicas, Some(2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "app `db` has no running replica 2; running: 0, 1"
    );
    let err = choose("db", &replicas, Some(7)).unwrap_err();
    assert!(matches!(err, AccessError::NoSuchReplica { replica: 7, .. }));
}

#[test]
fn no_running_replica_is_its_own_error() {
    let replicas = [replica(0, "10.0.0.2", Phase::Stopped)];
    assert_eq!(
        choose("db", &replicas, None).unwrap_err(),
        AccessError::NoRunningReplica("db".into())
    );
}
