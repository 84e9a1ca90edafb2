//! Reading image archives for import: an OCI image layout tar (index.json + blobs/) and the
//! classic `docker save` tar (manifest.json + config + uncompressed layer tars). The archive is
//! unpacked into a temp dir (an OCI layout directory is read where it is); the image code then
//! streams blobs from the files.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::super::RuntimeError;
use super::manifest::{
    host_arch, select_platform, AnyManifest, Descriptor, DOCKER_CONFIG, DOCKER_LAYER_TAR,
    DOCKER_MANIFEST, OCI_MANIFEST,
};
use super::reference::ImageRef;

const GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One image found in an archive, ready to be stored.
pub struct ArchiveImage {
    pub name: String,
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    /// Blob files by digest.
    pub files: HashMap<String, PathBuf>,
}

/// An archive unpacked into a temp dir (removed on drop), or an OCI layout directory read
/// where it is.
pub struct UnpackedArchive {
    archive: PathBuf,
    root: PathBuf,
    _unpacked: Option<tempfile::TempDir>,
}

impl UnpackedArchive {
    pub async fn open(archive: &Path) -> Result<UnpackedArchive, RuntimeError> {
        if archive.is_dir() {
            return Ok(UnpackedArchive {
                archive: archive.to_path_buf(),
                root: archive.to_path_buf(),
                _unpacked: None,
            });
        }
        let archive = archive.to_path_buf();
        let error = |reason: String| RuntimeError::Archive {
            path: archive.clone(),
            reason,
        };
        let dir = tempfile::Builder::new()
            .prefix("haloy-import-")
            .tempdir()
            .map_err(|e| error(format!("creating a temp dir: {e}")))?;
        let target = dir.path().to_path_buf();
        let source = archive.clone();
        // tar's unpack refuses entries that would escape the target directory.
        tokio::task::spawn_blocking(move || unpack_tar(&source, &target))
            .await
            .map_err(|e| error(e.to_string()))?
            .map_err(|e| error(format!("not a readable tar archive: {e}")))?;
        Ok(UnpackedArchive {
            archive,
            root: dir.path().to_path_buf(),
            _unpacked: Some(dir),
        })
    }

    /// The images in the archive, named from the archive or from `default_name`.
    pub fn images(&self, default_name: Option<&str>) -> Result<Vec<ArchiveImage>, RuntimeError> {
        if self.root.join("index.json").is_file() {
            self.oci_images(default_name)
        } else if self.root.join("manifest.json").is_file() {
            self.docker_images(default_name)
        } else {
            Err(self.error(
                "neither index.json (OCI layout) nor manifest.json (docker save) found".to_string(),
            ))
        }
    }

    fn oci_images(&self, default_name: Option<&str>) -> Result<Vec<ArchiveImage>, RuntimeError> {
        let files = self.oci_blob_files()?;
        let index: AnyManifest = serde_json::from_slice(&self.read("index.json")?)
            .map_err(|e| self.error(format!("index.json: {e}")))?;
        let mut images = Vec::new();
        for entry in index.manifests.unwrap_or_default() {
            let annotated = entry
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| entry.annotations.get("org.opencontainers.image.ref.name"));
            let name = self.image_name(annotated.map(String::as_str), default_name)?;
            let manifest = self.platform_manifest(&entry, &files, &name)?;
            let manifest_bytes = self.read_blob(&files, &manifest.digest)?;
            images.push(ArchiveImage {
                name,
                manifest,
                manifest_bytes,
                files: files.clone(),
            });
        }
        if images.is_empty() {
            return Err(self.error("index.json lists no images".to_string()));
        }
        Ok(images)
    }

    /// The entry itself, or for a nested index its linux/<host arch> manifest.
    fn platform_manifest(
        &self,
        entry: &Descriptor,
        files: &HashMap<String, PathBuf>,
        name: &str,
    ) -> Result<Descriptor, RuntimeError> {
        let bytes = self.read_blob(files, &entry.digest)?;
        let any: AnyManifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("{}: {e}", entry.digest)))?;
        if !any.is_index() {
            let mut manifest = entry.clone();
            if manifest.media_type.is_empty() {
                manifest.media_type = any.media_type.unwrap_or_else(|| OCI_MANIFEST.to_string());
            }
            return Ok(manifest);
        }
        let entries = any.manifests.unwrap_or_default();
        select_platform(&entries, host_arch())
            .cloned()
            .map_err(|available| RuntimeError::NoMatchingPlatform {
                reference: name.to_string(),
                arch: host_arch().to_string(),
                available,
            })
    }

    fn docker_images(&self, default_name: Option<&str>) -> Result<Vec<ArchiveImage>, RuntimeError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&self.read("manifest.json")?)
            .map_err(|e| self.error(format!("manifest.json: {e}")))?;
        let mut images = Vec::new();
        for entry in entries {
            let mut files = HashMap::new();
            let config = self.file_descriptor(&entry.config, DOCKER_CONFIG, &mut files)?;
            let layers = entry
                .layers
                .iter()
                .map(|layer| {
                    let media_type = if self.is_gzip(layer)? {
                        GZIP_LAYER
                    } else {
                        DOCKER_LAYER_TAR
                    };
                    self.file_descriptor(layer, media_type, &mut files)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let manifest_bytes = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": config,
                "layers": layers,
            }))
            .map_err(|e| self.error(e.to_string()))?;
            let manifest = Descriptor {
                media_type: DOCKER_MANIFEST.to_string(),
                digest: super::manifest::sha256_digest(&manifest_bytes),
                size: manifest_bytes.len() as i64,
                platform: None,
                annotations: Default::default(),
            };
            let tags = entry.repo_tags.unwrap_or_default();
            let names: Vec<Option<&str>> = if tags.is_empty() {
                vec![None]
            } else {
                tags.iter().map(|t| Some(t.as_str())).collect()
            };
            for tag in names {
                images.push(ArchiveImage {
                    name: self.image_name(tag, default_name)?,
                    manifest: manifest.clone(),
                    manifest_bytes: manifest_bytes.clone(),
                    files: files.clone(),
                });
            }
        }
        Ok(images)
    }

    /// A descriptor for a file of the archive (digest computed), registered in `files`.
    fn file_descriptor(
        &self,
        relative: &str,
        media_type: &str,
        files: &mut HashMap<String, PathBuf>,
    ) -> Result<Descriptor, RuntimeError> {
        let path = self.root.join(relative);
        let (digest, size) =
            sha256_file(&path).map_err(|e| self.error(format!("{relative}: {e}")))?;
        files.insert(digest.clone(), path);
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: size as i64,
            platform: None,
            annotations: Default::default(),
        })
    }

    fn is_gzip(&self, relative: &str) -> Result<bool, RuntimeError> {
        let mut magic = [0u8; 2];
        let mut file = std::fs::File::open(self.root.join(relative))
            .map_err(|e| self.error(format!("{relative}: {e}")))?;
        Ok(file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b])
    }

    /// Full name from the archive; a bare tag is applied to `default_name`.
    fn image_name(
        &self,
        from_archive: Option<&str>,
        default_name: Option<&str>,
    ) -> Result<String, RuntimeError> {
        let looks_like_name = |n: &str| n.contains('/') || n.contains(':');
        let name = match (from_archive, default_name) {
            (Some(name), _) if looks_like_name(name) => ImageRef::parse(name)?,
            (Some(tag), Some(default)) => {
                let mut image = ImageRef::parse(default)?;
                image.tag = Some(tag.to_string());
                image.digest = None;
                ImageRef::parse(&image.to_string())?
            }
            (None, Some(default)) => ImageRef::parse(default)?,
            (_, None) => {
                return Err(self.error(
                    "the archive does not name its image: give a name to import it as".to_string(),
                ))
            }
        };
        Ok(name.to_string())
    }

    fn oci_blob_files(&self) -> Result<HashMap<String, PathBuf>, RuntimeError> {
        let mut files = HashMap::new();
        let blobs = self.root.join("blobs");
        let algorithms =
            std::fs::read_dir(&blobs).map_err(|e| self.error(format!("blobs/: {e}")))?;
        for algorithm in algorithms.flatten() {
            let alg = algorithm.file_name().to_string_lossy().to_string();
            let Ok(entries) = std::fs::read_dir(algorithm.path()) else {
                continue;
            };
            for blob in entries.flatten() {
                let hex = blob.file_name().to_string_lossy().to_string();
                files.insert(format!("{alg}:{hex}"), blob.path());
            }
        }
        Ok(files)
    }

    fn read_blob(
        &self,
        files: &HashMap<String, PathBuf>,
        digest: &str,
    ) -> Result<Vec<u8>, RuntimeError> {
        let path = files
            .get(digest)
            .ok_or_else(|| self.error(format!("blob {digest} is missing")))?;
        let bytes = std::fs::read(path).map_err(|e| self.error(format!("{digest}: {e}")))?;
        if super::manifest::sha256_digest(&bytes) != digest {
            return Err(self.error(format!("blob {digest} does not match its digest")));
        }
        Ok(bytes)
    }

    fn read(&self, relative: &str) -> Result<Vec<u8>, RuntimeError> {
        std::fs::read(self.root.join(relative)).map_err(|e| self.error(format!("{relative}: {e}")))
    }

    fn error(&self, reason: String) -> RuntimeError {
        RuntimeError::Archive {
            path: self.archive.clone(),
            reason,
        }
    }
}

fn unpack_tar(archive: &Path, target: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    tar.set_preserve_permissions(false);
    tar.unpack(target)
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}
