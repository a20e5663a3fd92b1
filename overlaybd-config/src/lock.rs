//! The lock that serialises runs of this tool on one node: an exclusive
//! `flock` on the directory holding the config file, so two runs (say a
//! configuration-management agent and an operator) cannot interleave their
//! read, edit and write. Editors that do not take it are caught by the
//! re-check before the rename in `file`.
//!
//! The lock is tried without blocking and retried until a deadline: a
//! blocking `flock` would leave every later run hanging behind one that is
//! stuck. The directory, not the file, is locked because the file is
//! replaced by a rename and a lock on the old inode would guard nothing.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::file::{parent_dir, FileError};

/// How long a run waits for the directory lock. A run holds it only from
/// its read to its write, well under a second, so a holder past this is
/// stuck; giving up lets the next run (or the operator) see that instead of
/// every later run hanging behind it.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting run tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// Held while one run reads, edits and writes.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Takes an exclusive `flock` on the directory holding `path` (after
/// resolving symlinks), waiting up to [`LOCK_WAIT`] for another holder;
/// `None` when that directory does not exist yet.
pub fn lock_dir(path: &Path) -> Result<Option<DirLock>, FileError> {
    lock_dir_within(path, LOCK_WAIT)
}

fn lock_dir_within(path: &Path, wait: Duration) -> Result<Option<DirLock>, FileError> {
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = parent_dir(&real);
    let read_err = |source| FileError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let f = match File::open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a file descriptor owned by `f`, which outlives the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(DirLock { _dir: f }));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => {}
            Some(libc::EINTR) => continue,
            _ => return Err(read_err(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FileError::Locked {
                dir: dir.to_path_buf(),
                waited: wait,
            });
        }
        tracing::debug!(dir = %dir.display(), "directory locked by another process; waiting");
        std::thread::sleep(LOCK_RETRY.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        let try_lock = || {
            let f = File::open(dir.path()).unwrap();
            // SAFETY: flock on a descriptor owned by `f`.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
        };
        let held = lock_dir(&path).unwrap().expect("directory exists");
        assert!(!try_lock(), "second lock must fail while held");
        drop(held);
        assert!(try_lock());
        assert!(lock_dir(&dir.path().join("no/such/file"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_held_lock_is_given_up_on_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        let held = lock_dir(&path).unwrap().expect("directory exists");
        let wait = Duration::from_millis(300);
        let started = Instant::now();
        let err = lock_dir_within(&path, wait).unwrap_err();
        assert!(started.elapsed() >= wait, "gave up early");
        assert!(matches!(&err, FileError::Locked { dir: d, .. } if d == dir.path()));
        assert!(err
            .to_string()
            .contains("still locked by another process after 0.3s"));
        drop(held);
        assert!(lock_dir_within(&path, wait).unwrap().is_some());
    }

    #[test]
    fn a_lock_released_during_the_wait_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlaybd.json");
        let held = lock_dir(&path).unwrap().expect("directory exists");
        let started = Instant::now();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || lock_dir_within(&path, Duration::from_secs(30)))
        };
        // The waiter cannot have the lock before this drop, however the
        // threads are scheduled.
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        let lock = waiter.join().unwrap().unwrap();
        assert!(lock.is_some());
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
