//! Small file helpers whose errors name the file: atomic writes, private key permissions.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::CertError;

fn io_error(path: &Path, source: std::io::Error) -> CertError {
    CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` exists (an unreadable directory is an error, not "no").
pub(super) fn exists(path: &Path) -> Result<bool, CertError> {
    path.try_exists().map_err(|e| io_error(path, e))
}

pub(super) fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
}

/// Reads a text file; a missing file is [`CertError::Missing`].
pub(super) fn read_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CertError::Missing {
            path: path.to_path_buf(),
        },
        _ => io_error(path, e),
    })
}

/// Opens a new file that must not exist yet; `private` files get mode 0600 on Unix.
pub(super) fn create_new(path: &Path, private: bool) -> std::io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)
}

/// Writes `contents` to a temporary file next to `path`, then renames it over `path`.
pub(super) fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let tmp = temp_name(path);
    let result = create_new(&tmp, private)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    Ok(())
}

fn temp_name(path: &Path) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{nanos}", std::process::id()));
    path.with_file_name(name)
}
