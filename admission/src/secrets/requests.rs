//! Pull secrets the webhook asks the controller to copy: a set of pending originals and a
//! wake-up.
//!
//! The webhook must answer without waiting, and every Pod of a workload asks for the same
//! originals, so requests go into a set keyed by namespace and name: a rollout of a thousand
//! Pods is one entry, and a request is only lost when more distinct originals than
//! [`MAX_PENDING`] wait at once. That bound is a last resort against unbounded memory; the
//! caller counts what it drops. The controller takes the whole set at a time, so a request
//! made while it works is picked up on its next turn.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Most distinct originals waiting for the controller at once.
pub const MAX_PENDING: usize = 10_000;

/// A pull secret whose P2P copy a Pod now refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Added,
    /// The same original is already waiting.
    AlreadyPending,
    /// [`MAX_PENDING`] other originals are waiting; the request was dropped.
    Full,
    /// The controller has stopped taking requests.
    Closed,
}

#[derive(Default)]
struct State {
    pending: BTreeSet<SecretRef>,
    closed: bool,
}

pub struct Requests {
    state: Mutex<State>,
    wake: Notify,
    limit: usize,
}

impl Default for Requests {
    fn default() -> Self {
        Self::with_limit(MAX_PENDING)
    }
}

impl Requests {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limit(limit: usize) -> Self {
        Self {
            state: Mutex::default(),
            wake: Notify::new(),
            limit,
        }
    }

    /// Adds a request without waiting.
    pub fn push(&self, r: SecretRef) -> Queued {
        let mut st = self.state.lock().expect("requests lock");
        let queued = if st.closed {
            Queued::Closed
        } else if st.pending.contains(&r) {
            Queued::AlreadyPending
        } else if st.pending.len() >= self.limit {
            Queued::Full
        } else {
            st.pending.insert(r);
            Queued::Added
        };
        drop(st);
        if queued == Queued::Added {
            self.wake.notify_one();
        }
        queued
    }

    /// Takes every pending request now, possibly none.
    pub fn take(&self) -> Vec<SecretRef> {
        let mut st = self.state.lock().expect("requests lock");
        std::mem::take(&mut st.pending).into_iter().collect()
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("requests lock").pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses new requests; those pending are still handed out by [`Requests::next`].
    pub fn close(&self) {
        self.state.lock().expect("requests lock").closed = true;
        self.wake.notify_one();
    }

    /// Waits for requests and takes them all; `None` once closed and empty. Cancel-safe:
    /// requests are only taken when it returns them.
    pub async fn next(&self) -> Option<Vec<SecretRef>> {
        loop {
            {
                let mut st = self.state.lock().expect("requests lock");
                if !st.pending.is_empty() {
                    return Some(std::mem::take(&mut st.pending).into_iter().collect());
                }
                if st.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a push between the check
            // above and this wait is not missed.
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> SecretRef {
        SecretRef {
            namespace: "apps".into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_same_original_waits_once() {
        let q = Requests::new();
        assert_eq!(q.push(r("reg")), Queued::Added);
        for _ in 0..5_000 {
            assert_eq!(q.push(r("reg")), Queued::AlreadyPending);
        }
        assert_eq!(q.push(r("other")), Queued::Added);
        assert_eq!(q.take(), [r("other"), r("reg")]);
        assert!(q.is_empty());
        assert_eq!(
            q.push(r("reg")),
            Queued::Added,
            "taken requests can come again"
        );
    }

    #[test]
    fn only_distinct_originals_beyond_the_limit_are_dropped() {
        let q = Requests::with_limit(2);
        assert_eq!(q.push(r("a")), Queued::Added);
        assert_eq!(q.push(r("b")), Queued::Added);
        assert_eq!(q.push(r("c")), Queued::Full);
        assert_eq!(q.push(r("a")), Queued::AlreadyPending);
        assert_eq!(q.len(), 2);
        q.take();
        assert_eq!(q.push(r("c")), Queued::Added);
    }

    #[tokio::test]
    async fn next_wakes_on_push_and_ends_after_close() {
        let q = std::sync::Arc::new(Requests::new());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move {
                let mut got = Vec::new();
                while let Some(batch) = q.next().await {
                    got.extend(batch);
                }
                got
            }
        });
        tokio::task::yield_now().await;
        q.push(r("a"));
        tokio::task::yield_now().await;
        q.push(r("b"));
        q.close();
        assert_eq!(q.push(r("c")), Queued::Closed);
        let got = waiter.await.unwrap();
        assert_eq!(got, [r("a"), r("b")], "pending requests outlive the close");
    }
}
