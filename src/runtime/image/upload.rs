//! Images uploaded by the CLI (deploy without a registry): which blobs containerd's content
//! store has, streaming one blob into it (resumable by offset, verified against its digest on
//! commit), and assembling the uploaded blobs into an image record.
//!
//! Each blob is written under a ref and a lease named after its digest, so an interrupted
//! upload is resumed where containerd's ingest stopped, and blobs uploaded but never assembled
//! (or half-written ingests) are collected once the lease expires. A blob whose bytes do not
//! match its digest is refused and its ingest aborted: nothing of it stays.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containerd_client::services::v1::{AbortRequest, CreateRequest, DeleteRequest, StatusRequest};
use futures_util::Stream;
use tonic::Code;

use super::super::{ImageInfo, RuntimeError};
use super::content::{WriteError, WriteStream};
use super::manifest::{sha256_digest, Descriptor, Manifest};
use super::{content, BlobSource, ImageStore, PullReport};

/// Uploaded blobs not assembled into an image within this time are collected.
const UPLOAD_LEASE_EXPIRY: Duration = Duration::from_secs(3600);

/// Errors of blob uploads; each says what the uploader can do about it.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("`{0}` is not a blob digest (expected sha256: and 64 lowercase hex digits)")]
    InvalidDigest(String),
    #[error("blob {digest}: the upload starts at byte {requested}, but the server holds {held} bytes of it; resume from {held}")]
    OffsetMismatch {
        digest: String,
        requested: u64,
        held: u64,
    },
    #[error("blob {digest} is being uploaded by another request right now; retry when it ended")]
    Busy { digest: String },
    #[error("blob {digest} was refused: the bytes received do not match its digest or size ({reason}); nothing of it was kept")]
    Corrupt { digest: String, reason: String },
    #[error("blob {digest}: the upload ended after {received} bytes ({reason}); the bytes received are kept, upload again to resume")]
    Interrupted {
        digest: String,
        received: u64,
        reason: String,
    },
    #[error("image `{name}`: {reason}")]
    Assemble { name: String, reason: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What the server holds of one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Committed in the content store.
    Present,
    /// An interrupted upload left this many bytes; the next one resumes there.
    Partial {
        offset: u64,
    },
    Missing,
}

/// The outcome of one blob upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobUploaded {
    /// Bytes of the request body written into the content store (0 when the blob was there).
    pub written: u64,
}

/// Checks the `sha256:<64 hex>` form: the digest names refs, leases and paths.
pub fn check_digest(digest: &str) -> Result<(), UploadError> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if valid {
        Ok(())
    } else {
        Err(UploadError::InvalidDigest(digest.to_string()))
    }
}

fn ingest_ref(digest: &str) -> String {
    format!("haloy-upload-{digest}")
}

fn lease_id(digest: &str) -> String {
    format!("haloy-upload-{}", digest.trim_start_matches("sha256:"))
}

impl ImageStore {
    /// What containerd holds of each digest.
    pub async fn blob_states(&self, digests: &[String]) -> Result<Vec<BlobState>, UploadError> {
        let mut states = Vec::with_capacity(digests.len());
        for digest in digests {
            check_digest(digest)?;
            states.push(self.blob_state(digest).await?);
        }
        Ok(states)
    }

    async fn blob_state(&self, digest: &str) -> Result<BlobState, UploadError> {
        if content::exists(&self.client, digest).await? {
            return Ok(BlobState::Present);
        }
        let request = self.client.request(StatusRequest {
            r#ref: ingest_ref(digest),
        });
        match self.client.content().status(request).await {
            Ok(response) => {
                let offset = response
                    .into_inner()
                    .status
                    .map(|s| s.offset.max(0) as u64)
                    .unwrap_or(0);
                Ok(if offset > 0 {
                    BlobState::Partial { offset }
                } else {
                    BlobState::Missing
                })
            }
            Err(status) if status.code() == Code::NotFound => Ok(BlobState::Missing),
            Err(status) => Err(self.client.rpc_error("Content.Status", status).into()),
        }
    }

    /// Streams `body` into the content store as bytes `offset..size` of blob `digest`, then
    /// commits it: containerd verifies size and digest (over the resumed bytes too). A
    /// mismatch aborts the ingest; a body that ends early keeps what arrived for a resume.
    pub async fn upload_blob<S>(
        &self,
        digest: &str,
        size: u64,
        offset: u64,
        body: S,
    ) -> Result<BlobUploaded, UploadError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        check_digest(digest)?;
        if content::exists(&self.client, digest).await? {
            return Ok(BlobUploaded { written: 0 });
        }
        self.ensure_upload_lease(digest).await?;
        let opened = WriteStream::open(
            &self.client,
            &lease_id(digest),
            ingest_ref(digest),
            digest,
            size as i64,
        )
        .await;
        let mut writer = match opened {
            Ok(writer) => writer,
            Err(WriteError::Exists) => return Ok(BlobUploaded { written: 0 }),
            Err(e) => return Err(self.upload_error(e, digest, 0)),
        };
        if writer.offset != offset {
            return Err(UploadError::OffsetMismatch {
                digest: digest.to_string(),
                requested: offset,
                held: writer.offset,
            });
        }
        let written = match writer.copy_from(body).await {
            Ok(written) => written,
            // Committed meanwhile by another upload of the same blob: done.
            Err(WriteError::Exists) => return Ok(BlobUploaded { written: 0 }),
            Err(e) => return Err(self.upload_error(e, digest, writer.offset)),
        };
        match writer.commit().await {
            Ok(()) | Err(WriteError::Exists) => {
                tracing::info!(digest, size, written, "uploaded blob committed");
                Ok(BlobUploaded { written })
            }
            // containerd refuses a wrong digest or size with FailedPrecondition or
            // InvalidArgument; both mean the bytes are not the blob named.
            Err(WriteError::Status { status, .. })
                if matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::InvalidArgument
                ) =>
            {
                let reason = status.message().to_string();
                self.abort_ingest(digest).await;
                tracing::warn!(%digest, %reason, "uploaded blob refused");
                Err(UploadError::Corrupt {
                    digest: digest.to_string(),
                    reason,
                })
            }
            Err(e) => Err(self.upload_error(e, digest, writer.offset)),
        }
    }

    /// What the uploader is told about a write that stopped after `received` bytes.
    fn upload_error(&self, error: WriteError, digest: &str, received: u64) -> UploadError {
        match error {
            WriteError::Source(e) => UploadError::Interrupted {
                digest: digest.to_string(),
                received,
                reason: e.to_string(),
            },
            // Another stream holds the ingest's ref.
            WriteError::Status { status, .. } if status.code() == Code::Unavailable => {
                UploadError::Busy {
                    digest: digest.to_string(),
                }
            }
            other => other.into_runtime(&self.client, digest).into(),
        }
    }

    /// Removes a refused ingest and its lease, so nothing of the blob stays.
    async fn abort_ingest(&self, digest: &str) {
        let abort = self.client.request(AbortRequest {
            r#ref: ingest_ref(digest),
        });
        if let Err(status) = self.client.content().abort(abort).await {
            if status.code() != Code::NotFound {
                tracing::warn!(digest, error = %status.message(), "could not abort a refused upload");
            }
        }
        self.delete_upload_lease(digest).await;
    }

    /// The lease the blob's ingest and content live under until an image references them.
    async fn ensure_upload_lease(&self, digest: &str) -> Result<(), UploadError> {
        let expire = crate::timefmt::rfc3339(SystemTime::now() + UPLOAD_LEASE_EXPIRY);
        let mut labels = HashMap::new();
        if !expire.is_empty() {
            labels.insert("containerd.io/gc.expire".to_string(), expire);
        }
        let request = self.client.request(CreateRequest {
            id: lease_id(digest),
            labels,
        });
        match self.client.leases().create(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(self.client.rpc_error("Leases.Create", status).into()),
        }
    }

    async fn delete_upload_lease(&self, digest: &str) {
        let request = self.client.request(DeleteRequest {
            id: lease_id(digest),
            sync: false,
        });
        if let Err(status) = self.client.leases().delete(request).await {
            if status.code() != Code::NotFound {
                tracing::warn!(digest, error = %status.message(), "could not delete an upload lease");
            }
        }
    }

    /// Makes image `name` from an uploaded manifest whose config and layers are all in the
    /// content store: stores the manifest, unpacks, creates or updates the image record, and
    /// hands the blobs from their upload leases to the image.
    pub async fn assemble_uploaded(
        &self,
        name: &str,
        media_type: &str,
        manifest_bytes: Vec<u8>,
    ) -> Result<(ImageInfo, PullReport), UploadError> {
        let reference = super::reference::ImageRef::parse(name)?;
        let name = reference.to_string();
        let manifest =
            Manifest::parse(&manifest_bytes).map_err(|reason| UploadError::Assemble {
                name: name.clone(),
                reason,
            })?;
        let blobs: Vec<String> = std::iter::once(manifest.config.digest.clone())
            .chain(manifest.layers.iter().map(|l| l.digest.clone()))
            .collect();
        let mut missing = Vec::new();
        for digest in &blobs {
            check_digest(digest)?;
            if !content::exists(&self.client, digest).await? {
                missing.push(digest.clone());
            }
        }
        if !missing.is_empty() {
            return Err(UploadError::Assemble {
                name,
                reason: format!(
                    "the server lacks blobs {}: upload them first",
                    missing.join(", ")
                ),
            });
        }
        let descriptor = Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(&manifest_bytes),
            size: manifest_bytes.len() as i64,
            platform: None,
            annotations: Default::default(),
        };
        let found = self
            .store_under_lease(&name, &BlobSource::Uploaded, &descriptor, manifest_bytes)
            .await?;
        for digest in &blobs {
            self.delete_upload_lease(digest).await;
        }
        tracing::info!(image = %name, digest = %descriptor.digest, "uploaded image assembled");
        Ok(found)
    }
}

#[cfg(test)]
#[path = "tests/upload.rs"]
mod tests;
