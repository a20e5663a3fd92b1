//! `proxyConcurrencyLimit`: how many blobs may be downloading from upstream at once.
//!
//! The limit is on blobs, not pieces, as documented: the first piece download of a blob takes
//! a slot and every further piece of that blob shares it, so read-ahead inside a layer never
//! queues behind other layers. The slot is freed when the blob's last download ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::BlobId;

/// Held while a piece of a blob downloads; the slot is shared by the blob's downloads.
pub struct SlotGuard {
    _shared: Arc<OwnedSemaphorePermit>,
}

pub struct BlobSlots {
    permits: Arc<Semaphore>,
    active: Mutex<HashMap<BlobId, Weak<OwnedSemaphorePermit>>>,
}

impl BlobSlots {
    pub fn new(limit: usize) -> BlobSlots {
        BlobSlots {
            permits: Arc::new(Semaphore::new(limit)),
            active: Mutex::new(HashMap::new()),
        }
    }

    fn join(&self, blob: &BlobId) -> Option<SlotGuard> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.retain(|_, w| w.strong_count() > 0);
        active
            .get(blob)
            .and_then(Weak::upgrade)
            .map(|p| SlotGuard { _shared: p })
    }

    pub async fn enter(&self, blob: &BlobId) -> SlotGuard {
        if let Some(guard) = self.join(blob) {
            return guard;
        }
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => Arc::new(p),
            Err(_) => unreachable!("the semaphore is never closed"),
        };
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        // Another download of the same blob may have taken a slot while this one waited.
        if let Some(existing) = active.get(blob).and_then(Weak::upgrade) {
            drop(permit);
            return SlotGuard { _shared: existing };
        }
        active.insert(blob.clone(), Arc::downgrade(&permit));
        SlotGuard { _shared: permit }
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::poll_immediate;

    #[tokio::test]
    async fn pieces_of_one_blob_share_a_slot_and_other_blobs_wait() {
        let slots = BlobSlots::new(1);
        let a = BlobId::new("sha256-aa").unwrap();
        let b = BlobId::new("sha256-bb").unwrap();
        let g1 = slots.enter(&a).await;
        let g2 = slots.enter(&a).await;
        assert_eq!(slots.available(), 0);
        let mut waiter = Box::pin(slots.enter(&b));
        assert!(
            poll_immediate(&mut waiter).await.is_none(),
            "b got a slot while a holds it"
        );
        drop(g1);
        assert!(
            poll_immediate(&mut waiter).await.is_none(),
            "slot freed before a's last download"
        );
        drop(g2);
        let g3 = poll_immediate(&mut waiter)
            .await
            .expect("b waits although the slot is free");
        drop(g3);
        assert_eq!(slots.available(), 1);
    }
}
