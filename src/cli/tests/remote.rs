//! Unit tests of `cli::remote`.

use super::{human_duration, per_server_in_order};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;

#[test]
fn durations_read_well() {
    assert_eq!(human_duration(45), "45s");
    assert_eq!(human_duration(192), "3m12s");
    assert_eq!(human_duration(7500), "2h5m");
    assert_eq!(human_duration(90000), "1d1h");
}

/// (server, target) pairs as a deploy sees them.
fn targets(list: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    list.to_vec()
}

#[tokio::test]
async fn targets_of_one_server_deploy_one_after_another_in_order() {
    let items = targets(&[("a", "web"), ("a", "api"), ("a", "worker")]);
    let running = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let order = Mutex::new(Vec::new());
    let results = per_server_in_order(
        &items,
        |(server, _)| server.to_string(),
        |(_, name)| {
            let (running, most, order) = (&running, &most, &order);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Give another deploy of the same server every chance to start meanwhile.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                order.lock().unwrap().push(*name);
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(*name)
            }
        },
        |_| "skipped".to_string(),
    )
    .await;
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "one deploy at a time per server"
    );
    assert_eq!(*order.lock().unwrap(), ["web", "api", "worker"]);
    assert_eq!(results, [Ok("web"), Ok("api"), Ok("worker")]);
}

#[tokio::test]
async fn servers_deploy_in_parallel() {
    // Each server's first deploy waits for the other's: only parallel servers get through.
    let items = targets(&[("a", "web"), ("b", "web"), ("a", "api")]);
    let barrier = Arc::new(Barrier::new(2));
    let run = per_server_in_order(
        &items,
        |(server, _)| server.to_string(),
        |(server, name)| {
            let barrier = Arc::clone(&barrier);
            async move {
                if *name == "web" {
                    barrier.wait().await;
                }
                Ok::<_, String>(format!("{server}/{name}"))
            }
        },
        |_| "skipped".to_string(),
    );
    // A hang guard, not a timing assertion: sequential servers would wait forever.
    let results = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("servers a and b deployed in parallel");
    let ok: Vec<String> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(ok, ["a/web", "b/web", "a/api"], "results in target order");
}

#[tokio::test]
async fn a_failure_skips_the_rest_of_that_server_only() {
    let items = targets(&[("a", "web"), ("b", "web"), ("a", "api"), ("b", "api")]);
    let ran = Mutex::new(Vec::new());
    let results = per_server_in_order(
        &items,
        |(server, _)| server.to_string(),
        |(server, name)| {
            let ran = &ran;
            async move {
                ran.lock().unwrap().push(format!("{server}/{name}"));
                if *server == "a" && *name == "web" {
                    Err("web failed".to_string())
                } else {
                    Ok(())
                }
            }
        },
        |(server, name)| format!("{server}/{name} skipped"),
    )
    .await;
    assert_eq!(
        results,
        [
            Err("web failed".to_string()),
            Ok(()),
            Err("a/api skipped".to_string()),
            Ok(())
        ]
    );
    assert!(!ran.lock().unwrap().contains(&"a/api".to_string()));
}
