//! containerd's content store and leases as the image code uses them: blob existence, reads,
//! streamed writes (Content.Write is a bidirectional stream), label updates, and the lease that
//! keeps a pull's blobs and snapshots alive until the image record references them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest, DeleteRequest, Info, InfoRequest, ReadContentRequest,
    Resource, UpdateRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use super::super::{Containerd, RuntimeError};

/// Size of the data messages sent to Content.Write (well under containerd's 16 MiB limit).
pub(super) const WRITE_CHUNK: usize = 1 << 20;
/// A lease of a pull that died with haloyd expires after this, so GC cleans up after it.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);

/// True when containerd has the blob.
pub async fn exists(client: &Containerd, digest: &str) -> Result<bool, RuntimeError> {
    let request = client.request(InfoRequest {
        digest: digest.to_string(),
    });
    match client.content().info(request).await {
        Ok(_) => Ok(true),
        Err(status) if status.code() == Code::NotFound => Ok(false),
        Err(status) => Err(client.rpc_error("Content.Info", status)),
    }
}

/// Reads a whole blob (manifests and configs: small documents).
pub async fn read(client: &Containerd, digest: &str) -> Result<Vec<u8>, RuntimeError> {
    let request = client.request(ReadContentRequest {
        digest: digest.to_string(),
        offset: 0,
        size: 0,
    });
    let mut stream = client
        .content()
        .read(request)
        .await
        .map_err(|s| client.rpc_error("Content.Read", s))?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| client.rpc_error("Content.Read", s))?;
        data.extend_from_slice(&chunk.data);
    }
    Ok(data)
}

/// Replaces the labels of a blob.
pub async fn set_labels(
    client: &Containerd,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<(), RuntimeError> {
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let request = client.request(UpdateRequest {
        info: Some(Info {
            digest: digest.to_string(),
            labels,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    });
    client
        .content()
        .update(request)
        .await
        .map_err(|s| client.rpc_error("Content.Update", s))?;
    Ok(())
}

/// Writes a small in-memory blob; returns the bytes actually written (0 if it existed).
pub async fn write_bytes(
    client: &Containerd,
    lease: &Lease,
    digest: &str,
    data: Vec<u8>,
) -> Result<u64, RuntimeError> {
    let total = data.len() as i64;
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data))]);
    write_stream(client, lease, digest, total, stream).await
}

/// Streams a blob into the content store under `lease`, verified against `digest` and
/// `total`. Returns the bytes written; 0 when containerd already had the blob.
pub async fn write_stream<S>(
    client: &Containerd,
    lease: &Lease,
    digest: &str,
    total: i64,
    source: S,
) -> Result<u64, RuntimeError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
{
    // The ref is unique to this lease, so no earlier partial write exists to resume.
    let reference = format!("{}-{digest}", lease.id);
    let written = async {
        let mut writer = WriteStream::open(client, &lease.id, reference, digest, total).await?;
        let written = writer.copy_from(source).await?;
        writer.commit().await?;
        Ok(written)
    };
    match written.await {
        Ok(written) => Ok(written),
        Err(WriteError::Exists) => Ok(0),
        Err(WriteError::Source(e)) => Err(RuntimeError::Registry {
            reference: digest.to_string(),
            registry: String::new(),
            reason: format!("reading blob {digest}: {e}"),
        }),
        Err(other) => Err(other.into_runtime(client, digest)),
    }
}

/// Why a Content.Write stream stopped.
#[derive(Debug)]
pub(super) enum WriteError {
    /// containerd has the blob committed already: success for most callers.
    Exists,
    /// containerd refused a message; `operation` names the step.
    Status {
        operation: &'static str,
        status: tonic::Status,
    },
    /// containerd closed the stream without a status.
    Ended { operation: &'static str },
    /// The source of the bytes failed; what arrived before was written.
    Source(std::io::Error),
}

impl WriteError {
    /// The runtime error for a failure of containerd's side (not `Exists` or `Source`).
    pub(super) fn into_runtime(self, client: &Containerd, digest: &str) -> RuntimeError {
        match self {
            WriteError::Status { operation, status } => client.rpc_error(operation, status),
            WriteError::Ended { operation } => RuntimeError::Rpc {
                operation,
                code: Code::Aborted,
                message: format!("containerd ended the write of {digest} early"),
            },
            WriteError::Exists => RuntimeError::Rpc {
                operation: "Content.Write",
                code: Code::AlreadyExists,
                message: format!("{digest} exists"),
            },
            WriteError::Source(e) => RuntimeError::Rpc {
                operation: "Content.Write",
                code: Code::Aborted,
                message: format!("reading the bytes of {digest}: {e}"),
            },
        }
    }

    fn from_status(operation: &'static str, status: tonic::Status) -> WriteError {
        if status.code() == Code::AlreadyExists {
            WriteError::Exists
        } else {
            WriteError::Status { operation, status }
        }
    }
}

/// One open Content.Write stream under `reference`, used in lock-step: one response per
/// request, at most one data message of `WRITE_CHUNK` in flight, so memory stays bounded
/// whatever the blob's size. Shared by pulls (a fresh ref per lease) and uploads (a ref per
/// digest, resumed at `offset`).
pub(super) struct WriteStream {
    digest: String,
    total: i64,
    reference: String,
    /// Bytes containerd holds of the blob under `reference`.
    pub(super) offset: u64,
    requests: mpsc::Sender<WriteContentRequest>,
    responses: Streaming<WriteContentResponse>,
}

impl WriteStream {
    /// Opens the stream with a STAT under `lease_id`; `offset` is what an earlier write under
    /// the same ref left. `Exists` when the blob is committed already.
    pub(super) async fn open(
        client: &Containerd,
        lease_id: &str,
        reference: String,
        digest: &str,
        total: i64,
    ) -> Result<WriteStream, WriteError> {
        let (requests, receiver) = mpsc::channel(2);
        // The call only returns once containerd answered the first message: queue it first.
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total,
            expected: digest.to_string(),
            ..Default::default()
        };
        let _ = requests.send(stat).await;
        let mut content = client.content();
        let call =
            content.write(client.request_with_lease(ReceiverStream::new(receiver), lease_id));
        let mut responses = call
            .await
            .map_err(|status| WriteError::from_status("Content.Write", status))?
            .into_inner();
        let offset = match responses.message().await {
            Ok(Some(stat)) => stat.offset.max(0) as u64,
            Ok(None) => 0,
            Err(status) => return Err(WriteError::from_status("Content.Write", status)),
        };
        Ok(WriteStream {
            digest: digest.to_string(),
            total,
            reference,
            offset,
            requests,
            responses,
        })
    }

    /// Writes `source` from `offset` on in messages of `WRITE_CHUNK`; returns the bytes
    /// written. When the source fails, what arrived is written first (kept for a resume).
    pub(super) async fn copy_from<S>(&mut self, mut source: S) -> Result<u64, WriteError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let mut buffer = Vec::with_capacity(WRITE_CHUNK);
        let mut written = 0u64;
        while let Some(chunk) = source.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    if !buffer.is_empty() {
                        self.send_data(std::mem::take(&mut buffer)).await?;
                    }
                    return Err(WriteError::Source(e));
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

    async fn send_data(&mut self, data: Vec<u8>) -> Result<u64, WriteError> {
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

    /// Commits the blob: containerd verifies size and digest over all bytes under the ref.
    pub(super) async fn commit(&mut self) -> Result<(), WriteError> {
        let request = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: self.total,
            expected: self.digest.clone(),
            offset: self.offset as i64,
            ..Default::default()
        };
        self.exchange(request, "Content.Commit").await
    }

    async fn exchange(
        &mut self,
        request: WriteContentRequest,
        operation: &'static str,
    ) -> Result<(), WriteError> {
        // A closed stream shows in the response's status below.
        let _ = self.requests.send(request).await;
        match self.responses.message().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(WriteError::Ended { operation }),
            Err(status) => Err(WriteError::from_status(operation, status)),
        }
    }
}

/// A containerd lease: resources created with its id in the request metadata survive GC
/// until it is deleted. Dropped without `delete` (the pull's future was cancelled), it deletes
/// itself in the background so nothing of the interrupted pull stays around.
#[derive(Debug)]
pub struct Lease {
    pub id: String,
    client: Containerd,
    deleted: bool,
}

impl Lease {
    /// Creates a lease that expires on its own after an hour (in case haloyd dies mid-pull).
    ///
    /// The create call runs in a task of its own: when the pull is cancelled while the call is
    /// in flight, containerd still creates the lease, and the task then drops it, which
    /// deletes it. Cancelling the call itself would leave the lease behind for an hour.
    pub async fn create(client: &Containerd, purpose: &str) -> Result<Lease, RuntimeError> {
        let (created, receive) = tokio::sync::oneshot::channel();
        let task_client = client.clone();
        let purpose = purpose.to_string();
        tokio::spawn(async move {
            let lease = Lease::create_now(task_client, &purpose).await;
            // Fails only when the pull was abandoned: the lease is dropped here and deletes itself.
            let _ = created.send(lease);
        });
        receive.await.map_err(|_| RuntimeError::Rpc {
            operation: "Leases.Create",
            code: Code::Aborted,
            message: "the call's task ended without an answer (haloyd shutting down?)".into(),
        })?
    }

    async fn create_now(client: Containerd, purpose: &str) -> Result<Lease, RuntimeError> {
        let id = format!(
            "haloy-{purpose}-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let expire = crate::timefmt::rfc3339(SystemTime::now() + LEASE_EXPIRY);
        let mut labels = HashMap::new();
        if !expire.is_empty() {
            labels.insert("containerd.io/gc.expire".to_string(), expire);
        }
        let request = client.request(CreateRequest {
            id: id.clone(),
            labels,
        });
        client
            .leases()
            .create(request)
            .await
            .map_err(|s| client.rpc_error("Leases.Create", s))?;
        Ok(Lease {
            id,
            client,
            deleted: false,
        })
    }

    /// Puts an existing blob under this lease, so GC cannot take it while the pull runs.
    pub async fn add_content(&self, client: &Containerd, digest: &str) -> Result<(), RuntimeError> {
        let request = client.request(AddResourceRequest {
            id: self.id.clone(),
            resource: Some(Resource {
                id: digest.to_string(),
                r#type: "content".to_string(),
            }),
        });
        client
            .leases()
            .add_resource(request)
            .await
            .map_err(|s| client.rpc_error("Leases.AddResource", s))?;
        Ok(())
    }

    /// Deletes the lease; `sync` waits for the garbage collection it triggers.
    pub async fn delete(mut self, sync: bool) -> Result<(), RuntimeError> {
        self.deleted = true;
        delete_lease(&self.client, &self.id, sync).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime left: the lease's expiry label cleans up.
        };
        let client = self.client.clone();
        let id = std::mem::take(&mut self.id);
        runtime.spawn(async move {
            if let Err(err) = delete_lease(&client, &id, true).await {
                tracing::warn!(lease = %id, error = %err, "could not delete the lease of an interrupted pull");
            }
        });
    }
}

async fn delete_lease(client: &Containerd, id: &str, sync: bool) -> Result<(), RuntimeError> {
    let request = client.request(DeleteRequest {
        id: id.to_string(),
        sync,
    });
    match client.leases().delete(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Err(status) => Err(client.rpc_error("Leases.Delete", status)),
    }
}
