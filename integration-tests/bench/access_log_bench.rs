//! Cost of one access log line: haloy's batched writer (`AccessLog::record`, file sink)
//! against the way the proxy logged before, a `tracing` event formatted by tracing-subscriber's
//! fmt layer into a file, measured in the same run on the same machine. Prints ns per line
//! and the ratio.
//!
//!     cargo run --release --example access-log-bench [-- LINES]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haloy::access_log::{AccessLog, AccessLogTarget, Entry};

fn main() {
    let lines: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream: SocketAddr = "10.89.0.5:8080".parse().expect("address");

    let log = AccessLog::start(AccessLogTarget::File {
        path: dir.path().join("access.log"),
        max_size: 1 << 40,
        max_files: 1,
    })
    .expect("access log");
    let started = Instant::now();
    for i in 0..lines {
        log.record(&Entry {
            app: Some("web"),
            host: Some("example.com"),
            method: "GET",
            path: "/api/items",
            status: 200,
            duration: Duration::from_micros(u64::from(i % 5000)),
            upstream: Some(upstream),
            bytes: Some(512),
        });
    }
    let batched = started.elapsed();
    log.close();
    let with_flush = started.elapsed();

    let file = std::fs::File::create(dir.path().join("tracing.log")).expect("log file");
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::sync::Mutex::new(file))
        .finish();
    let traced = tracing::subscriber::with_default(subscriber, || {
        let started = Instant::now();
        for i in 0..lines {
            tracing::info!(
                target: "haloy::access",
                host = "example.com",
                method = %http::Method::GET,
                path = "/api/items",
                status = 200u16,
                backend = %upstream.to_string(),
                duration_ms = f64::from(i % 5000) / 1000.0,
                "request"
            );
        }
        started.elapsed()
    });

    let per = |d: Duration| d.as_nanos() as f64 / f64::from(lines);
    println!("lines: {lines}");
    println!(
        "haloy access_log (batched writer): {:.0} ns/line",
        per(batched)
    );
    println!(
        "  (until the writer thread flushed the last batch: {:.0} ns/line)",
        per(with_flush)
    );
    println!(
        "tracing fmt event to a file (before): {:.0} ns/line",
        per(traced)
    );
    println!("ratio before/after: {:.1}x", per(traced) / per(batched));
}
