//! Where the access log writer puts its batches: nowhere, stderr, or a file rotated by size
//! (`access.log` → `access.log.1` → … → `access.log.<max_files>`, the oldest dropped).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::AccessLogTarget;

/// Errors opening the access log.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open the access log {path} (server config `access_log.file`): {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the access log writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

#[derive(Debug)]
pub(super) enum Sink {
    Off,
    Stderr,
    File(RotatingFile),
}

#[derive(Debug)]
pub(super) struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl Sink {
    pub(super) fn open(target: AccessLogTarget) -> Result<Sink, SinkError> {
        Ok(match target {
            AccessLogTarget::Off => Sink::Off,
            AccessLogTarget::Stderr => Sink::Stderr,
            AccessLogTarget::File {
                path,
                max_size,
                max_files,
            } => {
                let file = open_append(&path)?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Sink::File(RotatingFile {
                    path,
                    max_size,
                    max_files,
                    file,
                    size,
                })
            }
        })
    }

    /// Writes a batch of whole lines. Failures are logged, never fatal: the proxy goes on.
    pub(super) fn write(&mut self, batch: &[u8]) {
        let written = match self {
            Sink::Off => Ok(()),
            Sink::Stderr => std::io::stderr().lock().write_all(batch),
            Sink::File(file) => file.write(batch),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, bytes = batch.len(), "access log lines lost");
        }
    }

    pub(super) fn flush(&mut self) {
        if let Sink::File(file) = self {
            let _ = file.file.flush();
        }
    }
}

impl RotatingFile {
    fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + batch.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(batch)?;
        self.size += batch.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..self.max_files).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path).map_err(|e| match e {
            SinkError::Open { source, .. } | SinkError::Thread(source) => source,
        })?;
        self.size = 0;
        Ok(())
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Opens `path` for appending (0640), creating its directory.
fn open_append(path: &Path) -> Result<File, SinkError> {
    let fail = |source| SinkError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(fail)
}
