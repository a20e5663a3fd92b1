//! The default backend: positioned reads and writes with std's `FileExt`.
//!
//! A read first tries `preadv2(RWF_NOWAIT)` right on the calling task: when the bytes are
//! in the page cache (the warm case this cache exists for) that is one syscall and a copy,
//! with no hand-off to another thread and back, which is what keeps warm-read tail latency
//! low when many readers compete for few cores. Whatever the page cache cannot supply
//! without blocking (`EAGAIN`, or a short read) is read on tokio's blocking pool. Kernels
//! or filesystems without `RWF_NOWAIT` switch the fast path off for the process. Writes
//! always go to the blocking pool, since a write can stall on dirty-page throttling.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::joined;

/// Reads longer than this skip the inline attempt, bounding the time a task holds its
/// runtime thread for one copy.
const INLINE_MAX: usize = 2 << 20;

static NOWAIT_WORKS: AtomicBool = AtomicBool::new(true);

pub async fn read_at(file: Arc<File>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    // Not zeroed first: the page-cache copy fills it, and zeroing cost as much as a tenth of
    // a warm 64 KiB read.
    let mut buf = Vec::with_capacity(len);
    if len <= INLINE_MAX && NOWAIT_WORKS.load(Ordering::Relaxed) {
        read_cached(&file, &mut buf, offset, len);
    }
    let done = buf.len();
    if done == len {
        return Ok(buf);
    }
    buf.resize(len, 0);
    joined(
        tokio::task::spawn_blocking(move || {
            file.read_exact_at(&mut buf[done..], offset + done as u64)?;
            Ok(buf)
        })
        .await,
    )
}

/// Appends to `buf` (up to `len` bytes) what the page cache holds without blocking.
fn read_cached(file: &File, buf: &mut Vec<u8>, offset: u64, len: usize) {
    while buf.len() < len {
        let done = buf.len();
        let rest = &mut buf.spare_capacity_mut()[..len - done];
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let at = (offset + done as u64) as libc::off_t;
        // SAFETY: one iovec over the vector's own spare capacity, which nothing else uses.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
        if n > 0 {
            // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(done + n as usize) };
            continue;
        }
        if n < 0 {
            let e = io::Error::last_os_error().raw_os_error();
            if matches!(e, Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)) {
                NOWAIT_WORKS.store(false, Ordering::Relaxed);
            }
        }
        // EAGAIN, end of file, or any other error: the blocking read decides.
        break;
    }
}

pub async fn write_at(file: Arc<File>, offset: u64, data: Vec<u8>) -> io::Result<()> {
    joined(tokio::task::spawn_blocking(move || file.write_all_at(&data, offset)).await)
}
