//! Unit tests of `proxy::backend`.

use super::*;

fn backend() -> Arc<Backend> {
    Backend::new("c1".into(), 0, "127.0.0.1:1".parse().unwrap())
}

#[test]
fn readiness_flag_and_mark_down() {
    let b = backend();
    assert!(!b.is_ready());
    b.set_ready(true);
    assert!(b.is_ready());
    b.mark_down();
    assert!(!b.is_ready());
}

#[test]
fn percentiles_come_from_buckets() {
    let b = backend();
    for _ in 0..99 {
        b.record_response(Duration::from_micros(800));
    }
    b.record_response(Duration::from_millis(300));
    let s = b.stats();
    assert_eq!(s.requests, 100);
    assert_eq!(s.latency_p50_ms, 1.0);
    assert_eq!(s.latency_p99_ms, 1.0);
}

#[tokio::test]
async fn drain_waits_for_in_flight_then_refuses_ready() {
    let b = backend();
    b.set_ready(true);
    let guard = b.start_request();
    let drain = tokio::spawn(b.drain(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!drain.is_finished());
    drop(guard);
    assert_eq!(drain.await.unwrap(), DrainOutcome::Drained);
    b.set_ready(true);
    assert!(!b.is_ready());
    assert!(b.tunnels_closed().is_cancelled());
}

#[tokio::test]
async fn drain_times_out() {
    let b = backend();
    let _guard = b.start_request();
    let out = b.drain(Duration::from_millis(20)).await;
    assert_eq!(out, DrainOutcome::TimedOut { in_flight: 1 });
}
