//! haloyd's Prometheus endpoint against a real Prometheus (Debian's `prometheus`): a real
//! haloyd (private containerd, registry with the busybox fixtures) with `metrics.listen` on
//! loopback deploys a two-replica app, the test sends requests through the proxy, and a
//! private Prometheus scraping haloyd answers a PromQL query with exactly that count.

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
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET /?ignored=query HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
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
