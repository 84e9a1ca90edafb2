//! Supplying the image before a deploy when no registry has it: build it (`cli::build`), take
//! it from an OCI layout or archive path (`haloy deploy --image-from PATH`) or from the local
//! Docker/Podman store, then upload it to each target's haloyd, sending only the blobs that
//! haloyd lacks (and resuming a blob an earlier upload left half-sent).
//!
//! What to do follows Haloy: an image that is built (`build: true`, `build_config`, or no
//! `repository`) goes to the server (`build_config.push: server`, the default without
//! `image.registry`) or to its registry (`push: registry`); `push: server` on an image that is
//! not built uploads it from the local store. An uploaded image is deployed with
//! `pull_policy: never`: haloyd has it and must not look for it in a registry.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::AsyncSeekExt;

use super::build::{BuildError, Builder};
use crate::api::client::{ApiClient, ClientError};
use crate::api::images::ImageAssembleRequest;
use crate::config::{PullPolicy, ResolvedApp, ResolvedImage};
use crate::runtime::image::archive::UnpackedArchive;
use crate::runtime::image::manifest::Manifest;
use crate::runtime::image::reference::ImageRef;
use crate::runtime::RuntimeError;

/// Attempts per blob when haloyd answers 409 (another upload of it running, or an offset to
/// resume from that changed).
const UPLOAD_ATTEMPTS: usize = 5;
/// Read size of the file stream sent as a request body: memory stays bounded by it.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("image source {}: {source}", path.display())]
    Source { path: PathBuf, source: RuntimeError },
    #[error("image source {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot read blob {digest} from {}: {source}", path.display())]
    Read {
        digest: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("uploading `{image}` to {server}: {source}")]
    Upload {
        image: String,
        server: String,
        source: ClientError,
    },
    #[error("haloyd refused blob {digest} read from {}: the file's bytes do not match its digest (the image source is corrupt: export or build it again)\n  {source}", path.display())]
    Corrupt {
        digest: String,
        path: PathBuf,
        source: ClientError,
    },
    #[error("cannot create a temp dir for the image export: {0}")]
    TempDir(std::io::Error),
}

/// How one app's image reaches its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Supply {
    /// haloyd pulls it from its registry (nothing to do here).
    Registry,
    /// Built here and pushed to its registry; haloyd pulls it.
    BuildAndPush,
    /// Built here and uploaded.
    BuildAndUpload,
    /// Uploaded from the local Docker/Podman store.
    UploadFromStore,
    /// Uploaded from an OCI layout directory or an OCI/docker archive.
    UploadFromPath(PathBuf),
}

/// What the deploy of `image` needs before haloyd can run it.
pub fn supply_for(image: &ResolvedImage, image_from: Option<&Path>) -> Supply {
    if let Some(path) = image_from {
        return Supply::UploadFromPath(path.to_path_buf());
    }
    let explicit_server =
        image.build_config.as_ref().and_then(|b| b.push.as_deref()) == Some("server");
    match (image.build, image.pushes_to_server()) {
        (true, true) => Supply::BuildAndUpload,
        (true, false) => Supply::BuildAndPush,
        (false, _) if explicit_server => Supply::UploadFromStore,
        (false, _) => Supply::Registry,
    }
}

/// One image as files on this machine: its manifest and where each blob is.
pub struct LocalImage {
    pub media_type: String,
    pub manifest_bytes: Vec<u8>,
    /// Config first, then layers: (digest, size, file).
    pub blobs: Vec<(String, u64, PathBuf)>,
    _source: UnpackedArchive,
}

impl LocalImage {
    /// Reads an OCI layout directory, an OCI archive or a `docker save` tar and picks the
    /// image named `name` in it (tag-only names such as umoci's count as `name`'s repository),
    /// or its only image; for an index, the linux/<this arch> manifest.
    pub async fn open(path: &Path, name: &str) -> Result<LocalImage, ImageError> {
        let source_error = |source| ImageError::Source {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason: String| ImageError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let unpacked = UnpackedArchive::open(path).await.map_err(source_error)?;
        let default_name = name.to_string();
        let (unpacked, images) = tokio::task::spawn_blocking(move || {
            let images = unpacked.images(Some(&default_name));
            (unpacked, images)
        })
        .await
        .map_err(|e| invalid(e.to_string()))?;
        let mut images = images.map_err(source_error)?;
        let wanted = ImageRef::parse(name)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| name.to_string());
        let position = match images.iter().position(|i| i.name == wanted) {
            Some(found) => found,
            None if images.len() == 1 => 0,
            None => {
                let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
                return Err(invalid(format!(
                    "has no image `{wanted}` (it holds {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        };
        let image = images.swap_remove(position);
        let manifest =
            Manifest::parse(&image.manifest_bytes).map_err(|reason| ImageError::Invalid {
                path: path.to_path_buf(),
                reason,
            })?;
        let mut blobs = Vec::new();
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let file = image
                .files
                .get(&descriptor.digest)
                .ok_or_else(|| ImageError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("blob {} is missing", descriptor.digest),
                })?;
            blobs.push((
                descriptor.digest.clone(),
                descriptor.size.max(0) as u64,
                file.clone(),
            ));
        }
        Ok(LocalImage {
            media_type: image.manifest.media_type.clone(),
            manifest_bytes: image.manifest_bytes,
            blobs,
            _source: unpacked,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, size, _)| size).sum()
    }
}

/// What one upload sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadReport {
    pub blobs_total: usize,
    pub blobs_sent: usize,
    /// Body bytes sent over the wire.
    pub bytes_sent: u64,
    /// Bytes of blobs haloyd had already (not sent).
    pub bytes_skipped: u64,
}

/// Uploads `image` to haloyd as `name`: asks which blobs it has, sends the others (a partial
/// one from where it stopped) and assembles the image record.
pub async fn upload(
    client: &ApiClient,
    image: &LocalImage,
    name: &str,
) -> Result<UploadReport, ImageError> {
    let upload_error = |source| ImageError::Upload {
        image: name.to_string(),
        server: client.url(),
        source,
    };
    let mut seen = HashSet::new();
    let blobs: Vec<&(String, u64, PathBuf)> = image
        .blobs
        .iter()
        .filter(|(d, _, _)| seen.insert(d.clone()))
        .collect();
    let digests: Vec<String> = blobs.iter().map(|(d, _, _)| d.clone()).collect();
    let check = client.check_layers(&digests).await.map_err(upload_error)?;
    let present: HashSet<&String> = check.exists.iter().collect();
    let mut resume: HashMap<String, u64> = check
        .partial
        .into_iter()
        .map(|p| (p.digest, p.offset))
        .collect();
    let mut report = UploadReport {
        blobs_total: blobs.len(),
        ..Default::default()
    };
    for (digest, size, file) in blobs {
        if present.contains(digest) {
            report.bytes_skipped += size;
            continue;
        }
        let offset = resume.remove(digest).unwrap_or(0);
        let sent = upload_blob(client, digest, *size, file, offset)
            .await
            .map_err(|e| match e {
                BlobFailure::Client(source) if source.status() == Some(422) => {
                    ImageError::Corrupt {
                        digest: digest.clone(),
                        path: file.clone(),
                        source,
                    }
                }
                BlobFailure::Client(source) => upload_error(source),
                BlobFailure::Image(e) => e,
            })?;
        report.blobs_sent += 1;
        report.bytes_sent += sent;
        report.bytes_skipped += size.saturating_sub(sent);
    }
    let manifest =
        String::from_utf8(image.manifest_bytes.clone()).map_err(|_| ImageError::Invalid {
            path: PathBuf::from(name),
            reason: "the manifest is not UTF-8 JSON".into(),
        })?;
    client
        .assemble_image(&ImageAssembleRequest {
            image_ref: name.to_string(),
            media_type: image.media_type.clone(),
            manifest,
        })
        .await
        .map_err(upload_error)?;
    Ok(report)
}

enum BlobFailure {
    Client(ClientError),
    Image(ImageError),
}

/// Sends one blob from `offset`; on 409 asks again where haloyd stands and resumes there.
/// Returns the bytes sent.
async fn upload_blob(
    client: &ApiClient,
    digest: &str,
    size: u64,
    file: &Path,
    mut offset: u64,
) -> Result<u64, BlobFailure> {
    let mut sent_total = 0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let counter = Arc::new(AtomicU64::new(0));
        let body = file_stream(file, digest, offset, counter.clone())
            .await
            .map_err(BlobFailure::Image)?;
        let result = client.upload_layer(digest, size, offset, body).await;
        sent_total += counter.load(Ordering::Relaxed);
        match result {
            Ok(_) => return Ok(sent_total),
            Err(e) if e.status() == Some(409) && attempt < UPLOAD_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(300 * attempt as u64)).await;
                let check = client
                    .check_layers(&[digest.to_string()])
                    .await
                    .map_err(BlobFailure::Client)?;
                if check.exists.iter().any(|d| d == digest) {
                    return Ok(sent_total);
                }
                offset = check
                    .partial
                    .iter()
                    .find(|p| p.digest == digest)
                    .map(|p| p.offset)
                    .unwrap_or(0);
            }
            Err(e) => return Err(BlobFailure::Client(e)),
        }
    }
}

/// The file from `offset` as a stream of chunks, counting the bytes read into `counter`.
async fn file_stream(
    path: &Path,
    digest: &str,
    offset: u64,
    counter: Arc<AtomicU64>,
) -> Result<
    impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    ImageError,
> {
    let read_error = |source| ImageError::Read {
        digest: digest.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(read_error)?;
    Ok(
        tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }),
    )
}

/// Makes every app's image available to its server as its `Supply` says; uploaded images are
/// switched to `pull_policy: never`. Builds, exports and uploads happen once per image (and
/// once per server for uploads).
pub async fn supply_all(
    config_file: &Path,
    image_from: Option<&Path>,
    apps: Vec<(&mut ResolvedApp, &ApiClient)>,
) -> Result<(), ImageError> {
    let config_dir = config_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut prepared: HashMap<String, Arc<LocalImage>> = HashMap::new();
    let mut built: HashSet<String> = HashSet::new();
    let mut uploaded: HashSet<(String, String)> = HashSet::new();
    let mut exports: Vec<tempfile::TempDir> = Vec::new();
    for (app, client) in apps {
        let supply = supply_for(&app.image, image_from);
        let reference = image_name(&app.image);
        let local = match &supply {
            Supply::Registry => continue,
            Supply::BuildAndPush => {
                if built.insert(reference.clone()) {
                    let builder = Builder::detect(&reference).await?;
                    builder.build(&app.image, &reference, &config_dir).await?;
                    builder.push(&app.image, &reference).await?;
                }
                continue;
            }
            Supply::UploadFromPath(path) => match prepared.get(&reference) {
                Some(image) => image.clone(),
                None => Arc::new(LocalImage::open(path, &reference).await?),
            },
            Supply::BuildAndUpload | Supply::UploadFromStore => match prepared.get(&reference) {
                Some(image) => image.clone(),
                None => {
                    let builder = Builder::detect(&reference).await?;
                    if supply == Supply::BuildAndUpload {
                        builder.build(&app.image, &reference, &config_dir).await?;
                    }
                    let dir = tempfile::Builder::new()
                        .prefix("haloy-image-")
                        .tempdir()
                        .map_err(ImageError::TempDir)?;
                    let archive = dir.path().join("image.tar");
                    builder.export(&reference, &archive).await?;
                    let image = Arc::new(LocalImage::open(&archive, &reference).await?);
                    exports.push(dir);
                    image
                }
            },
        };
        prepared.insert(reference.clone(), local.clone());
        if uploaded.insert((client.url(), reference.clone())) {
            println!(
                "[{}] uploading {reference} ({} blobs, {} bytes) to {}",
                app.label(),
                local.blobs.len(),
                local.total_bytes(),
                client.url()
            );
            let report = upload(client, &local, &reference).await?;
            println!(
                "[{}] upload: sent {} of {} blobs, {} bytes sent, {} bytes already on the server",
                app.label(),
                report.blobs_sent,
                report.blobs_total,
                report.bytes_sent,
                report.bytes_skipped
            );
        }
        app.image.pull_policy = PullPolicy::Never;
        // The uploaded image is named by its tag; a pinned digest would name another image.
        app.image.digest = None;
    }
    Ok(())
}

/// `repository:tag`, the name the image is built, uploaded and deployed under.
fn image_name(image: &ResolvedImage) -> String {
    format!("{}:{}", image.repository, image.tag)
}

#[cfg(test)]
#[path = "tests/images.rs"]
mod tests;
