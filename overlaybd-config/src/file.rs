//! Reading overlaybd.json and replacing it so that a crash or a full disk
//! never leaves a half-written file for overlaybd to choke on.
//!
//! The new content goes to a temporary file in the same directory (a rename
//! is only atomic within one filesystem), gets the original mode and owner,
//! is fsynced, and is renamed over the original; the directory is fsynced so
//! the rename itself survives a power cut. The previous content is first
//! saved beside it as `<name>.bak` the same way. A symlinked path is
//! resolved and its target edited, so the link stays a link.
//!
//! A file whose mode has no write bit for its owner is refused even when
//! running as root: an operator or configuration tool that made it read-only
//! meant it. Just before the rename the original is checked again, so an
//! edit made by someone else in the meantime is not silently overwritten.
//! Extended attributes (ACLs, SELinux labels) are not copied to the new file.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Mode of a file created with `--create`.
pub const CREATE_MODE: u32 = 0o644;

#[derive(Debug, Error)]
pub enum FileError {
    #[error("{0}: file not found (pass --create to create it)")]
    Missing(PathBuf),
    #[error("{0}: not a regular file")]
    NotRegular(PathBuf),
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: read-only (mode {mode:04o}); make it writable (chmod u+w) if the change is intended")]
    ReadOnlyMode { path: PathBuf, mode: u32 },
    #[error("{path}: not writable: {source}")]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("{path}: write failed, file unchanged: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{0}: changed by another writer during the edit; file unchanged, run again")]
    ChangedMeanwhile(PathBuf),
}

/// The file as read, with what is needed to replace it faithfully.
#[derive(Debug)]
pub struct Loaded {
    /// The real file: symlinks resolved.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub meta: Metadata,
}

/// Reads `path`; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<Loaded>, FileError> {
    let real = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FileError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let read_err = |source| FileError::Read {
        path: real.clone(),
        source,
    };
    let meta = fs::metadata(&real).map_err(read_err)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(real));
    }
    let bytes = fs::read(&real).map_err(read_err)?;
    Ok(Some(Loaded {
        path: real,
        bytes,
        meta,
    }))
}

/// Where the previous content is kept.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Refuses a file whose owner has no write permission.
pub fn check_writable(file: &Loaded) -> Result<(), FileError> {
    let mode = file.meta.permissions().mode() & 0o7777;
    if mode & 0o200 == 0 {
        return Err(FileError::ReadOnlyMode {
            path: file.path.clone(),
            mode,
        });
    }
    Ok(())
}

/// Saves the old content as the backup, then replaces the file. Returns the
/// backup's path.
pub fn replace(file: &Loaded, new: &[u8]) -> Result<PathBuf, FileError> {
    check_writable(file)?;
    let attrs = Attrs::of(&file.meta);
    let backup = backup_path(&file.path);
    write_atomic(&backup, &file.bytes, attrs, Expect::Anything)
        .map_err(|e| classify(&backup, e))?;
    write_atomic(&file.path, new, attrs, Expect::Unchanged(&file.meta))
        .map_err(|e| classify(&file.path, e))?;
    Ok(backup)
}

/// Creates a new file (and missing parent directories).
pub fn create(path: &Path, content: &[u8]) -> Result<(), FileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| classify(dir, e))?;
    }
    let attrs = Attrs {
        mode: CREATE_MODE,
        owner: None,
    };
    write_atomic(path, content, attrs, Expect::Absent).map_err(|e| classify(path, e))
}

#[derive(Clone, Copy)]
struct Attrs {
    mode: u32,
    owner: Option<(u32, u32)>,
}

impl Attrs {
    fn of(meta: &Metadata) -> Attrs {
        Attrs {
            mode: meta.permissions().mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
        }
    }
}

/// What the target must look like right before the rename.
enum Expect<'a> {
    Anything,
    Absent,
    Unchanged(&'a Metadata),
}

/// Failure of one atomic write, before mapping to [`FileError`].
enum WriteFailure {
    Io(io::Error),
    Changed,
}

impl From<io::Error> for WriteFailure {
    fn from(e: io::Error) -> Self {
        WriteFailure::Io(e)
    }
}

fn classify(path: &Path, failure: impl Into<WriteFailure>) -> FileError {
    let path = path.to_path_buf();
    match failure.into() {
        WriteFailure::Changed => FileError::ChangedMeanwhile(path),
        WriteFailure::Io(source)
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            FileError::NotWritable { path, source }
        }
        WriteFailure::Io(source) => FileError::Write { path, source },
    }
}

/// Removes the temporary file unless the rename consumed it.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn write_atomic(
    target: &Path,
    bytes: &[u8],
    attrs: Attrs,
    expect: Expect<'_>,
) -> Result<(), WriteFailure> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    f.write_all(bytes)?;
    // chown before chmod: changing the owner clears set-id bits.
    if let Some((uid, gid)) = attrs.owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    f.set_permissions(fs::Permissions::from_mode(attrs.mode))?;
    f.sync_all()?;
    drop(f);
    let now = fs::symlink_metadata(target);
    let unchanged = match (&expect, &now) {
        (Expect::Anything, _) => true,
        (Expect::Absent, Err(e)) => e.kind() == io::ErrorKind::NotFound,
        (Expect::Absent, Ok(_)) => false,
        (Expect::Unchanged(old), Ok(m)) => same_file_state(old, m),
        (Expect::Unchanged(_), Err(_)) => false,
    };
    if !unchanged {
        return Err(WriteFailure::Changed);
    }
    fs::rename(&tmp, target)?;
    guard.0 = None;
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn same_file_state(a: &Metadata, b: &Metadata) -> bool {
    (a.dev(), a.ino(), a.len(), a.mtime(), a.mtime_nsec())
        == (b.dev(), b.ino(), b.len(), b.mtime(), b.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_mode_and_writes_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        let backup = replace(&loaded, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read(&backup).unwrap(), b"old");
        for p in [&path, &backup] {
            assert_eq!(
                fs::metadata(p).unwrap().permissions().mode() & 0o7777,
                0o640
            );
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn symlink_target_is_edited_and_link_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("overlaybd.json");
        fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let loaded = load(&link).unwrap().unwrap();
        replace(&loaded, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert!(dir.path().join("real.json.bak").exists());
    }

    #[test]
    fn concurrent_change_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        fs::write(&path, b"old").unwrap();
        let loaded = load(&path).unwrap().unwrap();
        fs::write(&path, b"someone else's edit").unwrap();
        let err = replace(&loaded, b"new").unwrap_err();
        assert!(matches!(err, FileError::ChangedMeanwhile(_)), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"someone else's edit");
    }

    #[test]
    fn read_only_mode_and_missing_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        assert!(load(&path).unwrap().is_none());
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert!(matches!(
            replace(&loaded, b"y"),
            Err(FileError::ReadOnlyMode { mode: 0o444, .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"x");
        assert!(matches!(load(dir.path()), Err(FileError::NotRegular(_))));
    }

    #[test]
    fn create_makes_parents_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/overlaybd/overlaybd.json");
        create(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            CREATE_MODE
        );
        assert!(matches!(
            create(&path, b"[]"),
            Err(FileError::ChangedMeanwhile(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }
}
