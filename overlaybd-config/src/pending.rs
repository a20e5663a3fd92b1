//! The restart-pending marker: `<config>.restart-pending` beside the config
//! file (symlinks resolved, as for the backup), present while a change
//! written by a `--restart` run still waits for a successful restart.
//!
//! A `--restart` run restarts overlaybd only when it changes the file, so a
//! configuration-management tool re-running the same command does not bounce
//! overlaybd on every pass. Without a record of the failure, a retry after a
//! failed restart would find nothing to change, skip the restart and report
//! success while overlaybd is stopped or on the old settings. So a
//! `--restart` run that writes the file marks the restart as pending before
//! attempting it (a run killed mid-restart leaves the mark too), a later
//! `--restart` run restarts whenever the mark is there, changed file or not,
//! and the mark is removed once a restart succeeds.
//!
//! Only its presence counts; it holds the unit's name for whoever finds it.
//! Its loss in a crash is harmless, as overlaybd reads the file afresh when
//! the node comes back, so it is written atomically but not synced. Dry runs,
//! runs without `--restart` and `status` only report it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::file;

/// Where the marker for `config` (a resolved path) lives.
pub fn path(config: &Path) -> PathBuf {
    let mut name = config.file_name().unwrap_or_default().to_os_string();
    name.push(".restart-pending");
    config.with_file_name(name)
}

/// Whether a restart is pending; anything at the marker's path counts.
pub fn is_pending(config: &Path) -> bool {
    fs::symlink_metadata(path(config)).is_ok()
}

/// Records that `service` must be restarted for `config` to take effect.
pub fn mark(config: &Path, service: &str) -> io::Result<()> {
    file::put(&path(config), format!("{service}\n").as_bytes())
}

/// Removes the marker; an absent marker is fine.
pub fn clear(config: &Path) -> io::Result<()> {
    match fs::remove_file(path(config)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_then_clear() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("overlaybd.json");
        let marker = dir.path().join("overlaybd.json.restart-pending");
        assert_eq!(path(&config), marker);
        assert!(!is_pending(&config));
        clear(&config).unwrap();
        mark(&config, "overlaybd-tcmu").unwrap();
        assert!(is_pending(&config));
        assert_eq!(fs::read_to_string(&marker).unwrap(), "overlaybd-tcmu\n");
        mark(&config, "other-unit").unwrap();
        assert_eq!(fs::read_to_string(&marker).unwrap(), "other-unit\n");
        clear(&config).unwrap();
        assert!(!is_pending(&config));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "no temporary file left: {names:?}");
    }

    #[test]
    fn marking_in_a_missing_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gone/overlaybd.json");
        assert!(mark(&config, "overlaybd-tcmu").is_err());
        assert!(!is_pending(&config));
    }
}
