//! Images in containerd: reference parsing, client-side registry pulls into the content store
//! under a lease, GC labels, image records, unpacking into the overlayfs snapshotter, archive
//! import and removal of images an app no longer keeps.

use super::{Containerd, ImageInfo, ImageRequest, RuntimeError};

/// What one `ensure` transferred from the registry (zero when everything was cached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullReport {
    pub blobs_fetched: usize,
    pub bytes_fetched: u64,
    pub layers_unpacked: usize,
}

/// Image operations on one containerd namespace.
#[derive(Clone, Debug)]
pub struct ImageStore {
    client: Containerd,
    insecure_registries: Vec<String>,
}

impl ImageStore {
    pub fn new(client: Containerd, insecure_registries: Vec<String>) -> ImageStore {
        ImageStore {
            client,
            insecure_registries,
        }
    }

    /// Makes the image present according to the pull policy.
    pub async fn ensure(
        &self,
        _req: &ImageRequest,
    ) -> Result<(ImageInfo, PullReport), RuntimeError> {
        let _ = (&self.client, &self.insecure_registries);
        Err(RuntimeError::NotImplemented("ensure_image"))
    }

    /// Deletes the app's images that are not in `keep`.
    pub async fn remove_unused(&self, _app: &str, _keep: &[String]) -> Result<(), RuntimeError> {
        Err(RuntimeError::NotImplemented("remove_unused_images"))
    }
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
