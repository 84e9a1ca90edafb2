//! Talking to registries with oci-client: authentication (anonymous, basic, bearer-token
//! challenges), resolving a reference to the linux/<host arch> manifest, and streaming blobs.
//! Plain HTTP is used only for loopback registries and those listed as insecure.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use super::super::{RegistryCredentials, RuntimeError};
use super::install_crypto_provider;
use super::manifest::{host_arch, select_platform, AnyManifest, Descriptor, ACCEPTED_MANIFESTS};
use super::reference::ImageRef;

/// A resolved platform manifest.
pub struct Resolved {
    /// Digest of the platform manifest.
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A registry session for one image reference.
pub struct RegistrySession {
    client: Client,
    auth: RegistryAuth,
    image: ImageRef,
}

impl RegistrySession {
    /// Authenticates against the registry of `image` (anonymous when no credentials).
    pub async fn open(
        image: &ImageRef,
        credentials: Option<&RegistryCredentials>,
        insecure_registries: &[String],
    ) -> Result<RegistrySession, RuntimeError> {
        install_crypto_provider();
        let plain_http = image.is_loopback() || insecure_registries.contains(&image.registry);
        let protocol = if plain_http {
            ClientProtocol::HttpsExcept(vec![image.endpoint().to_string()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            // We pick the platform ourselves, to name what is missing.
            platform_resolver: None,
            ..Default::default()
        });
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let session = RegistrySession {
            client,
            auth,
            image: image.clone(),
        };
        session
            .client
            .auth(&image.to_oci(), &session.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| session.error(e))?;
        Ok(session)
    }

    /// Resolves the reference to the manifest for linux/<host arch>; returns it and, when the
    /// reference named an index, the index digest as well.
    pub async fn resolve(&self) -> Result<Resolved, RuntimeError> {
        let (bytes, digest) = self.fetch_manifest(&self.image).await?;
        let any: AnyManifest =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid(&e.to_string()))?;
        if !any.is_index() {
            let media_type = any
                .media_type
                .unwrap_or_else(|| super::manifest::OCI_MANIFEST.to_string());
            return Ok(Resolved {
                digest,
                media_type,
                bytes,
            });
        }
        let entries = any.manifests.unwrap_or_default();
        let entry = select_platform(&entries, host_arch()).map_err(|available| {
            RuntimeError::NoMatchingPlatform {
                reference: self.image.to_string(),
                arch: host_arch().to_string(),
                available,
            }
        })?;
        let (bytes, digest) = self
            .fetch_manifest(&self.image.with_digest(&entry.digest))
            .await?;
        Ok(Resolved {
            digest,
            media_type: entry.media_type.clone(),
            bytes,
        })
    }

    /// Streams the blob `descriptor` from the registry.
    pub async fn blob(
        &self,
        descriptor: &Descriptor,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin, RuntimeError>
    {
        let layer = oci_client::manifest::OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            ..Default::default()
        };
        let stream = self
            .client
            .pull_blob_stream(&self.image.to_oci(), &layer)
            .await
            .map_err(|e| self.error(e))?;
        Ok(stream.stream.map_err(std::io::Error::other))
    }

    /// The registry host requests go to.
    pub fn registry(&self) -> &str {
        self.image.endpoint()
    }

    async fn fetch_manifest(&self, image: &ImageRef) -> Result<(Vec<u8>, String), RuntimeError> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(&image.to_oci(), &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.error(e))?;
        Ok((bytes.to_vec(), digest))
    }

    fn invalid(&self, reason: &str) -> RuntimeError {
        RuntimeError::InvalidImage {
            reference: self.image.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Maps oci-client's errors to ones that say what to fix.
    fn error(&self, err: OciDistributionError) -> RuntimeError {
        let reference = self.image.to_string();
        let registry = self.image.endpoint().to_string();
        match err {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RuntimeError::Unauthorized {
                reference,
                registry,
                reason: match &self.auth {
                    RegistryAuth::Anonymous => {
                        "the registry requires credentials: set image.registry.username/password"
                            .to_string()
                    }
                    _ => format!("{err}"),
                },
            },
            OciDistributionError::ImageManifestNotFoundError(reason) => {
                RuntimeError::ImageNotFound {
                    reference,
                    registry,
                    reason,
                }
            }
            OciDistributionError::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|e| is_not_found(&e.code)) =>
            {
                RuntimeError::ImageNotFound {
                    reference,
                    registry,
                    reason: envelope.to_string(),
                }
            }
            OciDistributionError::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|e| is_denied(&e.code)) =>
            {
                RuntimeError::Unauthorized {
                    reference,
                    registry,
                    reason: envelope.to_string(),
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => RuntimeError::ImageNotFound {
                reference,
                registry,
                reason: err.to_string(),
            },
            other => RuntimeError::Registry {
                reference,
                registry,
                reason: describe(&other),
            },
        }
    }
}

fn is_not_found(code: &OciErrorCode) -> bool {
    matches!(
        code,
        OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown
    )
}

fn is_denied(code: &OciErrorCode) -> bool {
    matches!(code, OciErrorCode::Denied | OciErrorCode::Unauthorized)
}

/// The error with its sources (reqwest hides the useful part, e.g. "connection refused").
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
