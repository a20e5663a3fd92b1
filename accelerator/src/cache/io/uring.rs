//! The io_uring backend: one ring owned by one dedicated thread. Callers send an [`Op`]
//! (owned buffer, `Arc<File>`, offset) over a bounded channel and await a oneshot with the
//! result. The thread keeps a read of an eventfd always armed in the ring, so a single
//! `submit_and_wait` sleeps until either a file operation completes or a sender writes the
//! eventfd; nothing polls. Senders write the eventfd only when the thread has said it is
//! about to sleep (a `parked` flag set before its last look at the channel), so a busy
//! ring costs no extra syscall per request. Buffers and files live in the thread's slot
//! table until their completion is reaped, so a caller that gives up early cannot free
//! memory the kernel is still writing. Short transfers are resubmitted for the remainder,
//! so callers see the same exact-length contract as `pread`/`pwrite`.
//!
//! One ring copies every buffered read on its own thread, one after another; spreading
//! requests over a ring per core did not measurably help on the 2-core development machine,
//! so it is not done.
//!
//! If the kernel refuses io_uring (too old, `kernel.io_uring_disabled`, a seccomp filter),
//! [`Ring::start`] fails with the kernel's error and the cache reports it at open.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_uring::{opcode, types, IoUring};
use tokio::sync::{mpsc, oneshot};

/// Submission queue size; one entry stays reserved for the eventfd read.
const RING_ENTRIES: u32 = 128;
/// Requests waiting for a free ring entry before senders are made to wait.
const CHANNEL_DEPTH: usize = 1024;
const WAKE: u64 = u64::MAX;

enum Kind {
    Read,
    Write,
}

struct Op {
    kind: Kind,
    file: Arc<File>,
    offset: u64,
    buf: Vec<u8>,
    done: usize,
    reply: oneshot::Sender<io::Result<Vec<u8>>>,
}

pub struct Ring {
    /// `None` only while dropping, so the channel is closed before the thread is woken.
    tx: Option<mpsc::Sender<Op>>,
    wake: Arc<Wake>,
}

/// How senders wake the ring thread.
struct Wake {
    fd: OwnedFd,
    /// Set by the thread just before it may sleep; the first sender to see it pokes `fd`.
    parked: AtomicBool,
}

impl Wake {
    fn poke_if_parked(&self) -> io::Result<()> {
        if self.parked.swap(false, Ordering::SeqCst) {
            poke(&self.fd)
        } else {
            Ok(())
        }
    }
}

impl Ring {
    pub fn start() -> io::Result<Ring> {
        let mut ring = IoUring::new(RING_ENTRIES)?;
        probe(&mut ring)?;
        // SAFETY: eventfd returns a fresh descriptor or -1, checked before wrapping.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        let wake = Arc::new(Wake {
            fd: unsafe { OwnedFd::from_raw_fd(efd) },
            parked: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let thread_wake = wake.clone();
        std::thread::Builder::new()
            .name("cache-uring".into())
            .spawn(move || run(ring, rx, thread_wake))?;
        Ok(Ring { tx: Some(tx), wake })
    }

    async fn submit(
        &self,
        kind: Kind,
        file: Arc<File>,
        offset: u64,
        buf: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        let op = Op {
            kind,
            file,
            offset,
            buf,
            done: 0,
            reply,
        };
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(op).await.map_err(|_| stopped())?;
        self.wake.poke_if_parked()?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn read_at(&self, file: Arc<File>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.submit(Kind::Read, file, offset, vec![0u8; len]).await
    }

    pub async fn write_at(&self, file: Arc<File>, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.submit(Kind::Write, file, offset, data).await.map(drop)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Close the channel first, then wake the thread so it notices and exits.
        self.tx = None;
        let _ = poke(&self.wake.fd);
    }
}

fn stopped() -> io::Error {
    io::Error::other("io_uring thread stopped")
}

fn poke(fd: &OwnedFd) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live stack buffer to an eventfd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Proves the ring works end to end (some sandboxes allow setup but refuse submission).
fn probe(ring: &mut IoUring) -> io::Result<()> {
    let nop = opcode::Nop::new().build().user_data(0);
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("ring full"))?;
    ring.submit_and_wait(1)?;
    let res = ring
        .completion()
        .next()
        .map(|c| c.result())
        .unwrap_or(-libc::EIO);
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    Ok(())
}

fn sqe_for(op: &mut Op, slot: u64) -> io_uring::squeue::Entry {
    let fd = types::Fd(op.file.as_raw_fd());
    let at = op.offset + op.done as u64;
    let rest = (op.buf.len() - op.done).min(u32::MAX as usize) as u32;
    // SAFETY (of the pointers): the buffer stays in the slot table, unmoved, until reaped.
    let ptr = unsafe { op.buf.as_mut_ptr().add(op.done) };
    match op.kind {
        Kind::Read => opcode::Read::new(fd, ptr, rest).offset(at).build(),
        Kind::Write => opcode::Write::new(fd, ptr, rest).offset(at).build(),
    }
    .user_data(slot)
}

fn run(mut ring: IoUring, mut rx: mpsc::Receiver<Op>, wake: Arc<Wake>) {
    // The eventfd read may still be pending in the kernel when this thread ends, so its
    // 8-byte target is leaked once per ring rather than freed under the kernel.
    let wake_buf: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
    let wake_ptr = wake_buf.as_mut_ptr();
    let arm = || {
        opcode::Read::new(types::Fd(wake.fd.as_raw_fd()), wake_ptr, 8)
            .build()
            .user_data(WAKE)
    };
    let mut slots: Vec<Option<Op>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut inflight = 0usize;
    let mut pending = vec![arm()];
    let mut reaped: Vec<(u64, i32)> = Vec::new();
    loop {
        let mut closed = false;
        while inflight + 1 < RING_ENTRIES as usize {
            match rx.try_recv() {
                Ok(mut op) => {
                    let slot = free.pop().unwrap_or_else(|| {
                        slots.push(None);
                        slots.len() - 1
                    });
                    pending.push(sqe_for(&mut op, slot as u64));
                    slots[slot] = Some(op);
                    inflight += 1;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed && inflight == 0 {
            return;
        }
        for sqe in pending.drain(..) {
            // SAFETY: every entry's buffer is owned by `slots` or leaked; at most
            // RING_ENTRIES - 1 operations plus the wake read are ever outstanding.
            unsafe { ring.submission().push(&sqe) }.expect("ring has room by construction");
        }
        // Announce the sleep, then look once more: a request sent before the flag was set
        // is seen here, one sent after it finds the flag and pokes the eventfd.
        // With every slot taken, the requests waiting must wait for a completion too:
        // returning at once would spin this thread until one arrives.
        wake.parked.store(true, Ordering::SeqCst);
        let full = inflight + 1 >= RING_ENTRIES as usize;
        let want = if full || rx.is_empty() { 1 } else { 0 };
        let submitted = ring.submit_and_wait(want);
        wake.parked.store(false, Ordering::SeqCst);
        match submitted {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "io_uring submit failed; failing requests");
                for op in slots.iter_mut().filter_map(Option::take) {
                    let _ = op.reply.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
                return;
            }
        }
        reaped.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (slot, res) in reaped.drain(..) {
            if slot == WAKE {
                pending.push(arm());
                continue;
            }
            let s = slot as usize;
            let op = slots[s].as_mut().expect("completion for a live slot");
            let outcome = match res {
                r if r == -libc::EINTR || r == -libc::EAGAIN => None,
                r if r < 0 => Some(Err(io::Error::from_raw_os_error(-r))),
                0 => Some(Err(match op.kind {
                    Kind::Read => io::ErrorKind::UnexpectedEof.into(),
                    Kind::Write => io::ErrorKind::WriteZero.into(),
                })),
                n => {
                    op.done += n as usize;
                    (op.done == op.buf.len()).then_some(Ok(()))
                }
            };
            match outcome {
                None => pending.push(sqe_for(op, slot)),
                Some(result) => {
                    let op = slots[s].take().expect("live slot");
                    free.push(s);
                    inflight -= 1;
                    let _ = op.reply.send(result.map(|()| op.buf));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More reads than the ring has entries, all at once: those beyond its room wait for
    /// completions, and every one gets its own bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_requests_than_entries_all_complete() {
        const LEN: usize = 1 << 20;
        let ring = Arc::new(Ring::start().unwrap());
        let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let file = Arc::new(file);
        let reads = 8 * RING_ENTRIES as usize;
        let tasks: Vec<_> = (0..reads)
            .map(|i| {
                let (ring, file) = (ring.clone(), file.clone());
                tokio::spawn(async move {
                    let at = (i * 1000) % (LEN - 512);
                    (at, ring.read_at(file, at as u64, 512).await)
                })
            })
            .collect();
        for t in tasks {
            let (at, got) = t.await.unwrap();
            assert_eq!(got.unwrap(), data[at..at + 512]);
        }
    }
}
