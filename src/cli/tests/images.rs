//! Unit tests of `cli::images`: which images are built, pushed or uploaded (Haloy's push
//! strategy), and reading an OCI layout from disk.

use super::*;
use crate::config::{BuildConfig, HistoryStrategy, ImageHistory, RegistryAuth, SecretString};

fn image(build: bool, push: Option<&str>, registry: bool) -> ResolvedImage {
    ResolvedImage {
        repository: "web".into(),
        tag: "v1".into(),
        digest: None,
        pull_policy: PullPolicy::Always,
        registry: registry.then(|| RegistryAuth {
            server: "ghcr.io".into(),
            username: "me".into(),
            password: SecretString::new("pw"),
        }),
        history: ImageHistory {
            strategy: HistoryStrategy::Local,
            count: 3,
            pattern: None,
        },
        build,
        build_config: push.map(|p| BuildConfig {
            context: None,
            dockerfile: None,
            platform: None,
            args: vec![],
            push: Some(p.into()),
        }),
    }
}

#[test]
fn built_images_go_to_the_server_unless_a_registry_is_configured() {
    assert_eq!(
        supply_for(&image(true, None, false), None),
        Supply::BuildAndUpload
    );
    assert_eq!(
        supply_for(&image(true, None, true), None),
        Supply::BuildAndPush
    );
    assert_eq!(
        supply_for(&image(true, Some("server"), false), None),
        Supply::BuildAndUpload
    );
    assert_eq!(
        supply_for(&image(true, Some("registry"), true), None),
        Supply::BuildAndPush
    );
}

#[test]
fn images_not_built_are_pulled_unless_push_server_says_upload() {
    assert_eq!(
        supply_for(&image(false, None, false), None),
        Supply::Registry
    );
    assert_eq!(
        supply_for(&image(false, Some("server"), false), None),
        Supply::UploadFromStore
    );
}

#[test]
fn an_image_path_overrides_everything() {
    let path = Path::new("/tmp/app.tar");
    assert_eq!(
        supply_for(&image(true, None, true), Some(path)),
        Supply::UploadFromPath(path.to_path_buf())
    );
}

/// Writes a minimal OCI layout: one layer, a config, a manifest and index.json.
fn write_layout(dir: &Path) -> (String, u64) {
    use crate::runtime::image::manifest::sha256_digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        (digest, bytes.len())
    };
    let layer = b"not really a tar, the CLI does not look inside".to_vec();
    let (layer_digest, layer_size) = put(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let (config_digest, config_size) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{layer_size}}}]}}"#
    );
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size}}}]}}"#
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (layer_digest, (layer_size + config_size) as u64)
}

#[tokio::test]
async fn an_oci_layout_directory_is_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (layer_digest, total) = write_layout(dir.path());
    let image = LocalImage::open(dir.path(), "web:v1").await.unwrap();
    assert_eq!(image.blobs.len(), 2, "config and one layer");
    assert_eq!(image.blobs[1].0, layer_digest);
    assert_eq!(image.total_bytes(), total);
    assert_eq!(
        image.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[tokio::test]
async fn a_path_without_an_image_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = LocalImage::open(dir.path(), "web:v1")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("index.json"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}
