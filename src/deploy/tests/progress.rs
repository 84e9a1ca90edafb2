//! Unit tests of `deploy::progress`.

use super::*;
use futures_util::StreamExt;

fn kinds(events: &[DeployEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn watchers_early_and_late_get_every_event_and_a_finished_job_frees_its_channel() {
    let hub = Arc::new(ProgressHub::default());
    let reporter = hub.start("d1", "web");
    reporter.step(Some(0), "pull", "pulling");
    let early = hub.subscribe("d1").unwrap();
    reporter.log(None, "a line");
    reporter.finished(true, "done");

    let early: Vec<DeployEvent> = early.collect().await;
    assert_eq!(
        kinds(&early),
        [EventKind::Step, EventKind::Log, EventKind::Finished]
    );
    let late: Vec<DeployEvent> = hub.subscribe("d1").unwrap().collect().await;
    assert_eq!(kinds(&late), kinds(&early));
    assert!(
        hub.lock().deployments["d1"].sender.is_none(),
        "a finished job keeps its broadcast channel"
    );
}

#[test]
fn only_the_newest_finished_jobs_are_kept() {
    let hub = Arc::new(ProgressHub::default());
    for n in 0..KEEP_FINISHED + 5 {
        hub.start(&format!("d{n}"), "web").finished(true, "done");
    }
    let running = hub.start("live", "web");
    let hub_state = hub.lock();
    assert_eq!(hub_state.deployments.len(), KEEP_FINISHED + 1);
    assert!(!hub_state.deployments.contains_key("d0"));
    assert!(hub_state.deployments["live"].sender.is_some());
    drop(hub_state);
    drop(running);
}
