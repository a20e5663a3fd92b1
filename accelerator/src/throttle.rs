//! The downstream throughput cap (`throttleLimitMB`): one token bucket shared by every
//! response, so the node's disk and the applications beside the daemon keep their share.
//!
//! The bucket holds at most a tenth of a second of tokens: enough to let bursts of small
//! reads through at once, small enough that the cap holds over any second. A caller that
//! overdraws sleeps for the deficit rather than polling.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Throttle {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `None` when `mb_per_sec` is 0 (no cap).
    pub fn new(mb_per_sec: u64) -> Option<Throttle> {
        if mb_per_sec == 0 {
            return None;
        }
        let rate = mb_per_sec as f64 * 1_000_000.0;
        let burst = (rate / 10.0).max(1_048_576.0);
        Some(Throttle {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        })
    }

    /// How long a caller about to send `bytes` must wait first.
    fn debit(&self, bytes: u64) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        let left = refilled - bytes as f64;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }

    pub async fn take(&self, bytes: u64) {
        let wait = self.debit(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_no_cap() {
        assert!(Throttle::new(0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn overdraw_waits_for_the_deficit() {
        let t = Throttle::new(1).unwrap(); // 1 MB/s, burst 1 MiB
        assert_eq!(t.debit(1_048_576), Duration::ZERO);
        let wait = t.debit(500_000);
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        tokio::time::advance(Duration::from_secs(10)).await;
        // Refill is capped at the burst size.
        assert_eq!(t.debit(1_048_576), Duration::ZERO);
        assert!(t.debit(1) > Duration::ZERO);
    }
}
