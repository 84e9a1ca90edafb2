//! Images in containerd: reference parsing, client-side registry pulls into the content store
//! under a lease, GC labels, image records, unpacking into the overlayfs snapshotter, archive
//! import and removal of images an app no longer keeps.
//!
//! A pull writes blobs and snapshots under a lease and creates the image record last, so a
//! failed or interrupted pull leaves nothing behind that a later deploy could trip over: the
//! lease is deleted (or expires) and containerd's GC takes what it held.

pub mod archive;
pub mod content;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod unpack;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use containerd_client::types::Descriptor as ProtoDescriptor;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tonic::Code;

use super::{labels, Containerd, ImageInfo, ImageRequest, PullPolicy, RuntimeError, SNAPSHOTTER};
use content::Lease;
use manifest::{Descriptor, ImageConfigFile, Manifest};
use reference::ImageRef;
use registry::RegistrySession;

/// Layers downloaded at the same time during a pull.
const PARALLEL_LAYER_DOWNLOADS: usize = 3;

/// What one `ensure`/`import` transferred (all zero when everything was cached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Blobs written into the content store.
    pub blobs_fetched: usize,
    /// Bytes written into the content store.
    pub bytes_fetched: u64,
    /// Layers applied into new snapshots.
    pub layers_unpacked: usize,
}

/// Image operations on one containerd namespace.
#[derive(Clone, Debug)]
pub struct ImageStore {
    client: Containerd,
    insecure_registries: Vec<String>,
    total_bytes_fetched: Arc<AtomicU64>,
}

/// Where the blobs of an image come from while it is stored.
enum BlobSource<'a> {
    Registry(&'a RegistrySession),
    /// Files of an unpacked archive, by digest.
    Files(&'a HashMap<String, PathBuf>),
    /// Blobs the CLI uploaded into the content store beforehand: nothing to fetch.
    Uploaded,
}

impl BlobSource<'_> {
    async fn open(
        &self,
        descriptor: &Descriptor,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, RuntimeError> {
        match self {
            BlobSource::Registry(session) => Ok(session.blob(descriptor).await?.boxed()),
            BlobSource::Files(files) => {
                let path =
                    files
                        .get(&descriptor.digest)
                        .ok_or_else(|| RuntimeError::InvalidImage {
                            reference: descriptor.digest.clone(),
                            reason: format!("the archive has no blob {}", descriptor.digest),
                        })?;
                let file =
                    tokio::fs::File::open(path)
                        .await
                        .map_err(|source| RuntimeError::Io {
                            path: path.clone(),
                            source,
                        })?;
                Ok(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).boxed())
            }
            BlobSource::Uploaded => Err(RuntimeError::InvalidImage {
                reference: descriptor.digest.clone(),
                reason: format!("blob {} was not uploaded", descriptor.digest),
            }),
        }
    }
}

impl ImageStore {
    pub fn new(client: Containerd, insecure_registries: Vec<String>) -> ImageStore {
        ImageStore {
            client,
            insecure_registries,
            total_bytes_fetched: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes written into the content store by this store since it was created.
    pub fn total_bytes_fetched(&self) -> u64 {
        self.total_bytes_fetched.load(Ordering::Relaxed)
    }

    /// Makes the image present and unpacked according to the pull policy; records the app.
    pub async fn ensure(
        &self,
        req: &ImageRequest,
    ) -> Result<(ImageInfo, PullReport), RuntimeError> {
        let image = ImageRef::parse(&req.reference)?;
        let name = image.to_string();
        let (info, report) = match req.pull_policy {
            PullPolicy::Never => match self.local(&name).await? {
                Some(found) => found,
                None => return Err(RuntimeError::ImageNotPresent { reference: name }),
            },
            PullPolicy::IfMissing => match self.local(&name).await? {
                Some(found) => found,
                None => self.pull(&image, req).await?,
            },
            PullPolicy::Always => self.pull(&image, req).await?,
        };
        if let Some(app) = &req.app {
            self.label_app(&info.name, app).await?;
        }
        self.total_bytes_fetched
            .fetch_add(report.bytes_fetched, Ordering::Relaxed);
        tracing::info!(
            image = %info.name,
            digest = %info.digest,
            bytes_fetched = report.bytes_fetched,
            layers_unpacked = report.layers_unpacked,
            "image ready"
        );
        Ok((info, report))
    }

    /// Resolves the reference at the registry; downloads only when the manifest digest differs
    /// from the local image's.
    async fn pull(
        &self,
        image: &ImageRef,
        req: &ImageRequest,
    ) -> Result<(ImageInfo, PullReport), RuntimeError> {
        let name = image.to_string();
        let session =
            RegistrySession::open(image, req.credentials.as_ref(), &self.insecure_registries)
                .await?;
        let resolved = session.resolve().await?;
        if let Some(found) = self.local_with_digest(&name, &resolved.digest).await? {
            tracing::debug!(image = %name, digest = %resolved.digest, "image unchanged at the registry");
            return Ok(found);
        }
        let descriptor = Descriptor {
            media_type: resolved.media_type.clone(),
            digest: resolved.digest.clone(),
            size: resolved.bytes.len() as i64,
            platform: None,
            annotations: Default::default(),
        };
        let source = BlobSource::Registry(&session);
        self.store_under_lease(&name, &source, &descriptor, resolved.bytes)
            .await
    }

    /// Stores one image (its manifest given) under a fresh lease; the lease goes away at the
    /// end, synchronously collecting everything when the store failed.
    async fn store_under_lease(
        &self,
        name: &str,
        source: &BlobSource<'_>,
        manifest: &Descriptor,
        manifest_bytes: Vec<u8>,
    ) -> Result<(ImageInfo, PullReport), RuntimeError> {
        let lease = Lease::create(&self.client, "pull").await?;
        let mut report = PullReport::default();
        let result = self
            .store_image(&lease, name, source, manifest, manifest_bytes, &mut report)
            .await;
        let cleanup = lease.delete(result.is_err()).await;
        let info = result?;
        cleanup?;
        Ok((info, report))
    }

    async fn store_image(
        &self,
        lease: &Lease,
        name: &str,
        source: &BlobSource<'_>,
        manifest_desc: &Descriptor,
        manifest_bytes: Vec<u8>,
        report: &mut PullReport,
    ) -> Result<ImageInfo, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidImage {
            reference: name.to_string(),
            reason,
        };
        let manifest = Manifest::parse(&manifest_bytes).map_err(invalid)?;
        let config_bytes = self
            .small_blob(lease, source, &manifest.config, report)
            .await?;
        let config = ImageConfigFile::parse(&config_bytes).map_err(invalid)?;
        let chain_ids = config.chain_ids();
        let top = chain_ids
            .last()
            .cloned()
            .ok_or_else(|| invalid("the image config lists no layers".to_string()))?;
        self.ensure_layers(lease, source, &manifest.layers, report)
            .await?;
        content::set_labels(
            &self.client,
            &manifest.config.digest,
            config_gc_labels(&top),
        )
        .await?;
        self.write_blob(lease, &manifest_desc.digest, manifest_bytes, report)
            .await?;
        content::set_labels(
            &self.client,
            &manifest_desc.digest,
            manifest_gc_labels(&manifest),
        )
        .await?;
        report.layers_unpacked += unpack::unpack(
            &self.client,
            lease,
            name,
            &manifest.layers,
            &config.rootfs.diff_ids,
            &chain_ids,
        )
        .await?;
        self.put_image_record(name, manifest_desc).await?;
        Ok(ImageInfo {
            name: name.to_string(),
            digest: manifest_desc.digest.clone(),
            config: config.image_config(),
            chain_id: top,
        })
    }

    /// Reads a small blob (config) from containerd, or fetches and stores it first.
    async fn small_blob(
        &self,
        lease: &Lease,
        source: &BlobSource<'_>,
        descriptor: &Descriptor,
        report: &mut PullReport,
    ) -> Result<Vec<u8>, RuntimeError> {
        if content::exists(&self.client, &descriptor.digest).await? {
            lease.add_content(&self.client, &descriptor.digest).await?;
            return content::read(&self.client, &descriptor.digest).await;
        }
        let mut stream = source.open(descriptor).await?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RuntimeError::InvalidImage {
                reference: descriptor.digest.clone(),
                reason: format!("reading blob {}: {e}", descriptor.digest),
            })?;
            data.extend_from_slice(&chunk);
        }
        // containerd verifies the digest on commit, before anything parses the bytes.
        self.write_blob(lease, &descriptor.digest, data.clone(), report)
            .await?;
        Ok(data)
    }

    async fn write_blob(
        &self,
        lease: &Lease,
        digest: &str,
        data: Vec<u8>,
        report: &mut PullReport,
    ) -> Result<(), RuntimeError> {
        let written = content::write_bytes(&self.client, lease, digest, data).await?;
        if written == 0 {
            lease.add_content(&self.client, digest).await?;
        } else {
            report.blobs_fetched += 1;
            report.bytes_fetched += written;
        }
        Ok(())
    }

    /// Streams the layers into containerd, a few at a time, except those it has already.
    async fn ensure_layers(
        &self,
        lease: &Lease,
        source: &BlobSource<'_>,
        layers: &[Descriptor],
        report: &mut PullReport,
    ) -> Result<(), RuntimeError> {
        // Futures collected first: a mapping closure inside the stream trips rustc's Send
        // inference for the async-trait future.
        let pending: Vec<_> = layers
            .iter()
            .map(|layer| self.ensure_blob(lease, source, layer))
            .collect();
        let mut transfers =
            futures_util::stream::iter(pending).buffer_unordered(PARALLEL_LAYER_DOWNLOADS);
        while let Some(written) = transfers.next().await {
            if let Some(bytes) = written? {
                report.blobs_fetched += 1;
                report.bytes_fetched += bytes;
            }
        }
        Ok(())
    }

    /// Streams one blob into containerd unless it is there already; returns the bytes
    /// written, `None` when nothing was transferred.
    async fn ensure_blob(
        &self,
        lease: &Lease,
        source: &BlobSource<'_>,
        descriptor: &Descriptor,
    ) -> Result<Option<u64>, RuntimeError> {
        if content::exists(&self.client, &descriptor.digest).await? {
            lease.add_content(&self.client, &descriptor.digest).await?;
            return Ok(None);
        }
        let stream = source.open(descriptor).await?;
        let written = content::write_stream(
            &self.client,
            lease,
            &descriptor.digest,
            descriptor.size,
            stream,
        )
        .await?;
        Ok((written > 0).then_some(written))
    }

    /// Creates the image record, or points an existing one at the new manifest (keeping its
    /// labels, e.g. the apps using it).
    async fn put_image_record(
        &self,
        name: &str,
        manifest: &Descriptor,
    ) -> Result<(), RuntimeError> {
        let image = Image {
            name: name.to_string(),
            target: Some(ProtoDescriptor {
                media_type: manifest.media_type.clone(),
                digest: manifest.digest.clone(),
                size: manifest.size,
                annotations: HashMap::new(),
            }),
            ..Default::default()
        };
        let create = self.client.request(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        });
        match self.client.images().create(create).await {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(self.client.rpc_error("Images.Create", status)),
        }
        let update = self.client.request(UpdateImageRequest {
            image: Some(image),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["target".to_string()],
            }),
            source_date_epoch: None,
        });
        self.client
            .images()
            .update(update)
            .await
            .map_err(|s| self.client.rpc_error("Images.Update", s))?;
        Ok(())
    }

    async fn get_image(&self, name: &str) -> Result<Option<Image>, RuntimeError> {
        let request = self.client.request(GetImageRequest {
            name: name.to_string(),
        });
        match self.client.images().get(request).await {
            Ok(response) => Ok(response.into_inner().image),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(self.client.rpc_error("Images.Get", status)),
        }
    }

    /// The local image `name`, unpacked, if it and all its content are present.
    async fn local(&self, name: &str) -> Result<Option<(ImageInfo, PullReport)>, RuntimeError> {
        let Some(image) = self.get_image(name).await? else {
            return Ok(None);
        };
        let Some(target) = image.target else {
            return Ok(None);
        };
        self.load_local(name, &target).await
    }

    /// The local image `name` if its record points at `digest`.
    async fn local_with_digest(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<Option<(ImageInfo, PullReport)>, RuntimeError> {
        match self.get_image(name).await? {
            Some(Image {
                target: Some(target),
                ..
            }) if target.digest == digest => self.load_local(name, &target).await,
            _ => Ok(None),
        }
    }

    /// Reads manifest and config from the content store and makes sure the layers are
    /// unpacked; `None` when some content is missing (the caller pulls again).
    async fn load_local(
        &self,
        name: &str,
        target: &ProtoDescriptor,
    ) -> Result<Option<(ImageInfo, PullReport)>, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidImage {
            reference: name.to_string(),
            reason,
        };
        if !content::exists(&self.client, &target.digest).await? {
            return Ok(None);
        }
        let manifest = Manifest::parse(&content::read(&self.client, &target.digest).await?)
            .map_err(invalid)?;
        if !content::exists(&self.client, &manifest.config.digest).await? {
            return Ok(None);
        }
        let config_bytes = content::read(&self.client, &manifest.config.digest).await?;
        let config = ImageConfigFile::parse(&config_bytes).map_err(invalid)?;
        let chain_ids = config.chain_ids();
        let Some(top) = chain_ids.last().cloned() else {
            return Err(invalid("the image config lists no layers".to_string()));
        };
        let mut report = PullReport::default();
        if !unpack::snapshot_exists(&self.client, &top).await? {
            for layer in &manifest.layers {
                if !content::exists(&self.client, &layer.digest).await? {
                    return Ok(None);
                }
            }
            let lease = Lease::create(&self.client, "unpack").await?;
            let result = unpack::unpack(
                &self.client,
                &lease,
                name,
                &manifest.layers,
                &config.rootfs.diff_ids,
                &chain_ids,
            )
            .await;
            let cleanup = lease.delete(result.is_err()).await;
            report.layers_unpacked = result?;
            cleanup?;
        }
        let info = ImageInfo {
            name: name.to_string(),
            digest: target.digest.clone(),
            config: config.image_config(),
            chain_id: top,
        };
        Ok(Some((info, report)))
    }

    /// Marks image `name` as used by `app`.
    async fn label_app(&self, name: &str, app: &str) -> Result<(), RuntimeError> {
        let key = format!("{}{app}", labels::IMAGE_APP_PREFIX);
        self.update_image_label(name, &key, Some("true")).await
    }

    /// Sets (`Some`) or removes (`None`) one label of an image record.
    async fn update_image_label(
        &self,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let mut labels = HashMap::new();
        if let Some(value) = value {
            labels.insert(key.to_string(), value.to_string());
        }
        let request = self.client.request(UpdateImageRequest {
            image: Some(Image {
                name: name.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{key}")],
            }),
            source_date_epoch: None,
        });
        self.client
            .images()
            .update(request)
            .await
            .map_err(|s| self.client.rpc_error("Images.Update", s))?;
        Ok(())
    }

    /// Deletes the app's images that are not in `keep`. An image another app also uses only
    /// loses this app's mark. containerd's GC then drops unreferenced content and snapshots.
    pub async fn remove_unused(&self, app: &str, keep: &[String]) -> Result<(), RuntimeError> {
        let keep: HashSet<String> = keep.iter().map(|k| normalize_name(k)).collect();
        let key = format!("{}{app}", labels::IMAGE_APP_PREFIX);
        let images = self
            .client
            .images()
            .list(self.client.request(ListImagesRequest::default()))
            .await
            .map_err(|s| self.client.rpc_error("Images.List", s))?
            .into_inner()
            .images;
        for image in images {
            if !image.labels.contains_key(&key) || keep.contains(&image.name) {
                continue;
            }
            let used_by_others = image
                .labels
                .keys()
                .any(|k| k.starts_with(labels::IMAGE_APP_PREFIX) && *k != key);
            if used_by_others {
                self.update_image_label(&image.name, &key, None).await?;
            } else {
                self.delete_image(&image.name).await?;
            }
        }
        Ok(())
    }

    /// Deletes an image record (idempotent) and waits for the GC it triggers.
    pub async fn delete_image(&self, name: &str) -> Result<(), RuntimeError> {
        let request = self.client.request(DeleteImageRequest {
            name: name.to_string(),
            sync: true,
            target: None,
        });
        match self.client.images().delete(request).await {
            Ok(_) => {
                tracing::info!(image = name, "image removed");
                Ok(())
            }
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(self.client.rpc_error("Images.Delete", status)),
        }
    }

    /// Imports an OCI image archive (oci-layout tar) or a `docker save` tar. Images without a
    /// full name in the archive are named `default_name` (a tag-only name is appended to it).
    pub async fn import_archive(
        &self,
        path: &std::path::Path,
        default_name: Option<&str>,
    ) -> Result<Vec<(ImageInfo, PullReport)>, RuntimeError> {
        let unpacked = archive::UnpackedArchive::open(path).await?;
        let default_name = default_name.map(str::to_string);
        // Hashing docker-save layers reads whole files: keep it off the async workers.
        let (unpacked, entries) = tokio::task::spawn_blocking(move || {
            let entries = unpacked.images(default_name.as_deref());
            (unpacked, entries)
        })
        .await
        .map_err(|e| RuntimeError::Archive {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut imported = Vec::new();
        for entry in entries? {
            let source = BlobSource::Files(&entry.files);
            let found = self
                .store_under_lease(
                    &entry.name,
                    &source,
                    &entry.manifest,
                    entry.manifest_bytes.clone(),
                )
                .await?;
            imported.push(found);
        }
        drop(unpacked);
        Ok(imported)
    }
}

/// Normalizes a user-written image name for comparison; unparsable names stay as they are.
fn normalize_name(name: &str) -> String {
    ImageRef::parse(name)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| name.to_string())
}

/// Keeps the unpacked rootfs alive as long as the config blob is.
fn config_gc_labels(top_chain_id: &str) -> HashMap<String, String> {
    HashMap::from([(
        format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
        top_chain_id.to_string(),
    )])
}

/// Keeps config and layers alive as long as the manifest is.
fn manifest_gc_labels(manifest: &Manifest) -> HashMap<String, String> {
    let mut labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        manifest.config.digest.clone(),
    )]);
    for (i, layer) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    labels
}

/// Installs rustls' ring provider as the process default once (oci-client's reqwest is built
/// without a provider of its own).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
