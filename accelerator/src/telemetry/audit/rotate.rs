//! `<dir>/audit.log` with size-based rotation: when the next line would take the file past
//! its limit, `audit.log.<n>` becomes `audit.log.<n+1>` (the one beyond `keep` is deleted),
//! `audit.log` becomes `audit.log.1`, and a new `audit.log` is started. With `keep == 0` the
//! file is simply started over. Lines are never split across files, so one line longer than
//! the limit makes a file of its own that exceeds it.
//!
//! The size is tracked from what this process wrote plus the file's length when it was
//! opened, so the file is not stat-ed per line; an external writer to the same file would
//! make rotation late, which nothing legitimate does.
//!
//! A file removed or moved away from under the writer (by hand, or by logrotate without
//! `copytruncate`) is noticed at the next flush, when the writer catches up with its queue:
//! a new `audit.log` is started and the files already rotated are left as they are.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::writer::LineSink;

pub(crate) const FILE_NAME: &str = "audit.log";

pub(crate) struct RotatingFile {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Creates `dir` if needed and appends to an existing `audit.log`.
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let (file, size) = open_append(&dir.join(FILE_NAME))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            keep,
            file,
            size,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{FILE_NAME}.{n}"))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let current = self.dir.join(FILE_NAME);
        if self.keep == 0 {
            fs::remove_file(&current).or_else(ignore_missing)?;
        } else {
            fs::remove_file(self.numbered(self.keep)).or_else(ignore_missing)?;
            for n in (1..self.keep).rev() {
                fs::rename(self.numbered(n), self.numbered(n + 1)).or_else(ignore_missing)?;
            }
            fs::rename(&current, self.numbered(1)).or_else(ignore_missing)?;
        }
        let (file, size) = open_append(&current)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

impl LineSink for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let current = self.dir.join(FILE_NAME);
        let open = self.file.get_ref().metadata()?;
        let same = match fs::metadata(&current) {
            Ok(now) => (now.dev(), now.ino()) == (open.dev(), open.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !same {
            let (file, size) = open_append(&current)?;
            self.file = file;
            self.size = size;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> Option<String> {
        fs::read_to_string(dir.join(name)).ok()
    }

    #[test]
    fn a_removed_or_moved_file_is_started_again_without_touching_the_rotated_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut f = RotatingFile::open(&dir, 20, 2).unwrap();
        for i in 0..3 {
            f.write_line(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        assert_eq!(read(&dir, "audit.log.1").unwrap(), "line 0000\nline 0001\n");

        fs::remove_file(dir.join("audit.log")).unwrap();
        f.flush().unwrap();
        for i in 3..5 {
            f.write_line(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        assert_eq!(read(&dir, "audit.log").unwrap(), "line 0003\nline 0004\n");
        assert_eq!(read(&dir, "audit.log.1").unwrap(), "line 0000\nline 0001\n");

        // Moved away, as logrotate does: the next lines go to a new file.
        fs::rename(dir.join("audit.log"), dir.join("moved")).unwrap();
        f.flush().unwrap();
        f.write_line(b"line 0005\n").unwrap();
        f.flush().unwrap();
        assert_eq!(read(&dir, "audit.log").unwrap(), "line 0005\n");
        assert_eq!(read(&dir, "moved").unwrap(), "line 0003\nline 0004\n");

        // Removed with a line still unflushed (it goes with the removed file): rotation
        // finds nothing to rename, moves the older files up and goes on.
        f.write_line(b"line 0006\n").unwrap();
        fs::remove_file(dir.join("audit.log")).unwrap();
        f.write_line(b"line 0007\n").unwrap();
        f.flush().unwrap();
        assert_eq!(read(&dir, "audit.log.2").unwrap(), "line 0000\nline 0001\n");
        assert_eq!(read(&dir, "audit.log").unwrap(), "line 0007\n");
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut f = RotatingFile::open(&dir, 20, 2).unwrap();
        for i in 0..5 {
            // 10 bytes each: two lines fill a file.
            f.write_line(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        assert_eq!(read(&dir, "audit.log").unwrap(), "line 0004\n");
        assert_eq!(read(&dir, "audit.log.1").unwrap(), "line 0002\nline 0003\n");
        assert_eq!(read(&dir, "audit.log.2").unwrap(), "line 0000\nline 0001\n");
        assert_eq!(read(&dir, "audit.log.3"), None);
        f.write_line(b"line 0005\n").unwrap();
        f.write_line(b"line 0006\n").unwrap();
        f.flush().unwrap();
        // The oldest pair is gone, the rest moved up.
        assert_eq!(read(&dir, "audit.log").unwrap(), "line 0006\n");
        assert_eq!(read(&dir, "audit.log.1").unwrap(), "line 0004\nline 0005\n");
        assert_eq!(read(&dir, "audit.log.2").unwrap(), "line 0002\nline 0003\n");
        assert_eq!(read(&dir, "audit.log.3"), None);
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("audit.log"), "old line\n").unwrap();
        let mut f = RotatingFile::open(tmp.path(), 12, 1).unwrap();
        f.write_line(b"new line\n").unwrap();
        f.flush().unwrap();
        assert_eq!(read(tmp.path(), "audit.log.1").unwrap(), "old line\n");
        assert_eq!(read(tmp.path(), "audit.log").unwrap(), "new line\n");
    }

    #[test]
    fn keep_zero_starts_over_and_a_long_line_is_not_split() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(tmp.path(), 8, 0).unwrap();
        f.write_line(b"abc\n").unwrap();
        f.write_line(b"a line longer than eight\n").unwrap();
        f.flush().unwrap();
        assert_eq!(
            read(tmp.path(), "audit.log").unwrap(),
            "a line longer than eight\n"
        );
        assert_eq!(read(tmp.path(), "audit.log.1"), None);
    }
}
