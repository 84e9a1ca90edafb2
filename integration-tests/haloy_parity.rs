//! Keys Haloy accepts do what they do in Haloy (issue 14, "nothing accepted is ignored"):
//! deploy hooks run on the deploying machine, `protected` targets stay out of `deploy --all`,
//! `naming_strategy: static` names the container after the app, and image history strategy
//! `registry` keeps only the current image and rolls back by pulling the old tag. Each test
//! has its own containerd, registry and haloyd, driven by the real `haloy` CLI.

// Tests start real containerd, registries and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use containerd_client::services::v1::ListImagesRequest;
use haloy::api::types::AppStatus;
use harness::haloyd::{CliRun, Haloyd, HaloydOptions};
use harness::{Containerd, Registry};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Field order is drop order: haloyd first, containerd last.
struct Rig {
    haloyd: Haloyd,
    registry: Registry,
    containerd: Containerd,
}

impl Rig {
    async fn start() -> Rig {
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        let options = HaloydOptions {
            insecure_registries: vec![registry.addr().to_string()],
            ..HaloydOptions::default()
        };
        let haloyd = Haloyd::start(&containerd, options).await;
        Rig {
            haloyd,
            registry,
            containerd,
        }
    }

    /// `haloy.yaml` in `folder`: the `web` fixture at `tag` with `extra` YAML appended.
    fn config(&self, folder: &str, tag: &str, extra: &str) -> PathBuf {
        let body = format!(
            "image: {}\nport: 8080\nhealth_check_path: /health\n{extra}",
            self.registry.fixture_ref("web", tag)
        );
        self.haloyd.write_app_config(folder, &body)
    }

    fn haloy(&self, config: &Path, args: &[&str]) -> CliRun {
        self.haloyd.cli(config, args)
    }

    fn ok(&self, config: &Path, args: &[&str]) -> CliRun {
        let run = self.haloy(config, args);
        assert!(
            run.output.status.success(),
            "haloy {args:?} failed:\n{}\n--- haloyd log (tail)\n{}",
            run.both(),
            self.haloyd.log_tail(40)
        );
        run
    }

    fn status(&self, config: &Path, args: &[&str]) -> AppStatus {
        let mut all = vec!["status", "--json"];
        all.extend_from_slice(args);
        let run = self.ok(config, &all);
        let mut list: Vec<AppStatus> = serde_json::from_str(&run.stdout())
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", run.stdout()));
        assert_eq!(list.len(), 1, "{}", run.stdout());
        list.remove(0)
    }

    /// Names of the images in haloyd's containerd namespace.
    async fn image_names(&self) -> Vec<String> {
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
    async fn get(&self, host: &str, path: &str) -> (u16, String) {
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

/// Position of `needle` in `text`, failing with the text when absent.
fn at(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_the_deploy_in_the_config_folder() {
    let rig = Rig::start().await;
    // Relative file names prove the working directory; $NO_COLOR (set by the harness for the
    // CLI) proves the hooks get the CLI's environment.
    let config = rig.config(
        "hooks",
        "v1",
        "targets:\n  hooked:\n    domains: [{domain: hooked.test}]\n    \
         pre_deploy: ['echo HOOK-pre; echo pre >> hooks.log']\n    \
         post_deploy: ['echo HOOK-post; echo post >> hooks.log']\n\
         global_pre_deploy: ['echo HOOK-global-pre NO_COLOR=$NO_COLOR; echo global-pre >> hooks.log']\n\
         global_post_deploy: ['echo HOOK-global-post; echo global-post >> hooks.log']\n",
    );
    let run = rig.ok(&config, &["deploy", "-a"]);
    let log = std::fs::read_to_string(config.with_file_name("hooks.log"))
        .expect("hooks.log next to haloy.yaml: the hooks ran in the config's folder");
    assert_eq!(log, "global-pre\npre\npost\nglobal-post\n");
    // Their output is shown, in order around the deploy's own lines.
    let out = run.stdout();
    assert!(out.contains("HOOK-global-pre NO_COLOR=1"), "{out}");
    assert!(at(&out, "HOOK-global-pre") < at(&out, "HOOK-pre"));
    assert!(at(&out, "HOOK-pre") < at(&out, "deploying hooked"));
    assert!(at(&out, "deployment succeeded") < at(&out, "HOOK-post"));
    assert!(at(&out, "HOOK-post") < at(&out, "HOOK-global-post"));
    assert_eq!(rig.get("hooked.test", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_deploy_hook_sends_nothing() {
    let rig = Rig::start().await;
    let config = rig.config(
        "hookfail",
        "v1",
        "name: hookfail\ndomains: [{domain: hookfail.test}]\n\
         pre_deploy: ['exit 7', 'touch ran-after-failure']\n\
         global_post_deploy: ['touch global-post-ran']\n",
    );
    let run = rig.haloy(&config, &["deploy"]);
    assert!(!run.output.status.success(), "{}", run.both());
    assert!(
        run.stderr()
            .contains("pre_deploy hook failed: `exit 7` exited with"),
        "{}",
        run.both()
    );
    assert!(!config.with_file_name("ran-after-failure").exists());
    assert!(!config.with_file_name("global-post-ran").exists());
    // haloyd never heard of the app.
    let status = rig.haloy(&config, &["status"]);
    assert!(
        status.stderr().contains("is not deployed"),
        "{}",
        status.both()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_all_skips_protected_targets_unless_included() {
    let rig = Rig::start().await;
    let config = rig.config(
        "protected",
        "v1",
        "targets:\n  open:\n    domains: [{domain: open.test}]\n  \
         guarded:\n    protected: true\n    domains: [{domain: guarded.test}]\n",
    );
    let run = rig.ok(&config, &["deploy", "-a"]);
    assert!(
        run.stderr().contains("skipping protected targets: guarded"),
        "{}",
        run.both()
    );
    assert!(
        run.stderr().contains("--include-protected"),
        "{}",
        run.both()
    );
    assert_eq!(rig.status(&config, &["-t", "open"]).name, "open");
    let guarded = rig.haloy(&config, &["status", "-t", "guarded"]);
    assert!(
        guarded.stderr().contains("is not deployed"),
        "{}",
        guarded.both()
    );
    assert_eq!(rig.get("guarded.test", "/").await.0, 404);

    rig.ok(
        &config,
        &["deploy", "-a", "--include-protected", "--no-logs"],
    );
    assert_eq!(rig.status(&config, &["-t", "guarded"]).name, "guarded");
    assert_eq!(rig.get("guarded.test", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_naming_names_the_one_container_after_the_app() {
    let rig = Rig::start().await;
    let extra = "name: fixed-name\ndomains: [{domain: fixed.test}]\n\
                 naming_strategy: static\ndeployment_strategy: replace\n";
    for tag in ["v1", "v2"] {
        let config = rig.config(&format!("static-{tag}"), tag, extra);
        rig.ok(&config, &["deploy"]);
        let status = rig.status(&config, &[]);
        let ids: Vec<&str> = status
            .replicas
            .iter()
            .map(|r| r.container_id.as_str())
            .collect();
        assert_eq!(ids, ["fixed-name"], "{status:#?}");
        let (code, body) = rig.get("fixed.test", "/").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(&format!("version: {tag}")), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_history_rolls_back_by_pulling_the_old_tag() {
    let rig = Rig::start().await;
    let history = |tag: &str| {
        format!(
            "name: reghist\ndomains: [{{domain: reghist.test}}]\nimage:\n  repository: {}\n  tag: {tag}\n  \
             history: {{strategy: registry, count: 5, pattern: 'v*'}}\n",
            rig.registry
                .fixture_ref("web", tag)
                .rsplit_once(':')
                .map(|(repo, _)| repo.to_string())
                .expect("fixture ref has a tag")
        )
    };
    let v1 = rig.haloyd.write_app_config(
        "reghist-v1",
        &format!("port: 8080\nhealth_check_path: /health\n{}", history("v1")),
    );
    let v2 = rig.haloyd.write_app_config(
        "reghist-v2",
        &format!("port: 8080\nhealth_check_path: /health\n{}", history("v2")),
    );
    rig.ok(&v1, &["deploy"]);
    let v1_id = rig.status(&v1, &[]).deployment_id;
    rig.ok(&v2, &["deploy"]);
    // v1's image is gone from the server, yet v1 stays a rollback target: the registry has it.
    let targets = rig.ok(&v2, &["rollback-targets"]).stdout();
    assert!(targets.contains(&v1_id), "{targets}");
    let has_v1 = |names: &[String]| names.iter().any(|n| n.ends_with("/web:v1"));
    let kept = rig.image_names().await;
    assert!(!has_v1(&kept), "v1 kept on the server: {kept:?}");
    assert!(kept.iter().any(|n| n.ends_with("/web:v2")), "{kept:?}");
    rig.ok(&v2, &["rollback", &v1_id]);
    let after = rig.image_names().await;
    assert!(
        has_v1(&after),
        "the rollback did not pull v1 again: {after:?}"
    );
    let (code, body) = rig.get("reghist.test", "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("version: v1"), "{body}");
}
