//! A bounded load generator: N keep-alive connections each sending range reads of one blob as
//! fast as answers come back, until a fixed request count or a time cap is reached, whichever
//! is first. Latency is measured per request, from send to last body byte.
//!
//! Each answer must be 206 with exactly the requested length; anything else counts as an
//! error (and is not counted as served bytes). Offsets of random reads come from a seeded
//! generator, so two targets see the same sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::http::{range, Conn};
use crate::process::split_loopback_url;
use crate::Result;

/// Alignment of random reads: the block size of the file systems overlaybd images carry.
pub const RANDOM_ALIGN: u64 = 4096;

/// Which ranges are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Pattern {
    /// `block` bytes at random 4 KiB-aligned offsets.
    Random { block: u64 },
    /// Consecutive `block`-sized ranges shared by all connections, wrapping at the end.
    Sequential { block: u64 },
}

/// One cell of a load matrix.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Full loopback URL of the blob (through whichever server is measured).
    pub url: String,
    /// Extra request headers (e.g. `authorization`).
    pub headers: Vec<(String, String)>,
    pub blob_size: u64,
    pub pattern: Pattern,
    pub connections: usize,
    /// Total requests over all connections.
    pub requests: u64,
    /// Stop sending new requests after this long.
    pub time_cap: Duration,
    pub seed: u64,
}

/// What a cell measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub mbps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Whether the time cap ended the cell before the request count did.
    pub capped: bool,
}

/// Runs one cell: opens the connections, drives them to completion, aggregates.
pub async fn run(spec: &LoadSpec) -> Result<LoadResult> {
    let (addr, path) = split_loopback_url(&spec.url)?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + spec.time_cap;
    let mut workers = Vec::with_capacity(spec.connections);
    for worker in 0..spec.connections {
        let conn = Conn::connect(addr).await?;
        let job = Worker {
            conn,
            path: path.clone(),
            headers: spec.headers.clone(),
            next: next.clone(),
            spec: spec.clone(),
            deadline,
            rng: SmallRng::seed_from_u64(spec.seed.wrapping_add(worker as u64)),
        };
        workers.push(tokio::spawn(job.run()));
    }
    let mut latencies = Vec::new();
    let (mut bytes, mut errors) = (0, 0);
    for worker in workers {
        let tally = worker.await.expect("load worker panicked");
        latencies.extend(tally.latencies_us);
        bytes += tally.bytes;
        errors += tally.errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    Ok(LoadResult {
        requests,
        errors,
        bytes,
        seconds,
        mbps: bytes as f64 / seconds / 1e6,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        max_us: latencies.last().copied().unwrap_or(0),
        capped: requests < spec.requests,
    })
}

fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Worker {
    conn: Conn,
    path: String,
    headers: Vec<(String, String)>,
    next: Arc<AtomicU64>,
    spec: LoadSpec,
    deadline: Instant,
    rng: SmallRng,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    bytes: u64,
    errors: u64,
}

impl Worker {
    async fn run(mut self) -> Tally {
        let mut tally = Tally::default();
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.spec.requests || Instant::now() >= self.deadline {
                return tally;
            }
            let (start, len) = self.pick(index);
            let range = range(start, start + len - 1);
            let mut headers: Vec<(&str, &str)> = self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            headers.push(("range", &range));
            let sent = Instant::now();
            match self.conn.get_counted(&self.path, &headers).await {
                Ok((StatusCode::PARTIAL_CONTENT, n)) if n == len => {
                    tally.bytes += n;
                    tally
                        .latencies_us
                        .push(sent.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                }
                Ok((status, n)) => {
                    tracing::debug!(%status, bytes = n, expected = len, "bad answer");
                    tally.errors += 1;
                }
                Err(error) => {
                    tracing::debug!(%error, "request failed");
                    tally.errors += 1;
                    // A broken connection cannot carry more requests.
                    match Conn::connect(self.conn.addr()).await {
                        Ok(conn) => self.conn = conn,
                        Err(_) => return tally,
                    }
                }
            }
        }
    }

    /// Offset and length of request number `index`.
    fn pick(&mut self, index: u64) -> (u64, u64) {
        let size = self.spec.blob_size;
        match self.spec.pattern {
            Pattern::Random { block } => {
                let block = block.min(size);
                let slots = (size - block) / RANDOM_ALIGN + 1;
                (self.rng.random_range(0..slots) * RANDOM_ALIGN, block)
            }
            Pattern::Sequential { block } => {
                let blocks = size.div_ceil(block);
                let start = (index % blocks) * block;
                (start, block.min(size - start))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
