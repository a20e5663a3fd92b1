//! A sliding window of one-second buckets giving bytes/s, operations/s and the largest
//! latency over the last `span` complete seconds.
//!
//! Only complete seconds are read: the second in progress would make a rate that jumps as
//! it fills, so values lag by under a second but are exact. Until `span` seconds have passed
//! since start the divisor is the number of complete seconds so far, so early rates are not
//! understated. Reads never change state, so any number of scrapers see the same value.
//! Each bucket is reset lazily by the first write in a new second; one small mutex per
//! window keeps bucket reset and update consistent, held for a few instructions.

use std::sync::Mutex;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Whether `sec` is a second something was recorded in.
    used: bool,
    sec: u64,
    bytes: u64,
    ops: u64,
    max_us: u64,
}

pub(crate) struct Window {
    span: u64,
    buckets: Mutex<Vec<Bucket>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub bytes_per_sec: f64,
    pub ops_per_sec: f64,
    pub max_us: u64,
}

impl Window {
    /// `span` is in seconds, at least 1.
    pub fn new(span: u64) -> Self {
        let span = span.max(1);
        // One more bucket than the span: the second being written is never read.
        let len = usize::try_from(span + 1).expect("window span fits in memory");
        Self {
            span,
            buckets: Mutex::new(vec![Bucket::default(); len]),
        }
    }

    /// One operation that moved `bytes` and took `latency_us`; `sec` counts seconds since
    /// the telemetry started.
    pub fn record(&self, sec: u64, bytes: u64, latency_us: u64) {
        self.update(sec, |b| {
            b.bytes = b.bytes.saturating_add(bytes);
            b.ops += 1;
            b.max_us = b.max_us.max(latency_us);
        });
    }

    /// Bytes moved in second `sec` by an operation still under way.
    pub fn add_bytes(&self, sec: u64, bytes: u64) {
        self.update(sec, |b| b.bytes = b.bytes.saturating_add(bytes));
    }

    /// The end of an operation whose bytes were added as they moved.
    pub fn end_op(&self, sec: u64, latency_us: u64) {
        self.update(sec, |b| {
            b.ops += 1;
            b.max_us = b.max_us.max(latency_us);
        });
    }

    fn update(&self, sec: u64, change: impl FnOnce(&mut Bucket)) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let len = buckets.len() as u64;
        let b = &mut buckets[(sec % len) as usize];
        if b.sec != sec || !b.used {
            *b = Bucket {
                used: true,
                sec,
                ..Bucket::default()
            };
        }
        change(b);
    }

    /// The window ending at the start of second `sec`.
    pub fn read(&self, sec: u64) -> Reading {
        let (mut bytes, mut ops, mut max_us) = (0u64, 0u64, 0u64);
        {
            let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            for b in buckets.iter().filter(|b| b.used) {
                if b.sec < sec && b.sec + self.span >= sec {
                    bytes = bytes.saturating_add(b.bytes);
                    ops += b.ops;
                    max_us = max_us.max(b.max_us);
                }
            }
        }
        let secs = self.span.min(sec);
        if secs == 0 {
            return Reading {
                bytes_per_sec: 0.0,
                ops_per_sec: 0.0,
                max_us: 0,
            };
        }
        Reading {
            bytes_per_sec: bytes as f64 / secs as f64,
            ops_per_sec: ops as f64 / secs as f64,
            max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_in_progress_is_not_counted() {
        let w = Window::new(10);
        w.record(20, 1000, 5);
        assert_eq!(w.read(20).ops_per_sec, 0.0);
        let r = w.read(21);
        assert_eq!(r.bytes_per_sec, 100.0);
        assert_eq!(r.ops_per_sec, 0.1);
        assert_eq!(r.max_us, 5);
    }

    #[test]
    fn bytes_of_a_long_operation_land_in_the_seconds_they_moved() {
        let w = Window::new(4);
        for sec in 10..14 {
            w.add_bytes(sec, 1000);
        }
        w.end_op(14, 4_000_000);
        let r = w.read(14);
        assert_eq!((r.bytes_per_sec, r.ops_per_sec, r.max_us), (1000.0, 0.0, 0));
        let r = w.read(15);
        assert_eq!(r.bytes_per_sec, 750.0);
        assert_eq!(r.ops_per_sec, 0.25);
        assert_eq!(r.max_us, 4_000_000);
    }

    #[test]
    fn sums_the_span_and_forgets_older_seconds() {
        let w = Window::new(4);
        for sec in 10..20 {
            w.record(sec, 10 * sec, sec);
        }
        // Complete seconds 15..=18 at second 19.
        let r = w.read(19);
        assert_eq!(r.bytes_per_sec, (150 + 160 + 170 + 180) as f64 / 4.0);
        assert_eq!(r.ops_per_sec, 1.0);
        assert_eq!(r.max_us, 18);
        // Long after the last write everything has aged out.
        let r = w.read(40);
        assert_eq!((r.bytes_per_sec, r.ops_per_sec, r.max_us), (0.0, 0.0, 0));
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let w = Window::new(2);
        w.record(1, 500, 900);
        // Bucket 4 % 3 == 1 % 3: the old second must not leak into the new one.
        w.record(4, 7, 3);
        let r = w.read(5);
        assert_eq!(r.bytes_per_sec, 7.0 / 2.0);
        assert_eq!(r.max_us, 3);
    }

    #[test]
    fn early_rates_divide_by_the_seconds_elapsed() {
        let w = Window::new(10);
        w.record(0, 300, 1);
        w.record(1, 300, 1);
        assert_eq!(w.read(2).bytes_per_sec, 300.0);
    }

    #[test]
    fn reading_changes_nothing() {
        let w = Window::new(3);
        w.record(5, 60, 2);
        let first = w.read(6);
        assert_eq!(w.read(6), first);
        assert_eq!(first.bytes_per_sec, 60.0 / 3.0);
    }
}
