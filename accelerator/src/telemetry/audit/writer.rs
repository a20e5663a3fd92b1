//! The audit writer: a dedicated thread fed by a bounded channel.
//!
//! A thread rather than a task because the sinks do blocking writes and the writer must
//! keep running while the runtime shuts down. The data path only ever calls `try_send`:
//! when the channel is full (a slow disk, a stalled stdout pipe) the line is dropped and
//! counted, so auditing can lose lines but never delays a read. A line the sink fails to
//! take (a full disk, a failed rotation) is counted the same way, so every line offered is
//! either written or counted. The sink is flushed whenever the channel runs empty, so lines
//! reach the file within one batch of being written.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::AuditRecord;

/// Where formatted lines go.
pub(crate) trait LineSink: Send {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

pub(crate) struct StdoutSink(io::BufWriter<io::Stdout>);

impl Default for StdoutSink {
    fn default() -> Self {
        Self(io::BufWriter::new(io::stdout()))
    }
}

impl LineSink for StdoutSink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.0.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

enum Msg {
    Line(AuditRecord),
    Stop(oneshot::Sender<()>),
}

pub(crate) struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    dropped: Counter,
    stopping: AtomicBool,
}

impl AuditHandle {
    /// `lines` is the channel capacity; at least 1.
    pub fn spawn(sink: Box<dyn LineSink>, lines: usize, dropped: Counter) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(lines.max(1));
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("dadi-audit".into())
            .spawn(move || run(rx, sink, lost))?;
        Ok(Self {
            tx,
            dropped,
            stopping: AtomicBool::new(false),
        })
    }

    pub fn send(&self, rec: AuditRecord) {
        if self.stopping.load(Ordering::Relaxed) || self.tx.try_send(Msg::Line(rec)).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until every line queued before this call is written and flushed, then ends
    /// the writer. Calling it twice is harmless.
    pub async fn stop(&self) {
        if self.stopping.swap(true, Ordering::Relaxed) {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

fn run(mut rx: mpsc::Receiver<Msg>, mut sink: Box<dyn LineSink>, lost: Counter) {
    let mut line = String::with_capacity(512);
    let mut failing = false;
    let mut write = |sink: &mut Box<dyn LineSink>, rec: &AuditRecord| {
        line.clear();
        rec.format_into(&mut line);
        match sink.write_line(line.as_bytes()) {
            Ok(()) => failing = false,
            Err(error) => {
                lost.inc();
                if !failing {
                    failing = true;
                    tracing::warn!(%error, "audit log write failed; lines are being lost");
                }
            }
        }
    };
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(rec) => write(&mut sink, &rec),
                Msg::Stop(done) => {
                    rx.close();
                    while let Ok(Msg::Line(rec)) = rx.try_recv() {
                        write(&mut sink, &rec);
                    }
                    flush(&mut sink);
                    let _ = done.send(());
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&mut sink);
    }
    flush(&mut sink);
}

fn flush(sink: &mut Box<dyn LineSink>) {
    if let Err(error) = sink.flush() {
        tracing::warn!(%error, "audit log flush failed");
    }
}
