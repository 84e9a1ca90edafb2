//! Cost of one access log line: haloy's batched writer (`AccessLog::record`, file sink)
//! against the way the proxy logged before, a `tracing` event formatted by tracing-subscriber's
//! fmt layer into a file, measured in the same run on the same machine. Prints ns per line
//! and the ratio; also the same lines as JSON (`logs.format: json`) against the text lines.
//!
//!     cargo run --release --example access-log-bench [-- LINES]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haloy::access_log::{AccessLog, AccessLogTarget, Entry, LogFormat};

fn main() {
    let lines: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream: SocketAddr = "10.89.0.5:8080".parse().expect("address");

    let (batched, with_flush) = record_lines(dir.path(), LogFormat::Text, lines, upstream);
    let (json_batched, json_with_flush) =
        record_lines(dir.path(), LogFormat::Json, lines, upstream);

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
        "haloy access_log, logs.format json: {:.0} ns/line ({:.0} with the flush), json/text {:.2}x",
        per(json_batched),
        per(json_with_flush),
        per(json_batched) / per(batched)
    );
    println!(
        "tracing fmt event to a file (before): {:.0} ns/line",
        per(traced)
    );
    println!("ratio before/after: {:.1}x", per(traced) / per(batched));
}

/// Records `lines` lines in `format` to a file under `dir`: the time spent in `record` and the
/// time until the writer thread flushed the last batch.
fn record_lines(
    dir: &std::path::Path,
    format: LogFormat,
    lines: u32,
    upstream: SocketAddr,
) -> (Duration, Duration) {
    let log = AccessLog::start(
        AccessLogTarget::File {
            path: dir.join(format!("access-{format:?}.log")),
            max_size: 1 << 40,
            max_files: 1,
        },
        format,
    )
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
    let recorded = started.elapsed();
    log.close();
    (recorded, started.elapsed())
}
