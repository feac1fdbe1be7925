//! [`ByteBudget`]: bytes an outsider can make a server hold (queued answers,
//! partly read frames), counted so that the total stays under a bound.
//!
//! A semaphore of bytes: a holder takes what it needs (at most the whole
//! budget, so one item larger than the budget can still pass alone) and gives
//! it back by dropping its [`Taken`].

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bound on bytes held at once, shared by whoever clones it.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    bytes: Arc<Semaphore>,
    total: u32,
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Taken(#[allow(dead_code)] OwnedSemaphorePermit);

impl ByteBudget {
    /// A budget of `total` bytes (validated by `Limits`: at most 2 GiB).
    pub(crate) fn new(total: usize) -> Self {
        let total = u32::try_from(total).unwrap_or(u32::MAX >> 1).max(1);
        ByteBudget { bytes: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// What `len` bytes cost: never more than the whole budget, never zero.
    fn cost(&self, len: usize) -> u32 {
        u32::try_from(len).unwrap_or(u32::MAX).clamp(1, self.total)
    }

    /// Takes `len` bytes if they are free now.
    pub(crate) fn try_take(&self, len: usize) -> Option<Taken> {
        self.bytes.clone().try_acquire_many_owned(self.cost(len)).ok().map(Taken)
    }

    /// Takes `len` bytes, waiting until they are free.
    pub(crate) async fn take(&self, len: usize) -> Taken {
        match self.bytes.clone().acquire_many_owned(self.cost(len)).await {
            Ok(permit) => Taken(permit),
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether any byte is free now.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes.available_permits() > 0
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        (self.total as usize).saturating_sub(self.bytes.available_permits())
    }

    /// Waits until some byte is free.
    pub(crate) async fn room(&self) {
        drop(self.take(1).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_larger_than_the_budget_passes_alone() {
        let budget = ByteBudget::new(100);
        let small = budget.try_take(10).expect("room");
        assert!(budget.try_take(1000).is_none(), "needs the whole budget");
        drop(small);
        let big = budget.try_take(1000).expect("alone it fits");
        assert!(!budget.has_room());
        assert_eq!(budget.used(), 100);
        drop(big);
        assert_eq!(budget.used(), 0);
        budget.room().await;
    }
}
