//! Renders every metric at scrape time: a `prometheus-client` collector that reads the
//! counters, the route table (replica readiness), the certificates and the process.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::counters::STATUS_CLASSES;
use super::{deploy_buckets, process, Metrics};
use crate::proxy::Routes;

/// One certificate as the exporter shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateGauge {
    pub domain: String,
    pub expires: Option<SystemTime>,
    /// Failed orders/renewals in a row (0 after a success).
    pub failures: u32,
}

/// Where the exporter reads certificates from (the tls module's manager).
pub trait CertificateSource: Send + Sync + 'static {
    fn certificate_gauges(&self) -> Vec<CertificateGauge>;
}

impl CertificateSource for crate::tls::CertificateManager {
    fn certificate_gauges(&self) -> Vec<CertificateGauge> {
        self.statuses()
            .into_iter()
            .map(|status| CertificateGauge {
                domain: status.domain,
                expires: status.expires,
                failures: status.failures,
            })
            .collect()
    }
}

/// Everything a scrape reads. Cheap to clone.
#[derive(Clone)]
pub struct Exporter {
    metrics: Arc<Metrics>,
    routes: Routes,
    certificates: Option<Arc<dyn CertificateSource>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("certificates", &self.certificates.is_some())
            .finish_non_exhaustive()
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Name, help, type and value of a per-replica series with one sample per replica.
type ReplicaSeries = (
    &'static str,
    &'static str,
    MetricType,
    fn(&super::counters::ReplicaCounts) -> i64,
);

impl Exporter {
    pub fn new(
        metrics: Arc<Metrics>,
        routes: Routes,
        certificates: Option<Arc<dyn CertificateSource>>,
    ) -> Self {
        Self {
            metrics,
            routes,
            certificates,
        }
    }

    /// The OpenMetrics text of every metric, as `GET /metrics` answers.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("haloy");
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        text
    }

    fn encode_replicas(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let replicas = self.metrics.replica_snapshot();
        let counts: Vec<_> = replicas
            .iter()
            .map(|((app, replica), m)| (app.as_str(), replica.to_string(), m.counts()))
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "requests",
                "Responses sent for a replica, by status class (the proxy's 502/504 for it included).",
                None,
                MetricType::Counter,
            )?;
            for (app, replica, c) in &counts {
                for (class, value) in STATUS_CLASSES.iter().zip(c.responses) {
                    let labels: Labels = vec![("app", app), ("replica", replica), ("class", class)];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
                }
            }
        }
        let simple: [ReplicaSeries; 6] = [
            (
                "in_flight",
                "Requests a replica is serving now.",
                MetricType::Gauge,
                |c| c.in_flight,
            ),
            (
                "request_bytes",
                "Request body bytes forwarded to a replica.",
                MetricType::Counter,
                |c| as_i64(c.bytes_in),
            ),
            (
                "response_bytes",
                "Response body bytes a replica sent to clients.",
                MetricType::Counter,
                |c| as_i64(c.bytes_out),
            ),
            (
                "upstream_connect_errors",
                "Connections to a replica that could not be opened.",
                MetricType::Counter,
                |c| as_i64(c.connect_errors),
            ),
            (
                "upstream_retries",
                "Requests sent once more after this replica failed before answering.",
                MetricType::Counter,
                |c| as_i64(c.retries),
            ),
            (
                "replica_restarts",
                "Crash restarts of a replica.",
                MetricType::Counter,
                |c| as_i64(c.restarts),
            ),
        ];
        for (name, help, kind, value) in simple {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (app, replica, c) in &counts {
                let labels: Labels = vec![("app", app), ("replica", replica)];
                let metric = family.encode_family(&labels)?;
                encode_value(metric, &kind, value(c))?;
            }
        }
        for (name, help, first) in [
            (
                "response_first_byte_seconds",
                "Time from sending a request to a replica to its response head.",
                true,
            ),
            (
                "response_seconds",
                "Time from sending a request to a replica to the end of its response body.",
                false,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for ((app, replica), m) in &replicas {
                let replica = replica.to_string();
                let labels: Labels = vec![("app", app), ("replica", &replica)];
                let histogram = if first { m.first_byte() } else { m.total() };
                let (sum, count, buckets) = histogram.snapshot();
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }

    fn encode_readiness(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let table = self.routes.load();
        let mut family = encoder.encode_descriptor(
            "replica_ready",
            "1 while a replica in the route table takes traffic (passed readiness), else 0.",
            None,
            MetricType::Gauge,
        )?;
        for app in table.apps() {
            let Some(route) = table.app(app) else {
                continue;
            };
            for backend in &route.backends {
                let replica = backend.replica().to_string();
                let labels: Labels = vec![("app", app), ("replica", &replica)];
                family
                    .encode_family(&labels)?
                    .encode_gauge(&i64::from(backend.is_ready()))?;
            }
        }
        Ok(())
    }

    fn encode_deploys(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let deploys = self.metrics.deploy_snapshot();
        {
            let mut family = encoder.encode_descriptor(
                "deploys",
                "Finished deploys of an app, by outcome.",
                None,
                MetricType::Counter,
            )?;
            for (app, stats) in &deploys {
                for (outcome, value) in [("succeeded", stats.succeeded), ("failed", stats.failed)] {
                    let labels: Labels = vec![("app", app), ("outcome", outcome)];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "deploy_duration_seconds",
            "How long an app's deploys took, start to finish.",
            None,
            MetricType::Histogram,
        )?;
        for (app, stats) in &deploys {
            let labels: Labels = vec![("app", app)];
            let buckets = deploy_buckets(stats);
            let count = buckets.last().map_or(0, |(_, c)| *c);
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(stats.sum_seconds, count, &buckets, None)?;
        }
        Ok(())
    }

    fn encode_certificates(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let certificates = self
            .certificates
            .as_ref()
            .map(|source| source.certificate_gauges())
            .unwrap_or_default();
        {
            let mut family = encoder.encode_descriptor(
                "certificate_expiry_timestamp_seconds",
                "When a domain's served certificate expires (Unix time).",
                None,
                MetricType::Gauge,
            )?;
            for cert in &certificates {
                let Some(expires) = cert.expires else {
                    continue;
                };
                let seconds = expires
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| as_i64(d.as_secs()));
                let labels: Labels = vec![("domain", &cert.domain)];
                family.encode_family(&labels)?.encode_gauge(&seconds)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "certificate_renewal_failures",
            "Failed certificate orders for a domain in a row (0 after a success).",
            None,
            MetricType::Gauge,
        )?;
        for cert in &certificates {
            let labels: Labels = vec![("domain", &cert.domain)];
            family
                .encode_family(&labels)?
                .encode_gauge(&i64::from(cert.failures))?;
        }
        Ok(())
    }

    fn encode_proxy(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let c = self.metrics.proxy().counts();
        let plain: [(&str, &str, MetricType, i64); 4] = [
            (
                "proxy_connections_accepted",
                "Client connections the proxy accepted.",
                MetricType::Counter,
                as_i64(c.accepted),
            ),
            (
                "proxy_connections_open",
                "Client connections open now.",
                MetricType::Gauge,
                c.open,
            ),
            (
                "proxy_connection_limit_waits",
                "Times max_connections was reached and clients waited in the listen backlog.",
                MetricType::Counter,
                as_i64(c.limited),
            ),
            (
                "proxy_accept_errors",
                "accept(2) failures (e.g. out of file descriptors): connections refused.",
                MetricType::Counter,
                as_i64(c.accept_errors),
            ),
        ];
        for (name, help, kind, value) in plain {
            let family = encoder.encode_descriptor(name, help, None, kind)?;
            encode_value(family, &kind, value)?;
        }
        let mut family = encoder.encode_descriptor(
            "proxy_tls_handshakes",
            "TLS handshakes on the HTTPS listener, by result (timeouts count as failed).",
            None,
            MetricType::Counter,
        )?;
        for (result, value) in [("ok", c.tls_ok), ("failed", c.tls_failed)] {
            let labels: Labels = vec![("result", result)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    fn encode_process(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let p = process::sample();
        let values: [(&str, &str, Option<i64>); 4] = [
            (
                "process_resident_memory_bytes",
                "haloyd's resident set size.",
                p.rss_bytes.map(as_i64),
            ),
            (
                "process_open_fds",
                "haloyd's open file descriptors.",
                p.open_fds.map(as_i64),
            ),
            (
                "process_threads",
                "haloyd's OS threads.",
                p.threads.map(as_i64),
            ),
            (
                "process_tasks",
                "Tokio tasks alive in haloyd (connections, monitors, jobs).",
                p.tasks.map(as_i64),
            ),
        ];
        for (name, help, value) in values {
            let Some(value) = value else { continue };
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            encode_value(family, &MetricType::Gauge, value)?;
        }
        Ok(())
    }
}

impl Collector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.encode_replicas(&mut encoder)?;
        self.encode_readiness(&mut encoder)?;
        self.encode_deploys(&mut encoder)?;
        self.encode_certificates(&mut encoder)?;
        self.encode_proxy(&mut encoder)?;
        self.encode_process(&mut encoder)
    }
}

fn encode_value(
    mut metric: prometheus_client::encoding::MetricEncoder,
    kind: &MetricType,
    value: i64,
) -> std::fmt::Result {
    match kind {
        MetricType::Counter => {
            metric.encode_counter::<NoLabelSet, _, u64>(&u64::try_from(value).unwrap_or(0), None)
        }
        _ => metric.encode_gauge(&value),
    }
}

fn as_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}
