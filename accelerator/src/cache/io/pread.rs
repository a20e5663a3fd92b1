//! The default backend: `pread`/`pwrite` through std's `FileExt` on tokio's blocking pool.
//! A page-cache hit costs one syscall plus a thread hand-off; the pool's threads are
//! bounded by tokio and by the number of concurrent readers above us.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::joined;

pub async fn read_at(file: Arc<File>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    joined(
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await,
    )
}

pub async fn write_at(file: Arc<File>, offset: u64, data: Vec<u8>) -> io::Result<()> {
    joined(tokio::task::spawn_blocking(move || file.write_all_at(&data, offset)).await)
}
