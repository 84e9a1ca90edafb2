use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::process::status_field;
use super::*;
use crate::proxy::{AppRoute, Backend, DomainRoute, Routes};

#[derive(Debug)]
struct OneCertificate;

impl CertificateSource for OneCertificate {
    fn certificate_gauges(&self) -> Vec<CertificateGauge> {
        vec![CertificateGauge {
            domain: "example.com".into(),
            expires: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            failures: 2,
        }]
    }
}

fn routed(metrics: &Metrics) -> (Routes, Arc<Backend>) {
    let routes = Routes::new();
    let backend = Backend::new_metered(
        "task".into(),
        1,
        "10.0.0.5:8080".parse().unwrap(),
        metrics.replica("web", 1),
    );
    backend.set_ready(true);
    routes
        .set_app(AppRoute {
            app: "web".into(),
            domains: vec![DomainRoute {
                canonical: "example.com".into(),
                aliases: vec![],
            }],
            backends: vec![Arc::clone(&backend)],
        })
        .unwrap();
    (routes, backend)
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with `{prefix}` in:\n{text}"))
}

#[test]
fn replica_counters_are_shared_by_every_backend_of_the_same_replica() {
    let metrics = Metrics::new();
    let first = metrics.replica("web", 0);
    let again = metrics.replica("web", 0);
    assert!(Arc::ptr_eq(&first, &again));
    assert!(!Arc::ptr_eq(&first, &metrics.replica("web", 1)));
    assert!(!Arc::ptr_eq(&first, &metrics.replica("api", 0)));
}

#[test]
fn exporter_renders_requests_by_class_readiness_deploys_certificates_and_process() {
    let metrics = Metrics::new();
    let (routes, backend) = routed(&metrics);
    let m = backend.metrics();
    for status in [200, 201, 204, 404, 502] {
        m.record_status(status);
    }
    m.record_first_byte(Duration::from_millis(3));
    m.record_done(Duration::from_millis(30), 1234);
    m.add_bytes_in(10);
    m.record_connect_error();
    m.record_retry();
    m.record_restart();
    metrics.record_deploy("web", DeployOutcome::Succeeded, Duration::from_secs(4));
    metrics.record_deploy("web", DeployOutcome::Failed, Duration::from_secs(700));
    metrics.proxy().accepted();
    metrics.proxy().tls_handshake(false);
    let exporter = Exporter::new(Arc::clone(&metrics), routes, Some(Arc::new(OneCertificate)));
    let text = exporter.render();

    assert_eq!(
        line(
            &text,
            r#"haloy_requests_total{app="web",replica="1",class="2xx"}"#
        ),
        r#"haloy_requests_total{app="web",replica="1",class="2xx"} 3"#
    );
    assert!(line(
        &text,
        r#"haloy_requests_total{app="web",replica="1",class="5xx"}"#
    )
    .ends_with(" 1"));
    assert!(line(
        &text,
        r#"haloy_response_bytes_total{app="web",replica="1"}"#
    )
    .ends_with(" 1234"));
    assert!(line(&text, r#"haloy_request_bytes_total{app="web",replica="1"}"#).ends_with(" 10"));
    assert!(line(
        &text,
        r#"haloy_upstream_connect_errors_total{app="web",replica="1"}"#
    )
    .ends_with(" 1"));
    assert!(line(
        &text,
        r#"haloy_upstream_retries_total{app="web",replica="1"}"#
    )
    .ends_with(" 1"));
    assert!(line(
        &text,
        r#"haloy_replica_restarts_total{app="web",replica="1"}"#
    )
    .ends_with(" 1"));
    assert!(line(&text, r#"haloy_replica_ready{app="web",replica="1"}"#).ends_with(" 1"));
    assert!(line(
        &text,
        r#"haloy_response_first_byte_seconds_bucket{le="0.005",app="web",replica="1"}"#
    )
    .ends_with(" 1"));
    assert!(line(
        &text,
        r#"haloy_response_seconds_count{app="web",replica="1"}"#
    )
    .ends_with(" 1"));
    assert!(line(&text, r#"haloy_deploys_total{app="web",outcome="failed"}"#).ends_with(" 1"));
    assert!(line(
        &text,
        r#"haloy_deploy_duration_seconds_bucket{le="5.0",app="web"}"#
    )
    .ends_with(" 1"));
    assert!(line(&text, r#"haloy_deploy_duration_seconds_count{app="web"}"#).ends_with(" 2"));
    assert!(line(
        &text,
        r#"haloy_certificate_expiry_timestamp_seconds{domain="example.com"}"#
    )
    .ends_with(" 1900000000"));
    assert!(line(
        &text,
        r#"haloy_certificate_renewal_failures{domain="example.com"}"#
    )
    .ends_with(" 2"));
    assert!(line(&text, "haloy_proxy_connections_accepted_total").ends_with(" 1"));
    assert!(line(&text, "haloy_proxy_connections_open").ends_with(" 1"));
    assert!(line(
        &text,
        r#"haloy_proxy_tls_handshakes_total{result="failed"}"#
    )
    .ends_with(" 1"));
    for gauge in [
        "haloy_process_resident_memory_bytes ",
        "haloy_process_open_fds ",
    ] {
        let value: u64 = line(&text, gauge)[gauge.len()..].parse().unwrap();
        assert!(value > 0, "{gauge}is 0");
    }
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics:\n{text}");
}

#[test]
fn labels_never_carry_paths_hosts_or_client_addresses() {
    let metrics = Metrics::new();
    let (routes, backend) = routed(&metrics);
    backend.metrics().record_status(200);
    let text = Exporter::new(metrics, routes, None).render();
    for label in text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('{').and_then(|(_, rest)| rest.split_once('}')))
        .flat_map(|(labels, _)| labels.split(','))
    {
        let key = label.split('=').next().unwrap_or_default();
        assert!(
            ["app", "replica", "class", "outcome", "domain", "result", "le"].contains(&key),
            "unexpected label `{label}`"
        );
    }
}

#[test]
fn a_removed_app_leaves_no_series() {
    let metrics = Metrics::new();
    metrics.replica("web", 0).record_status(200);
    metrics.record_deploy("web", DeployOutcome::Succeeded, Duration::from_secs(1));
    metrics.forget_app("web");
    let text = Exporter::new(metrics, Routes::new(), None).render();
    assert!(!text.contains(r#"app="web""#), "{text}");
}

#[test]
fn status_classes_are_clamped_to_one_to_five() {
    let m = ReplicaMetrics::default();
    m.record_status(99);
    m.record_status(600);
    assert_eq!(m.counts().responses, [1, 0, 0, 0, 1]);
}

#[test]
fn latency_histogram_buckets_are_cumulative_with_inf_last() {
    let h = LatencyHistogram::default();
    h.observe(Duration::from_micros(500));
    h.observe(Duration::from_millis(7));
    h.observe(Duration::from_secs(60));
    let (sum, count, buckets) = h.snapshot();
    assert_eq!(count, 3);
    assert!((sum - 60.0075).abs() < 1e-6, "{sum}");
    assert_eq!(buckets.first(), Some(&(0.001, 1)));
    assert_eq!(buckets.iter().find(|(b, _)| *b == 0.01), Some(&(0.01, 2)));
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 3)));
}

#[test]
fn process_status_fields_parse() {
    let status = "Name:\thaloyd\nVmRSS:\t  2048 kB\nThreads:\t7\n";
    assert_eq!(status_field(status, "VmRSS:"), Some(2048));
    assert_eq!(status_field(status, "Threads:"), Some(7));
    assert_eq!(status_field(status, "VmSwap:"), None);
    let _ = SystemTime::now();
}
