//! A value one task publishes and many socket readers read on every message.
//!
//! Readers keep a [`Cached`] copy and compare one version number per read; only when the
//! version moved (once per change, which is rare next to reads) do they take the lock and
//! clone the new `Arc`. The read path is therefore one atomic load, with no lock and no
//! reference-count traffic shared between cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug)]
pub struct Published<T> {
    version: AtomicU64,
    value: Mutex<Option<Arc<T>>>,
}

impl<T> Default for Published<T> {
    fn default() -> Self {
        Self {
            version: AtomicU64::new(0),
            value: Mutex::new(None),
        }
    }
}

impl<T> Published<T> {
    pub fn publish(&self, value: Option<Arc<T>>) {
        let mut slot = self.value.lock().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *slot, value);
        // Bumped under the lock, so a reader that takes the lock sees a matching pair.
        self.version.fetch_add(1, Ordering::Release);
        drop(slot);
        // The old value may hold the last handles to outboxes: let it go outside the lock.
        drop(old);
    }
}

/// A reader's copy of a [`Published`] value.
#[derive(Debug)]
pub struct Cached<T> {
    version: u64,
    value: Option<Arc<T>>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self {
            version: 0,
            value: None,
        }
    }
}

impl<T> Cached<T> {
    pub fn get(&mut self, cell: &Published<T>) -> Option<&T> {
        if cell.version.load(Ordering::Acquire) != self.version {
            let slot = cell.value.lock().unwrap_or_else(PoisonError::into_inner);
            self.value = slot.clone();
            self.version = cell.version.load(Ordering::Relaxed);
        }
        self.value.as_deref()
    }

    /// The copy as of the last [`Cached::get`], however stale.
    #[cfg(test)]
    pub fn last(&self) -> Option<Arc<T>> {
        self.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_follow_each_publication() {
        let cell = Published::default();
        let mut cache = Cached::default();
        assert_eq!(cache.get(&cell), None);
        cell.publish(Some(Arc::new(1)));
        assert_eq!(cache.get(&cell), Some(&1));
        let held = cache.last().unwrap();
        cell.publish(Some(Arc::new(2)));
        assert_eq!(*held, 1);
        assert_eq!(cache.get(&cell), Some(&2));
        cell.publish(None);
        assert_eq!(cache.get(&cell), None);
    }
}
