//! Unpacking an image's layers into the overlayfs snapshotter with the Diff service: one
//! committed snapshot per layer, named by its chain ID, so images sharing layers share them.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::types::Descriptor as ProtoDescriptor;
use tonic::Code;

use super::super::{Containerd, RuntimeError, SNAPSHOTTER};
use super::content::Lease;
use super::manifest::Descriptor;

/// True when the snapshot `key` (a chain ID) is committed.
pub async fn snapshot_exists(client: &Containerd, key: &str) -> Result<bool, RuntimeError> {
    let request = client.request(StatSnapshotRequest {
        snapshotter: SNAPSHOTTER.to_string(),
        key: key.to_string(),
    });
    match client.snapshots().stat(request).await {
        Ok(_) => Ok(true),
        Err(status) if status.code() == Code::NotFound => Ok(false),
        Err(status) => Err(client.rpc_error("Snapshots.Stat", status)),
    }
}

/// Applies `layers` (with their `diff_ids`) on top of each other; returns how many layers were
/// applied (layers whose chain ID is committed already are skipped).
pub async fn unpack(
    client: &Containerd,
    lease: &Lease,
    reference: &str,
    layers: &[Descriptor],
    diff_ids: &[String],
    chain_ids: &[String],
) -> Result<usize, RuntimeError> {
    if layers.len() != diff_ids.len() {
        return Err(RuntimeError::InvalidImage {
            reference: reference.to_string(),
            reason: format!(
                "manifest lists {} layers but the config has {} diff_ids",
                layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut applied = 0;
    for (i, layer) in layers.iter().enumerate() {
        if snapshot_exists(client, &chain_ids[i]).await? {
            continue;
        }
        let parent = if i == 0 {
            ""
        } else {
            chain_ids[i - 1].as_str()
        };
        let step = LayerStep {
            client,
            lease,
            reference,
            layer,
            diff_id: &diff_ids[i],
            chain_id: &chain_ids[i],
            parent,
        };
        step.apply().await?;
        applied += 1;
    }
    Ok(applied)
}

struct LayerStep<'a> {
    client: &'a Containerd,
    lease: &'a Lease,
    reference: &'a str,
    layer: &'a Descriptor,
    diff_id: &'a str,
    chain_id: &'a str,
    parent: &'a str,
}

impl LayerStep<'_> {
    /// Prepare an active snapshot on the parent, apply the layer into it, commit it as the
    /// chain ID. The active snapshot is removed again on any failure.
    async fn apply(&self) -> Result<(), RuntimeError> {
        let key = format!("{}-unpack-{}", self.lease.id, self.chain_id);
        let mounts = self.prepare(&key).await?;
        let result = match self.apply_diff(mounts).await {
            Ok(()) => self.commit(&key).await,
            Err(err) => Err(err),
        };
        if result.is_err() {
            self.remove(&key).await;
        }
        result
    }

    async fn prepare(
        &self,
        key: &str,
    ) -> Result<Vec<containerd_client::types::Mount>, RuntimeError> {
        let request = self.client.request_with_lease(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.to_string(),
                parent: self.parent.to_string(),
                labels: HashMap::new(),
            },
            &self.lease.id,
        );
        let response = self
            .client
            .snapshots()
            .prepare(request)
            .await
            .map_err(|s| self.client.rpc_error("Snapshots.Prepare", s))?;
        Ok(response.into_inner().mounts)
    }

    async fn apply_diff(
        &self,
        mounts: Vec<containerd_client::types::Mount>,
    ) -> Result<(), RuntimeError> {
        let request = self.client.request_with_lease(
            ApplyRequest {
                diff: Some(ProtoDescriptor {
                    media_type: self.layer.media_type.clone(),
                    digest: self.layer.digest.clone(),
                    size: self.layer.size,
                    annotations: HashMap::new(),
                }),
                mounts,
                ..Default::default()
            },
            &self.lease.id,
        );
        let applied = self
            .client
            .diff()
            .apply(request)
            .await
            .map_err(|s| self.client.rpc_error("Diff.Apply", s))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != self.diff_id {
            return Err(RuntimeError::InvalidImage {
                reference: self.reference.to_string(),
                reason: format!(
                    "layer {} unpacked to {applied}, but the config says diff_id {}",
                    self.layer.digest, self.diff_id
                ),
            });
        }
        Ok(())
    }

    async fn commit(&self, key: &str) -> Result<(), RuntimeError> {
        let request = self.client.request_with_lease(
            CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                name: self.chain_id.to_string(),
                key: key.to_string(),
                labels: HashMap::new(),
            },
            &self.lease.id,
        );
        match self.client.snapshots().commit(request).await {
            Ok(_) => Ok(()),
            // Another pull committed the same layer meanwhile: theirs is as good as ours.
            Err(status) if status.code() == Code::AlreadyExists => {
                self.remove(key).await;
                Ok(())
            }
            Err(status) => Err(self.client.rpc_error("Snapshots.Commit", status)),
        }
    }

    async fn remove(&self, key: &str) {
        let request = self.client.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        });
        if let Err(status) = self.client.snapshots().remove(request).await {
            tracing::warn!(key, error = %status.message(), "could not remove unpack snapshot");
        }
    }
}
