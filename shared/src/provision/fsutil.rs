//! File writing for provisioning: private keys are created with mode 0600, every file is written to a
//! temporary name and renamed so a running coordinator never reads a half-written roster or CRL.

use super::ProvisionError;
use std::io::Write;
use std::path::Path;

fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), ProvisionError> {
    let io = |e: std::io::Error| ProvisionError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Writes a private key file (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    write_atomic(path, bytes, true)
}

/// Writes a public file (mode 0644).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    write_atomic(path, bytes, false)
}

/// Reads a file to a string with the path in the error.
pub fn read_string(path: &Path) -> Result<String, ProvisionError> {
    std::fs::read_to_string(path).map_err(|e| ProvisionError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads a file to bytes with the path in the error.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ProvisionError> {
    std::fs::read(path).map_err(|e| ProvisionError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
