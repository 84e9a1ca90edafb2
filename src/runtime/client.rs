//! The gRPC connection to containerd: a tonic `Channel` over the unix socket, the namespace that
//! every request carries as `containerd-namespace` metadata, accessors for the v1 service clients,
//! and the mapping of transport/status failures to `RuntimeError`s that name the socket.
//!
//! Reconnection: the channel is built with a lazy connector, so tonic's internal `Reconnect`
//! service dials the socket again on the next request after the old connection broke (e.g.
//! containerd restarted). Callers therefore only see the requests that were in flight fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    namespaces_client::NamespacesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient, CreateNamespaceRequest, Namespace,
};
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::RuntimeError;

/// Namespace used when the server config names none.
pub const DEFAULT_NAMESPACE: &str = "haloy";

/// How long the initial Version call may take before containerd counts as "not answering".
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one containerd socket, scoped to one namespace. Cheap to clone: the channel
/// is a handle to a shared connection.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    socket: PathBuf,
}

impl Containerd {
    /// Connects to the socket, checks that containerd answers (Version call) and creates the
    /// namespace if it does not exist yet.
    pub async fn connect(
        socket: impl AsRef<Path>,
        namespace: &str,
    ) -> Result<Containerd, RuntimeError> {
        let socket = socket.as_ref().to_path_buf();
        if !socket.exists() {
            return Err(RuntimeError::SocketMissing { path: socket });
        }
        let metadata_ok = namespace.parse::<MetadataValue<_>>().is_ok();
        if namespace.is_empty() || !metadata_ok {
            return Err(RuntimeError::InvalidNamespace {
                namespace: namespace.to_string(),
            });
        }
        let client = Containerd {
            channel: lazy_unix_channel(&socket)?,
            namespace: namespace.to_string(),
            socket,
        };
        client.handshake().await?;
        client.ensure_namespace().await?;
        Ok(client)
    }

    /// The namespace every request of this client is scoped to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket path this client dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The underlying channel (for service clients this module has no accessor for).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Wraps `message` in a request that carries the namespace metadata.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.namespace.parse() {
            // Validated in `connect`, so this always succeeds.
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }

    /// Like [`Containerd::request`], and also attaches the request to a lease so the content or
    /// snapshots it creates stay alive until the lease is deleted.
    pub fn request_with_lease<T>(&self, message: T, lease_id: &str) -> Request<T> {
        let mut request = self.request(message);
        if let Ok(value) = lease_id.parse() {
            request.metadata_mut().insert("containerd-lease", value);
        }
        request
    }

    /// Calls Version; returns containerd's version string. Used as a liveness probe.
    pub async fn server_version(&self) -> Result<String, RuntimeError> {
        let mut version = self.version();
        let call = version.version(self.request(()));
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner().version),
            Ok(Err(status)) => Err(RuntimeError::NotAnswering {
                path: self.socket.clone(),
                reason: status.message().to_string(),
            }),
            Err(_) => Err(RuntimeError::NotAnswering {
                path: self.socket.clone(),
                reason: format!("no answer within {HANDSHAKE_TIMEOUT:?}"),
            }),
        }
    }

    /// Maps a failed call to an error naming the operation, and the socket when the transport
    /// itself failed (containerd down or restarting).
    pub fn rpc_error(&self, operation: &'static str, status: Status) -> RuntimeError {
        if status.code() == Code::Unavailable {
            return RuntimeError::Unavailable {
                path: self.socket.clone(),
                operation,
                reason: status.message().to_string(),
            };
        }
        RuntimeError::Rpc {
            operation,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel())
    }

    pub fn namespaces(&self) -> NamespacesClient<Channel> {
        NamespacesClient::new(self.channel())
    }

    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel())
    }

    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel())
    }

    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel())
    }

    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel())
    }

    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel())
    }

    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel())
    }

    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel())
    }

    async fn handshake(&self) -> Result<(), RuntimeError> {
        let version = self.server_version().await?;
        tracing::debug!(socket = %self.socket.display(), %version, "connected to containerd");
        Ok(())
    }

    async fn ensure_namespace(&self) -> Result<(), RuntimeError> {
        let request = CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: self.namespace.clone(),
                labels: Default::default(),
            }),
        };
        match self.namespaces().create(self.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(self.rpc_error("Namespaces.Create", status)),
        }
    }
}

/// A channel that dials the unix socket on first use and again after each broken connection.
fn lazy_unix_channel(socket: &Path) -> Result<Channel, RuntimeError> {
    // The URI is required by tonic but ignored: the connector below always dials the socket.
    let endpoint =
        Endpoint::try_from("http://containerd.sock").map_err(|e| RuntimeError::NotAnswering {
            path: socket.to_path_buf(),
            reason: e.to_string(),
        })?;
    let path = socket.to_path_buf();
    let connector = tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint
        .connect_timeout(HANDSHAKE_TIMEOUT)
        .connect_with_connector_lazy(connector))
}

#[cfg(test)]
#[path = "tests/client.rs"]
mod tests;
