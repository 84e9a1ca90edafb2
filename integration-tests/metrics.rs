//! haloyd's Prometheus endpoint against a real Prometheus (Debian's `prometheus`): a real
//! haloyd (private containerd, registry with the busybox fixtures) with `metrics.listen` on
//! loopback deploys a two-replica app, the test sends requests through the proxy, and a
//! private Prometheus scraping haloyd answers a PromQL query with exactly that count.
//! The access log: written to a file by haloyd's batch writer, and followed live with
//! `haloy server logs --access-logs --app A` (haloyd's own log with `haloy server logs`).

// Tests start real containerd, registries, Prometheus and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::haloyd::{Haloyd, HaloydOptions};
use harness::prometheus::{http_get, Prometheus};
use harness::{free_port, Containerd, Registry};

const APP: &str = "metered";
const HOST: &str = "metered.test";
/// Requests the test sends through the proxy.
const REQUESTS: usize = 25;
/// How long Prometheus gets to scrape what the test did (it scrapes every second).
const SCRAPE_WAIT: Duration = Duration::from_secs(60);

/// GET `/` on the proxy at `addr` with `Host: HOST`; the status.
fn proxy_get(addr: &str) -> Option<u16> {
    get_with_host(addr, HOST, "/?ignored=query")
}

/// GET `target` on the proxy at `addr` with `Host: host`; the status.
fn get_with_host(addr: &str, host: &str, target: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The value of the sample line starting with `series` in the OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_request_count_the_test_generated() {
    let containerd = Containerd::start().await;
    let registry = Registry::start().await;
    registry.push_fixtures().await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let options = HaloydOptions {
        insecure_registries: vec![registry.addr().to_string()],
        extra_config: vec![format!("metrics: {{listen: {metrics_addr}}}")],
        ..HaloydOptions::default()
    };
    let haloyd = Haloyd::start(&containerd, options).await;
    let body = format!(
        "name: {APP}\nimage: {}\nport: 8080\nreplicas: 2\nhealth_check_path: /health\ndomains:\n  - domain: {HOST}\n",
        registry.fixture_ref("web", "v1")
    );
    let config = haloyd.write_app_config(APP, &body);
    let run = haloyd.cli(&config, &["deploy"]);
    assert!(
        run.output.status.success(),
        "deploy failed:\n{}\n--- haloyd log\n{}",
        run.both(),
        haloyd.log_tail(30)
    );

    let http = haloyd.http_addr();
    let statuses = tokio::task::spawn_blocking(move || {
        (0..REQUESTS).map(|_| proxy_get(&http)).collect::<Vec<_>>()
    })
    .await
    .expect("requests");
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "not every request was answered 200: {statuses:?}"
    );

    // The endpoint itself: OpenMetrics text with the count, per replica, no path labels.
    let scraped = http_get(&metrics_addr, "/metrics");
    let Some((200, text)) = scraped else {
        panic!(
            "GET /metrics on {metrics_addr}: {scraped:?}\n{}",
            haloyd.log_tail(30)
        );
    };
    let per_replica: f64 = (0..2)
        .filter_map(|r| {
            sample(
                &text,
                &format!(r#"haloy_requests_total{{app="{APP}",replica="{r}",class="2xx"}}"#),
            )
        })
        .sum();
    assert_eq!(per_replica, REQUESTS as f64, "{text}");
    assert!(
        !text.contains("ignored=query"),
        "a path reached a label:\n{text}"
    );
    let ready = |r: u32| {
        sample(
            &text,
            &format!(r#"haloy_replica_ready{{app="{APP}",replica="{r}"}}"#),
        )
    };
    assert_eq!((ready(0), ready(1)), (Some(1.0), Some(1.0)), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"haloy_deploys_total{{app="{APP}",outcome="succeeded"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "haloy_proxy_connections_accepted_total").unwrap_or(0.0) >= REQUESTS as f64,
        "{text}"
    );
    assert_eq!(http_get(&metrics_addr, "/other").map(|(s, _)| s), Some(404));

    // A real Prometheus scrapes it and answers PromQL with the count the test generated.
    let prometheus = Prometheus::start(std::slice::from_ref(&metrics_addr));
    let query = format!(r#"sum(haloy_requests_total{{app="{APP}",class="2xx"}})"#);
    let deadline = Instant::now() + SCRAPE_WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = prometheus.query_scalar(&query);
        if last == Some(REQUESTS as f64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        last,
        Some(REQUESTS as f64),
        "PromQL `{query}` did not return {REQUESTS}\n--- targets\n{}\n--- prometheus log\n{}",
        prometheus.targets(),
        prometheus.log()
    );
    let latency = format!(r#"sum(haloy_response_first_byte_seconds_count{{app="{APP}"}})"#);
    assert_eq!(prometheus.query_scalar(&latency), Some(REQUESTS as f64));
}

/// Polls `check` every 200 ms, doing `poke` before each try, until it holds or `wait` passed.
async fn eventually(
    wait: Duration,
    mut poke: impl FnMut(),
    mut check: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        poke();
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_goes_to_its_file_and_streams_with_server_logs() {
    const LOGGED: &str = "logged";
    const LOGGED_HOST: &str = "logged.test";
    let containerd = Containerd::start().await;
    let registry = Registry::start().await;
    registry.push_fixtures().await;
    let log_dir = tempfile::tempdir().expect("access log dir");
    let access_file = log_dir.path().join("access.log");
    let options = HaloydOptions {
        insecure_registries: vec![registry.addr().to_string()],
        extra_config: vec![format!(
            "access_log: {{to: file, file: {}}}",
            access_file.display()
        )],
        ..HaloydOptions::default()
    };
    let haloyd = Haloyd::start(&containerd, options).await;
    let body = format!(
        "name: {LOGGED}\nimage: {}\nport: 8080\nhealth_check_path: /health\ndomains:\n  - domain: {LOGGED_HOST}\n",
        registry.fixture_ref("web", "v1")
    );
    let config = haloyd.write_app_config(LOGGED, &body);
    haloyd.cli(&config, &["deploy"]).assert_ok();

    let version = haloyd.cli(&config, &["server", "version"]);
    version.assert_ok();
    assert!(
        version
            .stdout()
            .contains(&format!("haloyd {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        version.both()
    );

    let mut access = haloyd.spawn_cli(
        &config,
        &["server", "logs", "--access-logs", "--app", LOGGED],
        "access",
    );
    let mut daemon = haloyd.spawn_cli(&config, &["server", "logs"], "daemon");
    let http = haloyd.http_addr();
    let followed = eventually(
        Duration::from_secs(30),
        || {
            // A follower sees lines from when its stream opened: keep sending until it does.
            assert_eq!(
                get_with_host(&http, LOGGED_HOST, "/version.txt?secret=s3"),
                Some(200)
            );
            assert_eq!(get_with_host(&http, "nobody.test", "/elsewhere"), Some(404));
        },
        || haloyd.cli_output("access").contains("path=/version.txt"),
    )
    .await;
    let streamed = haloyd.cli_output("access");
    assert!(
        followed,
        "no access line streamed:\n{streamed}\n{}",
        haloyd.log_tail(20)
    );
    let line = streamed
        .lines()
        .find(|l| l.contains("path=/version.txt"))
        .unwrap_or_default();
    for field in [
        format!("app={LOGGED} "),
        format!("host={LOGGED_HOST} "),
        "method=GET ".to_string(),
        "status=200 ".to_string(),
        "duration_ms=".to_string(),
        "upstream=".to_string(),
        "bytes=".to_string(),
    ] {
        assert!(line.contains(&field), "no `{field}` in `{line}`");
    }
    let bytes: u64 = line
        .split_once(" bytes=")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(bytes > 0, "no body bytes counted in `{line}`");
    assert!(
        !streamed.contains("secret"),
        "a query reached the log:\n{streamed}"
    );
    assert!(
        !streamed.contains("nobody.test"),
        "--app let another host's line through:\n{streamed}"
    );

    let daemon_followed = eventually(
        Duration::from_secs(30),
        || {
            let _ = haloyd.cli(&config, &["status"]);
        },
        || haloyd.cli_output("daemon").contains("api request"),
    )
    .await;
    assert!(
        daemon_followed,
        "haloyd's own log did not stream:\n{}",
        haloyd.cli_output("daemon")
    );
    harness::stop_child(&mut access, Duration::from_secs(2));
    harness::stop_child(&mut daemon, Duration::from_secs(2));

    let written = eventually(
        Duration::from_secs(10),
        || {},
        || {
            std::fs::read_to_string(&access_file)
                .is_ok_and(|t| t.contains("path=/version.txt") && t.contains("host=nobody.test"))
        },
    )
    .await;
    let file = std::fs::read_to_string(&access_file).unwrap_or_default();
    assert!(
        written,
        "access log file {}:\n{file}",
        access_file.display()
    );
    assert!(
        !file.contains("secret"),
        "a query reached the file:\n{file}"
    );
    assert!(
        file.lines().any(|l| l.contains("host=nobody.test")
            && l.contains(" app=- ")
            && l.contains("status=404")),
        "{file}"
    );
}
