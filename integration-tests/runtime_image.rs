//! The image side of the runtime against a private containerd and a local registry: pulls
//! (anonymous, basic auth), pull policies, digest comparison, platform selection, errors,
//! archive import, image GC per app, and that no lease or half-made content is left behind.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, StatSnapshotRequest};
use containerd_client::services::v1::{
    GetImageRequest, ListContentRequest, ListImagesRequest, ListRequest,
};
use futures_util::StreamExt;
use haloy::runtime::{
    ContainerdRuntime, ImageRequest, PullPolicy, RegistryCredentials, Runtime, RuntimeConfig,
    RuntimeError,
};
use harness::images::{single_file_layer, OciImage};
use harness::{Containerd, Registry};

struct Rig {
    runtime: ContainerdRuntime,
    registry: Registry,
    // Dropped last: the runtime's connection goes first.
    _containerd: Containerd,
}

impl Rig {
    async fn start(namespace: &str) -> Rig {
        Rig::with_registry(namespace, Registry::start().await).await
    }

    async fn with_registry(namespace: &str, registry: Registry) -> Rig {
        let containerd = Containerd::start().await;
        let mut config = RuntimeConfig::new(containerd.socket());
        config.namespace = namespace.to_string();
        let runtime = ContainerdRuntime::connect(config)
            .await
            .expect("connect runtime");
        Rig {
            runtime,
            registry,
            _containerd: containerd,
        }
    }

    fn client(&self) -> &haloy::runtime::Containerd {
        self.runtime.client()
    }

    async fn leases(&self) -> Vec<String> {
        let c = self.client();
        let leases = c
            .leases()
            .list(c.request(ListRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .leases;
        leases.into_iter().map(|l| l.id).collect()
    }

    async fn image_names(&self) -> Vec<String> {
        let c = self.client();
        let images = c
            .images()
            .list(c.request(ListImagesRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .images;
        images.into_iter().map(|i| i.name).collect()
    }

    async fn content_digests(&self) -> Vec<String> {
        let c = self.client();
        let mut stream = c
            .content()
            .list(c.request(ListContentRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let mut digests = Vec::new();
        while let Some(page) = stream.next().await {
            digests.extend(page.unwrap().info.into_iter().map(|i| i.digest));
        }
        digests
    }

    async fn snapshots(&self) -> Vec<String> {
        let c = self.client();
        let request = ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: vec![],
        };
        let mut stream = c
            .snapshots()
            .list(c.request(request))
            .await
            .unwrap()
            .into_inner();
        let mut names = Vec::new();
        while let Some(page) = stream.next().await {
            names.extend(page.unwrap().info.into_iter().map(|i| i.name));
        }
        names
    }

    async fn snapshot_exists(&self, key: &str) -> bool {
        let c = self.client();
        let request = StatSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: key.into(),
        };
        c.snapshots().stat(c.request(request)).await.is_ok()
    }

    async fn assert_no_leases(&self) {
        assert_eq!(
            self.leases().await,
            Vec::<String>::new(),
            "leases left behind"
        );
    }
}

fn request(reference: &str, policy: PullPolicy) -> ImageRequest {
    ImageRequest::new(reference, policy)
}

#[tokio::test]
async fn anonymous_pull_stores_unpacks_and_records_the_image() {
    let rig = Rig::start("img-anon").await;
    let image = OciImage::fixture("web", "v1");
    let reference = rig.registry.push(&image, "haloy-fixtures/web", "v1").await;

    let (info, report) = rig
        .runtime
        .images()
        .ensure(&request(&reference, PullPolicy::IfMissing))
        .await
        .unwrap();

    assert_eq!(info.name, reference);
    assert_eq!(info.digest, image.manifest.digest);
    assert_eq!(info.chain_id, image.chain_id());
    assert_eq!(info.config.cmd, ["sh", "/app/start.sh"]);
    assert_eq!(info.config.working_dir.as_deref(), Some("/app"));
    assert_eq!(info.config.exposed_ports, ["8080/tcp"]);
    assert!(info.config.env.iter().any(|e| e == "FIXTURE_VERSION=v1"));
    assert_eq!(report.blobs_fetched, 4, "2 layers, config, manifest");
    assert_eq!(report.layers_unpacked, 2);
    assert!(
        rig.snapshot_exists(&info.chain_id).await,
        "top layer committed as its chain id"
    );
    assert_eq!(rig.image_names().await, std::slice::from_ref(&reference));
    rig.assert_no_leases().await;

    // The GC labels keep everything: content and snapshots survive the lease.
    let content = rig.content_digests().await;
    for blob in image.blobs() {
        assert!(content.contains(&blob.digest), "{} kept", blob.digest);
    }

    // A second if_missing ensure is served locally.
    let (again, report) = rig
        .runtime
        .images()
        .ensure(&request(&reference, PullPolicy::IfMissing))
        .await
        .unwrap();
    assert_eq!(again, info);
    assert_eq!(report, Default::default());
}

#[tokio::test]
async fn basic_auth_pull_needs_the_credentials() {
    let registry = Registry::start_with_htpasswd("deployer", "hunter2-secret").await;
    let rig = Rig::with_registry("img-auth", registry).await;
    let reference = rig
        .registry
        .push(&OciImage::fixture("web", "v1"), "private/web", "v1")
        .await;

    let err = rig
        .runtime
        .ensure_image(&request(&reference, PullPolicy::Always))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");

    let mut wrong = request(&reference, PullPolicy::Always);
    wrong.credentials = Some(RegistryCredentials {
        username: "deployer".into(),
        password: "nope".into(),
    });
    let err = rig.runtime.ensure_image(&wrong).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unauthorized { .. }), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "never show the password: {err}"
    );

    let mut right = request(&reference, PullPolicy::Always);
    right.credentials = Some(RegistryCredentials {
        username: "deployer".into(),
        password: "hunter2-secret".into(),
    });
    let info = rig.runtime.ensure_image(&right).await.unwrap();
    assert_eq!(info.name, reference);
    rig.assert_no_leases().await;
}

#[tokio::test]
async fn bearer_token_challenge_pull_with_credentials() {
    let registry = Registry::start_with_token_auth("ci-bot", "token-pass").await;
    let rig = Rig::with_registry("img-bearer", registry).await;
    let reference = rig
        .registry
        .push(&OciImage::fixture("web", "v1"), "team/web", "v1")
        .await;

    let err = rig
        .runtime
        .ensure_image(&request(&reference, PullPolicy::Always))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unauthorized { .. }), "{err}");

    let mut req = request(&reference, PullPolicy::Always);
    req.credentials = Some(RegistryCredentials {
        username: "ci-bot".into(),
        password: "token-pass".into(),
    });
    let info = rig.runtime.ensure_image(&req).await.unwrap();
    assert_eq!(info.name, reference);

    let log = &rig.registry.token_server().unwrap().log;
    let requests = log.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|(user, scopes)| user == "ci-bot"
            && scopes.contains(&"repository:team/web:pull".to_string())),
        "a pull token was fetched with the credentials: {requests:?}"
    );
    rig.assert_no_leases().await;
}

#[tokio::test]
async fn policy_always_twice_transfers_no_layer_the_second_time() {
    let rig = Rig::start("img-always").await;
    let v1 = OciImage::fixture("web", "v1");
    let reference = rig.registry.push(&v1, "haloy-fixtures/web", "stable").await;
    let always = request(&reference, PullPolicy::Always);

    let (_, first) = rig.runtime.images().ensure(&always).await.unwrap();
    assert!(first.bytes_fetched > 0);
    let total_after_first = rig.runtime.images().total_bytes_fetched();

    let (info, second) = rig.runtime.images().ensure(&always).await.unwrap();
    assert_eq!(
        second,
        Default::default(),
        "nothing transferred when the digest is unchanged"
    );
    assert_eq!(
        rig.runtime.images().total_bytes_fetched(),
        total_after_first
    );
    assert_eq!(info.digest, v1.manifest.digest);

    // The tag moves to v2 (same layers, new config): only config and manifest are fetched.
    let v2 = OciImage::fixture("web", "v2");
    rig.registry.push(&v2, "haloy-fixtures/web", "stable").await;
    let (info, third) = rig.runtime.images().ensure(&always).await.unwrap();
    assert_eq!(info.digest, v2.manifest.digest);
    assert_eq!(third.blobs_fetched, 2, "config + manifest only: {third:?}");
    assert_eq!(third.layers_unpacked, 0);
    assert_eq!(rig.image_names().await, [reference]);
    rig.assert_no_leases().await;
}

#[tokio::test]
async fn missing_tag_is_a_clear_error_and_leaves_nothing() {
    let rig = Rig::start("img-missing").await;
    rig.registry
        .push(&OciImage::fixture("web", "v1"), "haloy-fixtures/web", "v1")
        .await;
    let reference = rig.registry.fixture_ref("web", "does-not-exist");

    let err = rig
        .runtime
        .ensure_image(&request(&reference, PullPolicy::IfMissing))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&reference),
        "names the reference: {err}"
    );

    let unknown_repo = format!("{}/nobody/here:v1", rig.registry.addr());
    let err = rig
        .runtime
        .ensure_image(&request(&unknown_repo, PullPolicy::Always))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");

    assert!(rig.image_names().await.is_empty());
    assert!(rig.content_digests().await.is_empty());
    rig.assert_no_leases().await;
}

#[tokio::test]
async fn failed_pull_leaves_no_content_snapshots_or_leases() {
    let rig = Rig::start("img-broken").await;
    // A config whose diff_id does not match the layer: the unpack fails after blobs were written.
    let good = single_file_layer("hello.txt", b"hello");
    let mut lying = OciImage::from_layers(
        vec![good.clone()],
        serde_json::json!({"Cmd": ["true"]}),
        std::env::consts::ARCH,
    );
    let other = single_file_layer("other.txt", b"other");
    lying = rebuild_with_diff_ids(&lying, std::slice::from_ref(&other.diff_id));
    let reference = rig.registry.push(&lying, "broken/app", "v1").await;

    let err = rig
        .runtime
        .ensure_image(&request(&reference, PullPolicy::Always))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidImage { .. }), "{err}");
    assert!(err.to_string().contains("diff_id"), "{err}");

    assert!(rig.image_names().await.is_empty(), "no image record");
    assert!(
        rig.content_digests().await.is_empty(),
        "content collected: {:?}",
        rig.content_digests().await
    );
    assert!(
        rig.snapshots().await.is_empty(),
        "snapshots collected: {:?}",
        rig.snapshots().await
    );
    rig.assert_no_leases().await;
}

/// The same image with a config that claims other diff_ids.
fn rebuild_with_diff_ids(image: &OciImage, diff_ids: &[String]) -> OciImage {
    let mut config: serde_json::Value = serde_json::from_slice(&image.config.data).unwrap();
    config["rootfs"]["diff_ids"] = serde_json::json!(diff_ids);
    let config = harness::images::Blob::new(
        harness::images::CONFIG_MEDIA_TYPE,
        serde_json::to_vec(&config).unwrap(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": harness::images::MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": image.layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
    });
    let manifest = harness::images::Blob::new(
        harness::images::MANIFEST_MEDIA_TYPE,
        serde_json::to_vec(&manifest).unwrap(),
    );
    OciImage {
        layers: image.layers.clone(),
        config,
        manifest,
    }
}

#[tokio::test]
async fn index_picks_the_host_platform_or_names_what_exists() {
    let rig = Rig::start("img-platform").await;
    let native = OciImage::fixture("web", "v1");
    let foreign = OciImage::from_layers(
        vec![single_file_layer("f", b"f")],
        serde_json::json!({}),
        "s390x",
    );

    let multi = rig
        .registry
        .push_index(
            &[(&foreign, "s390x"), (&native, std::env::consts::ARCH)],
            "multi/web",
            "v1",
        )
        .await;
    let info = rig
        .runtime
        .ensure_image(&request(&multi, PullPolicy::Always))
        .await
        .unwrap();
    assert_eq!(
        info.digest, native.manifest.digest,
        "the platform manifest, not the index"
    );

    let only_foreign = rig
        .registry
        .push_index(&[(&foreign, "s390x")], "foreign/web", "v1")
        .await;
    let err = rig
        .runtime
        .ensure_image(&request(&only_foreign, PullPolicy::Always))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("linux/s390x"),
        "lists what is available: {err}"
    );
    rig.assert_no_leases().await;
}

#[tokio::test]
async fn policy_never_uses_only_local_images() {
    let rig = Rig::start("img-never").await;
    let reference = rig
        .registry
        .push(&OciImage::fixture("web", "v1"), "haloy-fixtures/web", "v1")
        .await;

    let err = rig
        .runtime
        .ensure_image(&request(&reference, PullPolicy::Never))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotPresent { .. }), "{err}");
    assert!(err.to_string().contains("never"), "{err}");

    rig.runtime
        .ensure_image(&request(&reference, PullPolicy::IfMissing))
        .await
        .unwrap();
    let info = rig
        .runtime
        .ensure_image(&request(&reference, PullPolicy::Never))
        .await
        .unwrap();
    assert_eq!(info.name, reference);
}

#[tokio::test]
async fn import_oci_archive_then_image_exists_with_its_snapshot() {
    let rig = Rig::start("img-import-oci").await;
    let image = OciImage::fixture("web", "v1");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("web.oci.tar");
    image.write_oci_archive(&archive, "registry.example/imported/web:v1");

    let imported = rig
        .runtime
        .images()
        .import_archive(&archive, None)
        .await
        .unwrap();
    assert_eq!(imported.len(), 1);
    let (info, report) = &imported[0];
    assert_eq!(info.name, "registry.example/imported/web:v1");
    assert_eq!(info.digest, image.manifest.digest);
    assert_eq!(report.layers_unpacked, 2);
    assert!(rig.snapshot_exists(&image.chain_id()).await);
    rig.assert_no_leases().await;

    // Deployable without any registry: policy never finds it.
    let found = rig
        .runtime
        .ensure_image(&request(
            "registry.example/imported/web:v1",
            PullPolicy::Never,
        ))
        .await
        .unwrap();
    assert_eq!(&found, info);

    // A tag-only ref name takes the repository from the caller.
    let tagged = dir.path().join("tagged.oci.tar");
    image.write_oci_archive(&tagged, "v7");
    let imported = rig
        .runtime
        .images()
        .import_archive(&tagged, Some("myapp"))
        .await
        .unwrap();
    assert_eq!(imported[0].0.name, "docker.io/library/myapp:v7");
    assert_eq!(
        imported[0].1.layers_unpacked, 0,
        "layers shared with the first import"
    );
    let err = rig
        .runtime
        .images()
        .import_archive(&tagged, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tagged.oci.tar"), "{err}");
}

#[tokio::test]
async fn import_docker_save_archive() {
    let rig = Rig::start("img-import-docker").await;
    let image = OciImage::fixture("chatty", "v1");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("chatty.docker.tar");
    image.write_docker_archive(&archive, "chatty:v1");

    let imported = rig
        .runtime
        .images()
        .import_archive(&archive, None)
        .await
        .unwrap();
    let (info, _) = &imported[0];
    assert_eq!(info.name, "docker.io/library/chatty:v1");
    assert_eq!(
        info.chain_id,
        image.chain_id(),
        "same rootfs as the registry image"
    );
    assert!(rig.snapshot_exists(&info.chain_id).await);
    assert_eq!(info.config.env, image_env(&image));
    rig.assert_no_leases().await;
}

fn image_env(image: &OciImage) -> Vec<String> {
    let config: serde_json::Value = serde_json::from_slice(&image.config.data).unwrap();
    serde_json::from_value(config["config"]["Env"].clone()).unwrap()
}

#[tokio::test]
async fn remove_unused_images_keeps_what_the_app_still_uses() {
    let rig = Rig::start("img-gc").await;
    let v1 = OciImage::fixture("web", "v1");
    let v2 = OciImage::fixture("web", "v2");
    let r1 = rig.registry.push(&v1, "haloy-fixtures/web", "v1").await;
    let r2 = rig.registry.push(&v2, "haloy-fixtures/web", "v2").await;
    let other = rig
        .registry
        .push(
            &OciImage::fixture("chatty", "v1"),
            "haloy-fixtures/chatty",
            "v1",
        )
        .await;
    for (reference, app) in [
        (&r1, "shop"),
        (&r2, "shop"),
        (&r2, "blog"),
        (&other, "blog"),
    ] {
        let mut req = request(reference, PullPolicy::IfMissing);
        req.app = Some(app.to_string());
        rig.runtime.ensure_image(&req).await.unwrap();
    }

    rig.runtime
        .remove_unused_images("shop", std::slice::from_ref(&r2))
        .await
        .unwrap();
    let mut names = rig.image_names().await;
    names.sort();
    let mut want = vec![r2.clone(), other.clone()];
    want.sort();
    assert_eq!(names, want, "v1 removed, the kept v2 and blog's image stay");
    let content = rig.content_digests().await;
    assert!(
        !content.contains(&v1.config.digest),
        "v1's own config collected"
    );
    assert!(
        content.contains(&v1.layers[0].blob.digest),
        "shared base layer kept"
    );
    assert!(rig.snapshot_exists(&v2.chain_id()).await);

    // v2 is used by blog too: shop dropping it only removes shop's mark.
    rig.runtime.remove_unused_images("shop", &[]).await.unwrap();
    assert!(rig.image_names().await.contains(&r2));
    rig.runtime.remove_unused_images("blog", &[]).await.unwrap();
    assert!(rig.image_names().await.is_empty());

    let c = rig.client();
    let err = c
        .images()
        .get(c.request(GetImageRequest { name: r2 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn interrupted_pulls_leave_nothing_that_breaks_the_next_pull() {
    let rig = Rig::start("img-interrupt").await;
    let image = OciImage::fixture("web", "v1");
    let reference = rig.registry.push(&image, "haloy-fixtures/web", "v1").await;
    let always = request(&reference, PullPolicy::Always);

    // Cancel the pull at many different points (the future is dropped mid-flight).
    for delay_ms in [1u64, 3, 5, 10, 20, 40, 80] {
        let attempt = rig.runtime.images().ensure(&always);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(delay_ms), attempt).await;
        // Each interrupted attempt left at most its lease: deleted in the background.
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !rig.leases().await.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    rig.assert_no_leases().await;
    // Only a complete pull creates the image record.
    for name in rig.image_names().await {
        let (info, _) = rig
            .runtime
            .images()
            .ensure(&request(&name, PullPolicy::Never))
            .await
            .expect("a recorded image is complete");
        assert!(rig.snapshot_exists(&info.chain_id).await);
    }

    let (info, _) = rig.runtime.images().ensure(&always).await.unwrap();
    assert_eq!(info.digest, image.manifest.digest);
    assert!(rig.snapshot_exists(&info.chain_id).await);
    rig.assert_no_leases().await;
    let snapshots = rig.snapshots().await;
    assert!(
        snapshots.iter().all(|s| s.starts_with("sha256:")),
        "no half-applied unpack snapshot left: {snapshots:?}"
    );
}

/// Import an OCI archive (no registry involved) and run a replica of it on a private bridge.
#[tokio::test]
async fn imported_archive_runs_as_a_replica() {
    use haloy::runtime::{ReplicaSpec, Resources};
    use std::path::PathBuf;
    harness::require_binary("ip", "iproute2");
    assert!(
        std::path::Path::new("/usr/lib/cni/bridge").is_file(),
        "/usr/lib/cni/bridge missing: install the Debian package containernetworking-plugins"
    );
    let containerd = Containerd::start().await;
    let dir = tempfile::Builder::new()
        .prefix("haloy-imgrun-")
        .tempdir()
        .unwrap();
    let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
    let mut config = RuntimeConfig::new(containerd.socket());
    config.namespace = "img-run".into();
    config.network = haloy::network::CniSettings {
        plugin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        network_name: format!("hli-{suffix:06x}"),
        bridge: format!("hli{suffix:06x}"),
        subnet: format!("10.253.{}.0/24", rand::random::<u8>()),
        ipam_data_dir: dir.path().join("ipam"),
        netns_dir: dir.path().join("netns"),
        cache_dir: dir.path().join("cni-cache"),
        conflist_template: None,
    };
    config.tasks = haloy::runtime::task::TaskSettings {
        state_dir: dir.path().join("state"),
        log_dir: dir.path().join("logs"),
        log_max_size: 1 << 20,
        log_max_files: 2,
        log_driver_binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_haloyd"))),
        cgroup_parent: format!("/haloy-test-imgrun-{suffix:06x}"),
        init_binary: haloy::runtime::DEFAULT_INIT_BINARY.into(),
        ..Default::default()
    };
    let _bridge = BridgeGuard(config.network.bridge.clone());
    let _cgroups = harness::CgroupParentGuard(config.tasks.cgroup_parent.clone());
    let runtime = ContainerdRuntime::connect(config).await.unwrap();

    let archive = dir.path().join("web.oci.tar");
    OciImage::fixture("web", "v5").write_oci_archive(&archive, "v5");
    let imported = runtime
        .images()
        .import_archive(&archive, Some("local/web"))
        .await
        .unwrap();
    let image = imported[0].0.clone();
    assert_eq!(image.name, "docker.io/local/web:v5");

    let spec = ReplicaSpec {
        app: "imported".into(),
        deployment_id: "01IMPORTED".into(),
        replica: 1,
        image,
        env: vec![],
        port: 8080,
        health_check_path: "/health".into(),
        domains: vec![],
        labels: Default::default(),
        volumes: vec![],
        resources: Resources::default(),
        seccomp: Default::default(),
        stop_timeout: std::time::Duration::from_secs(2),
        init: false,
    };
    let replica = runtime.start_replica(&spec).await.unwrap();
    let ip = replica.ip;
    let addr = format!("{ip}:8080");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut page = None;
    while std::time::Instant::now() < deadline {
        if harness::registry::http_status(&addr, "/health") == Some(200) {
            page = harness::registry::http_body(&addr, "/version.txt");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let page = page.expect("the imported image serves /health");
    assert!(page.contains("version=v5"), "{page}");

    runtime
        .stop_replica(&replica.container_id, std::time::Duration::from_secs(2))
        .await
        .unwrap();
    runtime.remove_replica(&replica.container_id).await.unwrap();
    assert!(runtime.list_replicas(None).await.unwrap().is_empty());
    drop(runtime);
    harness::unmount_all_under(dir.path());
}

/// Deletes the test's bridge at the end (also on panic).
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
