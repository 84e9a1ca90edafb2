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
use containerd_client::services::v1::{
    AbortRequest, CreateRequest, DeleteRequest, StatusRequest, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use super::super::{Containerd, ImageInfo, RuntimeError};
use super::manifest::{sha256_digest, Descriptor, Manifest};
use super::{content, BlobSource, ImageStore, PullReport};

/// Size of the data messages sent to Content.Write (as for pulls).
const WRITE_CHUNK: usize = 1 << 20;
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
        let Some(mut writer) = IngestWriter::open(&self.client, digest, size).await? else {
            return Ok(BlobUploaded { written: 0 });
        };
        if writer.offset != offset {
            return Err(UploadError::OffsetMismatch {
                digest: digest.to_string(),
                requested: offset,
                held: writer.offset,
            });
        }
        let written = writer.copy_from(body).await?;
        match writer.commit().await {
            Ok(()) => {
                tracing::info!(digest, size, written, "uploaded blob committed");
                Ok(BlobUploaded { written })
            }
            Err(UploadError::Corrupt { digest, reason }) => {
                self.abort_ingest(&digest).await;
                tracing::warn!(%digest, %reason, "uploaded blob refused");
                Err(UploadError::Corrupt { digest, reason })
            }
            Err(other) => Err(other),
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

/// One Content.Write stream under a blob's upload ref, used in lock-step.
struct IngestWriter<'a> {
    client: &'a Containerd,
    digest: String,
    total: i64,
    reference: String,
    offset: u64,
    requests: mpsc::Sender<WriteContentRequest>,
    responses: Streaming<WriteContentResponse>,
}

impl<'a> IngestWriter<'a> {
    /// Opens (or resumes) the ingest; `None` when the blob is committed already.
    async fn open(
        client: &'a Containerd,
        digest: &str,
        size: u64,
    ) -> Result<Option<IngestWriter<'a>>, UploadError> {
        let reference = ingest_ref(digest);
        let total = size as i64;
        let (requests, receiver) = mpsc::channel(2);
        // The call returns once containerd answered the first message: queue it first.
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total,
            expected: digest.to_string(),
            ..Default::default()
        };
        let _ = requests.send(stat).await;
        let lease = lease_id(digest);
        let mut service = client.content();
        let call = service.write(client.request_with_lease(ReceiverStream::new(receiver), &lease));
        let busy = || UploadError::Busy {
            digest: digest.to_string(),
        };
        let mut responses = match call.await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::AlreadyExists => return Ok(None),
            Err(status) if status.code() == Code::Unavailable => return Err(busy()),
            Err(status) => return Err(client.rpc_error("Content.Write", status).into()),
        };
        let offset = match responses.message().await {
            Ok(Some(stat)) => stat.offset.max(0) as u64,
            Ok(None) => 0,
            Err(status) if status.code() == Code::AlreadyExists => return Ok(None),
            Err(status) if status.code() == Code::Unavailable => return Err(busy()),
            Err(status) => return Err(client.rpc_error("Content.Write", status).into()),
        };
        Ok(Some(IngestWriter {
            client,
            digest: digest.to_string(),
            total,
            reference,
            offset,
            requests,
            responses,
        }))
    }

    /// Writes the body in chunks of at most `WRITE_CHUNK`, one in flight at a time, so memory
    /// stays bounded whatever the blob's size.
    async fn copy_from<S>(&mut self, mut body: S) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let mut buffer = Vec::with_capacity(WRITE_CHUNK);
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    // What arrived is kept for a resume.
                    if !buffer.is_empty() {
                        self.send_data(std::mem::take(&mut buffer)).await?;
                    }
                    return Err(UploadError::Interrupted {
                        digest: self.digest.clone(),
                        received: self.offset,
                        reason: e.to_string(),
                    });
                }
            };
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let take = (WRITE_CHUNK - buffer.len()).min(rest.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buffer.len() == WRITE_CHUNK {
                    written += self.send_data(std::mem::take(&mut buffer)).await?;
                    buffer.reserve(WRITE_CHUNK);
                }
            }
        }
        if !buffer.is_empty() {
            written += self.send_data(buffer).await?;
        }
        Ok(written)
    }

    async fn send_data(&mut self, data: Vec<u8>) -> Result<u64, UploadError> {
        let len = data.len() as u64;
        let request = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            offset: self.offset as i64,
            data,
            ..Default::default()
        };
        self.exchange(request, "Content.Write").await?;
        self.offset += len;
        Ok(len)
    }

    async fn commit(&mut self) -> Result<(), UploadError> {
        let request = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: self.total,
            expected: self.digest.clone(),
            offset: self.offset as i64,
            ..Default::default()
        };
        match self.exchange(request, "Content.Commit").await {
            Ok(()) => Ok(()),
            // containerd refuses a wrong digest or size with FailedPrecondition or
            // InvalidArgument; both mean the bytes are not the blob named.
            Err(UploadError::Runtime(RuntimeError::Rpc {
                code: Code::FailedPrecondition | Code::InvalidArgument,
                message,
                ..
            })) => Err(UploadError::Corrupt {
                digest: self.digest.clone(),
                reason: message,
            }),
            Err(other) => Err(other),
        }
    }

    async fn exchange(
        &mut self,
        request: WriteContentRequest,
        operation: &'static str,
    ) -> Result<(), UploadError> {
        // A closed stream shows in the response's status below.
        let _ = self.requests.send(request).await;
        match self.responses.message().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(RuntimeError::Rpc {
                operation,
                code: Code::Aborted,
                message: format!("containerd ended the write of {} early", self.digest),
            }
            .into()),
            // Committed meanwhile by another upload of the same blob: done.
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(self.client.rpc_error(operation, status).into()),
        }
    }
}

#[cfg(test)]
#[path = "tests/upload.rs"]
mod tests;
