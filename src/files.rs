//! Writing files so that a crash leaves either the old or the new version, never a mix, with
//! the mode set from creation (tokens, keys and history must never be readable by others,
//! not even for an instant). The one implementation behind state, TLS, CLI and haloyd init.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replace `path` with `contents`: a temp file in the same directory (same filesystem, so the
/// rename is atomic) created with `mode`, fsynced, renamed over `path`, then the directory
/// fsynced. The error names no path: callers add theirs.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
#[path = "tests/files.rs"]
mod tests;
