//! Readiness gate and monitor against real HTTP servers on 127.0.0.1.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use haloy::health::{self, Monitor, MonitorSettings, ReadinessError, ReadinessPolicy};
use haloy::proxy::Backend;

/// A health endpoint answering `status`, counting requests.
struct HealthServer {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    checks: Arc<AtomicUsize>,
}

async fn health_server(status: u16) -> HealthServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = Arc::new(AtomicU16::new(status));
    let checks = Arc::new(AtomicUsize::new(0));
    let (s, c) = (Arc::clone(&st), Arc::clone(&checks));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (s, c) = (Arc::clone(&s), Arc::clone(&c));
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        c.fetch_add(1, Ordering::SeqCst);
                        let code = s.load(Ordering::SeqCst);
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"x")));
                            *resp.status_mut() = code.try_into().unwrap();
                            if code / 100 == 3 {
                                resp.headers_mut()
                                    .insert("location", "http://127.0.0.2:1/".parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    HealthServer {
        addr,
        status: st,
        checks,
    }
}

fn policy(deadline_ms: u64, min_ready_ms: u64) -> ReadinessPolicy {
    ReadinessPolicy {
        attempt_timeout: Duration::from_secs(1),
        deadline: Duration::from_millis(deadline_ms),
        min_ready: Duration::from_millis(min_ready_ms),
        started_at: Instant::now(),
    }
}

#[tokio::test]
async fn ready_after_min_ready_with_a_second_check() {
    let s = health_server(200).await;
    let started = Instant::now();
    health::wait_ready(s.addr, "/up", policy(10_000, 1200), &|| true)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1200));
    assert_eq!(
        s.checks.load(Ordering::SeqCst),
        2,
        "expected the first check plus the re-check"
    );
}

#[tokio::test]
async fn redirect_counts_as_healthy_and_is_not_followed() {
    let s = health_server(302).await;
    health::wait_ready(s.addr, "/up", policy(5_000, 0), &|| true)
        .await
        .unwrap();
    assert_eq!(s.checks.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn becomes_ready_after_failures_with_backoff() {
    let s = health_server(503).await;
    let status = Arc::clone(&s.status);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        status.store(204, Ordering::SeqCst);
    });
    health::wait_ready(s.addr, "/up", policy(10_000, 0), &|| true)
        .await
        .unwrap();
    // 0, 0.1, 0.3, 0.7, 1.5 s: the backoff doubles instead of hammering every 100 ms.
    let checks = s.checks.load(Ordering::SeqCst);
    assert!((4..=6).contains(&checks), "{checks} checks");
}

#[tokio::test]
async fn deadline_error_says_what_the_last_check_saw() {
    let s = health_server(500).await;
    let err = health::wait_ready(s.addr, "/up", policy(1_200, 0), &|| true)
        .await
        .unwrap_err();
    match &err {
        ReadinessError::Deadline { last, .. } => assert!(last.contains("500"), "{err}"),
        other => panic!("unexpected {other:?}"),
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = health::wait_ready(closed, "/up", policy(600, 0), &|| true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test]
async fn task_exit_during_min_ready_fails_fast() {
    let s = health_server(200).await;
    let alive = Arc::new(AtomicBool::new(true));
    let a = Arc::clone(&alive);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.store(false, Ordering::SeqCst);
    });
    let started = Instant::now();
    let err = health::wait_ready(s.addr, "/up", policy(30_000, 20_000), &|| {
        alive.load(Ordering::SeqCst)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, ReadinessError::Exited { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn flapping_after_window_is_reported() {
    let s = health_server(200).await;
    let status = Arc::clone(&s.status);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        status.store(500, Ordering::SeqCst);
    });
    let err = health::wait_ready(s.addr, "/up", policy(10_000, 800), &|| true)
        .await
        .unwrap_err();
    assert!(matches!(err, ReadinessError::Flapped { .. }), "{err}");
}

#[tokio::test]
async fn monitor_flips_readiness_with_fall_and_rise() {
    let s = health_server(200).await;
    let backend = Backend::new("task0".into(), 0, s.addr);
    backend.set_ready(true);
    let settings = MonitorSettings {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        fall: 3,
        rise: 2,
    };
    let handle = Monitor::spawn(Arc::clone(&backend), "/up", settings);
    s.status.store(500, Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(5);
    while backend.is_ready() {
        assert!(Instant::now() < end, "never taken out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.last_result().unwrap().failures >= 3);
    s.status.store(200, Ordering::SeqCst);
    while !backend.is_ready() {
        assert!(Instant::now() < end, "never re-admitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.last_result().unwrap().successes >= 2);
    // mark_down (task exit / refused) needs `rise` fresh successes to come back.
    backend.mark_down();
    assert!(!backend.is_ready());
    while !backend.is_ready() {
        assert!(Instant::now() < end, "never re-admitted after mark_down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.last_result().unwrap().successes >= 2);
    drop(handle);
}
