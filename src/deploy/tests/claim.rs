use super::*;

fn entry() -> AppEntry {
    AppEntry {
        name: "web".to_string(),
        lock: Arc::new(tokio::sync::Mutex::new(())),
        live: Mutex::new(LiveApp::default()),
    }
}

fn busy_holder(result: Result<tokio::sync::OwnedMutexGuard<()>, DeployError>) -> String {
    match result {
        Err(DeployError::Busy { deployment_id, .. }) => deployment_id,
        Err(other) => panic!("expected Busy, got {other}"),
        Ok(_) => panic!("expected Busy, got the lock"),
    }
}

#[test]
fn a_refused_deploy_names_the_one_holding_the_app() {
    let entry = entry();
    let first = entry.claim_for_deploy("01FIRST").expect("free app");
    assert_eq!(busy_holder(entry.claim_for_deploy("02SECOND")), "01FIRST");
    entry.release_deploy(first);
    let third = entry.claim_for_deploy("03THIRD").expect("released app");
    assert_eq!(entry.live_lock().in_progress.as_deref(), Some("03THIRD"));
    entry.release_deploy(third);
    assert_eq!(entry.live_lock().in_progress, None);
}

#[test]
fn racing_deploys_always_see_the_holders_id() {
    let entry = Arc::new(entry());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let entry = entry.clone();
            std::thread::spawn(move || {
                for round in 0..2_000 {
                    let id = format!("{t}-{round}");
                    match entry.claim_for_deploy(&id) {
                        Ok(guard) => entry.release_deploy(guard),
                        Err(DeployError::Busy { deployment_id, .. }) => {
                            assert!(!deployment_id.is_empty(), "busy without a holder")
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("claim thread");
    }
}

#[test]
fn a_stop_holding_the_app_is_named_as_such() {
    let entry = entry();
    let _stop = entry.lock.clone().try_lock_owned().expect("free app");
    let refused = entry.claim_for_deploy("01DEPLOY").expect_err("busy");
    assert_eq!(
        refused.to_string(),
        "`web` is being stopped or deployed right now; wait for it to finish"
    );
}
