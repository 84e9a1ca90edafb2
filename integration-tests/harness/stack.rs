//! The stack most end-to-end tests start: a private containerd, a registry with the fixture
//! images pushed, and a haloyd pulling from it; plus the CLI, status and proxy calls those
//! tests share. Field order is drop order: haloyd first (so it does not react to the
//! teardown), containerd last.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use containerd_client::services::v1::ListImagesRequest;
use haloy::api::types::AppStatus;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::haloyd::{CliRun, Haloyd, HaloydOptions};
use super::{Containerd, Registry};

pub struct Stack {
    pub haloyd: Haloyd,
    pub registry: Registry,
    pub containerd: Containerd,
}

impl Stack {
    /// haloyd with default options.
    pub async fn start() -> Stack {
        Stack::start_with(HaloydOptions::default()).await
    }

    /// haloyd with `options`, the stack's registry added to its insecure registries.
    pub async fn start_with(mut options: HaloydOptions) -> Stack {
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        options
            .insecure_registries
            .push(registry.addr().to_string());
        let haloyd = Haloyd::start(&containerd, options).await;
        Stack {
            haloyd,
            registry,
            containerd,
        }
    }

    /// haloy.yaml for `app` (domain `<app>.test`) running fixture `image:tag`, `extra` YAML
    /// appended; each combination gets its own folder.
    pub fn app_config(
        &self,
        app: &str,
        image: &str,
        tag: &str,
        replicas: u32,
        extra: &str,
    ) -> PathBuf {
        let body = format!(
            "name: {app}\nimage: {image_ref}\nreplicas: {replicas}\nport: 8080\n\
             health_check_path: /health\ndomains:\n  - domain: {app}.test\n{extra}",
            image_ref = self.registry.fixture_ref(image, tag),
        );
        self.haloyd
            .write_app_config(&format!("{app}-{image}-{tag}-{replicas}"), &body)
    }

    pub fn haloy(&self, config: &Path, args: &[&str]) -> CliRun {
        self.haloyd.cli(config, args)
    }

    /// The CLI run, which must succeed (else the output and haloyd's log tail are shown).
    pub fn ok(&self, config: &Path, args: &[&str]) -> CliRun {
        let run = self.haloy(config, args);
        assert!(
            run.output.status.success(),
            "haloy {args:?} failed:\n{}\n--- haloyd log (tail)\n{}",
            run.both(),
            self.haloyd.log_tail(40)
        );
        run
    }

    /// `haloy status --json <args>` for a config naming one app.
    pub fn status(&self, config: &Path, args: &[&str]) -> AppStatus {
        let mut all = vec!["status", "--json"];
        all.extend_from_slice(args);
        let run = self.ok(config, &all);
        let mut list: Vec<AppStatus> = serde_json::from_str(&run.stdout())
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", run.stdout()));
        assert_eq!(list.len(), 1, "{}", run.stdout());
        list.remove(0)
    }

    /// Polls status until `done` holds; fails with the last status after `timeout`.
    pub async fn wait_for_status(
        &self,
        config: &Path,
        timeout: Duration,
        what: &str,
        done: impl Fn(&AppStatus) -> bool,
    ) -> AppStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(config, &[]);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {timeout:?}; last status:\n{status:#?}\n--- haloyd log (tail)\n{}",
                self.haloyd.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Names of the images in haloyd's containerd namespace.
    pub async fn image_names(&self) -> Vec<String> {
        let client = self.containerd.client(self.haloyd.namespace()).await;
        client
            .images()
            .list(client.request(ListImagesRequest::default()))
            .await
            .expect("Images.List")
            .into_inner()
            .images
            .into_iter()
            .map(|image| image.name)
            .collect()
    }

    /// `GET path` on the proxy with `Host: host`: (status, body).
    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let request = http::Request::get(format!("http://{}{path}", self.haloyd.http_addr()))
            .header(http::header::HOST, host)
            .body(Empty::new())
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("proxy answers within 10s")
            .expect("proxy answers");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    }
}
