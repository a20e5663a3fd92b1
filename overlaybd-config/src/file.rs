//! Reading overlaybd.json and replacing it so that a crash or a full disk
//! never leaves a half-written file for overlaybd to choke on.
//!
//! The new content goes to a temporary file in the same directory (a rename
//! is only atomic within one filesystem), gets the original mode and owner,
//! is fsynced, and is renamed over the original; the directory is fsynced so
//! the rename itself survives a power cut. The previous content is first
//! saved beside it as `<name>.bak` the same way. A symlinked path is
//! resolved and its target edited, so the link stays a link. A directory
//! sync that fails after the rename has its own error: the new file is in
//! place, only its durability is not confirmed, so "unchanged" would be false.
//!
//! A file whose mode has no write bit for its owner is refused even when
//! running as root: an operator or configuration tool that made it read-only
//! meant it. Just before the rename the original is checked again, so an
//! edit made by someone else in the meantime is not silently overwritten.
//! Extended attributes (ACLs, SELinux labels) are not copied to the new file.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// Mode of a file created with `--create`.
pub const CREATE_MODE: u32 = 0o644;

#[derive(Debug, Error)]
pub enum FileError {
    #[error("{}: file not found{}", .path.display(), create_hint(*.can_create))]
    Missing { path: PathBuf, can_create: bool },
    #[error("{0}: not a regular file")]
    NotRegular(PathBuf),
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: read-only (mode {mode:04o}); chmod u+w first if the change is intended")]
    ReadOnlyMode { path: PathBuf, mode: u32 },
    #[error("{path}: not writable: {source}")]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("{path}: write failed, file unchanged: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path}: the new file is in place, but syncing its directory failed, so the change \
         may not survive a crash or power cut: {source}"
    )]
    NotDurable { path: PathBuf, source: io::Error },
    #[error("{0}: changed by another writer during the edit; file unchanged, run again")]
    ChangedMeanwhile(PathBuf),
    #[error(
        "{}: still locked by another process after {}s (a stuck overlaybd-p2p run?); \
         file unchanged, try again",
        .dir.display(),
        .waited.as_secs_f64()
    )]
    Locked { dir: PathBuf, waited: Duration },
}

fn create_hint(can_create: bool) -> &'static str {
    if can_create {
        " (pass --create to create it)"
    } else {
        ""
    }
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

/// Refuses a file that may not or cannot be replaced: no owner write bit,
/// or the kernel says no (immutable or append-only flag, read-only
/// filesystem, or no permission for a non-root user). Nothing is opened for
/// writing, so a refusal leaves no trace.
pub fn check_writable(file: &Loaded) -> Result<(), FileError> {
    let mode = file.meta.permissions().mode() & 0o7777;
    if mode & 0o200 == 0 {
        return Err(FileError::ReadOnlyMode {
            path: file.path.clone(),
            mode,
        });
    }
    kernel_allows_write(&file.path).map_err(|e| classify(&file.path, e))
}

fn kernel_allows_write(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Saves the old content as the backup, then replaces the file. Returns the
/// backup's path. Both temporary files are complete and the original is
/// re-checked before either is renamed into place.
pub fn replace(file: &Loaded, new: &[u8]) -> Result<PathBuf, FileError> {
    replace_with(file, new, &sync_dir)
}

/// Syncs a directory, making renames in it durable; replaceable in tests,
/// where a real failure cannot be produced.
type SyncDir<'a> = &'a dyn Fn(&Path) -> io::Result<()>;

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn replace_with(file: &Loaded, new: &[u8], sync: SyncDir) -> Result<PathBuf, FileError> {
    check_writable(file)?;
    let attrs = Attrs::of(&file.meta);
    let backup = backup_path(&file.path);
    let staged_backup = stage(&backup, &file.bytes, attrs).map_err(|e| classify(&backup, e))?;
    let staged = stage(&file.path, new, attrs).map_err(|e| classify(&file.path, e))?;
    match fs::metadata(&file.path) {
        Ok(now) if same_file_state(&file.meta, &now) => {}
        _ => return Err(FileError::ChangedMeanwhile(file.path.clone())),
    }
    // The file itself is untouched until its own rename, whatever happens here.
    staged_backup.commit(sync).map_err(|e| match e {
        Commit::Rename(e) | Commit::SyncDir(e) => classify(&backup, e),
    })?;
    // Not yet: if this last rename fails, the refreshed backup (identical to
    // the unchanged file) has replaced any older one.
    staged
        .commit(sync)
        .map_err(|e| commit_error(&file.path, e))?;
    Ok(backup)
}

/// Creates a new file (and missing parent directories).
pub fn create(path: &Path, content: &[u8]) -> Result<(), FileError> {
    create_with(path, content, &sync_dir)
}

fn create_with(path: &Path, content: &[u8], sync: SyncDir) -> Result<(), FileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| classify(dir, e))?;
    }
    let attrs = Attrs {
        mode: CREATE_MODE,
        owner: None,
    };
    let staged = stage(path, content, attrs).map_err(|e| classify(path, e))?;
    if fs::symlink_metadata(path).is_ok() {
        return Err(FileError::ChangedMeanwhile(path.to_path_buf()));
    }
    staged.commit(sync).map_err(|e| commit_error(path, e))
}

/// Replaces `path` with `content` through a temporary file and a rename,
/// so a reader sees the old file or the new one, never a part. The rename
/// is not synced to disk: for small files of this tool's own whose loss in
/// a crash is harmless (the restart-pending marker).
pub fn put(path: &Path, content: &[u8]) -> io::Result<()> {
    let attrs = Attrs {
        mode: CREATE_MODE,
        owner: None,
    };
    stage(path, content, attrs)?.rename()
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

fn classify(path: &Path, source: io::Error) -> FileError {
    let path = path.to_path_buf();
    match source.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            FileError::NotWritable { path, source }
        }
        _ => FileError::Write { path, source },
    }
}

fn commit_error(path: &Path, e: Commit) -> FileError {
    match e {
        Commit::Rename(source) => classify(path, source),
        Commit::SyncDir(source) => FileError::NotDurable {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Why a commit failed: before the rename the target is untouched; after
/// it the new content is in place but may not be on disk.
enum Commit {
    Rename(io::Error),
    SyncDir(io::Error),
}

/// A complete, fsynced temporary file waiting to be renamed over `target`;
/// removed on drop unless committed.
struct Staged {
    tmp: Option<PathBuf>,
    target: PathBuf,
}

impl Staged {
    /// Renames the file into place and syncs the directory, so the rename
    /// itself survives a power cut.
    fn commit(self, sync: SyncDir) -> Result<(), Commit> {
        let dir = parent_dir(&self.target).to_path_buf();
        self.rename().map_err(Commit::Rename)?;
        sync(&dir).map_err(Commit::SyncDir)
    }

    /// Renames the file into place; if that fails it is removed on drop.
    fn rename(mut self) -> io::Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let renamed = fs::rename(&tmp, &self.target);
        if renamed.is_err() {
            self.tmp = Some(tmp);
        }
        renamed
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.tmp.take() {
            let _ = fs::remove_file(p);
        }
    }
}

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn stage(target: &Path, bytes: &[u8], attrs: Attrs) -> io::Result<Staged> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = parent_dir(target).join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let staged = Staged {
        tmp: Some(tmp),
        target: target.to_path_buf(),
    };
    f.write_all(bytes)?;
    // chown before chmod: changing the owner clears set-id bits.
    if let Some((uid, gid)) = attrs.owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    f.set_permissions(fs::Permissions::from_mode(attrs.mode))?;
    f.sync_all()?;
    Ok(staged)
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

    /// A directory sync that fails on the `nth` call (1-based), like a disk
    /// returning EIO.
    fn sync_failing_on(nth: usize) -> impl Fn(&Path) -> io::Result<()> {
        let calls = std::cell::Cell::new(0);
        move |dir| {
            calls.set(calls.get() + 1);
            if calls.get() == nth {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                sync_dir(dir)
            }
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_directory_sync_after_the_rename_says_the_file_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        fs::write(&path, b"old").unwrap();
        let loaded = load(&path).unwrap().unwrap();
        // The first sync is the backup's, the second the file's.
        let err = replace_with(&loaded, b"new", &sync_failing_on(2)).unwrap_err();
        assert!(
            matches!(&err, FileError::NotDurable { path: p, .. } if *p == path),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("the new file is in place"), "{msg}");
        assert!(!msg.contains("unchanged"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read(backup_path(&path)).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["overlaybd.json", "overlaybd.json.bak"]);
    }

    #[test]
    fn a_failed_sync_of_the_backup_leaves_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        fs::write(&path, b"old").unwrap();
        let loaded = load(&path).unwrap().unwrap();
        let err = replace_with(&loaded, b"new", &sync_failing_on(1)).unwrap_err();
        assert!(matches!(err, FileError::Write { .. }), "{err:?}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["overlaybd.json", "overlaybd.json.bak"]);
    }

    #[test]
    fn a_failed_directory_sync_after_creating_says_the_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        let err = create_with(&path, b"{}", &sync_failing_on(1)).unwrap_err();
        assert!(matches!(err, FileError::NotDurable { .. }), "{err:?}");
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(names(dir.path()), ["overlaybd.json"]);
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
