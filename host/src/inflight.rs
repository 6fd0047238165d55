//! One budget for the message bytes the relay holds in memory at once: SMTP DATA, `/mxdeliv`
//! bodies, IMAP APPEND literals (inflated, under COMPRESS), and messages read for outbound
//! delivery. Each of them may be as large as a message (30 MB); a thousand clients sending at
//! once must not add up to more memory than the machine has. A session that finds the budget
//! spent is told to try again later (`452 4.3.1`, HTTP 503, IMAP `NO [LIMIT]`) and nothing is
//! lost; outbound delivery waits for its turn instead, and holds at most half of the budget,
//! so that a queue of large messages cannot keep new mail out.
//!
//! Counted in KiB (a semaphore's permits), rounded up.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct InFlight {
    permits: Arc<Semaphore>,
    total_kib: u32,
    /// Outbound delivery's share: half of the permits.
    delivery: Arc<Semaphore>,
}

/// Bytes held from the budget, given back when dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// For outbound delivery, its part of [`InFlight::delivery`] as well.
    _share: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

/// The most a message holds before its bytes arrive.
pub const FIRST_STEP: u64 = 256 * 1024;

fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX)) as u32
}

impl InFlight {
    /// A budget of `bytes`, or, for 0, a quarter of the machine's memory; never less than two
    /// messages of `max_message_size`, so that any one message fits.
    pub fn new(bytes: u64, max_message_size: u64) -> InFlight {
        let chosen = if bytes > 0 { bytes } else { machine_memory().map_or(1 << 30, |m| m / 4) };
        let bytes = chosen.max(max_message_size.saturating_mul(2));
        let total_kib = kib(bytes).min(Semaphore::MAX_PERMITS as u32);
        let delivery = Arc::new(Semaphore::new((total_kib / 2).max(1) as usize));
        InFlight { permits: Arc::new(Semaphore::new(total_kib as usize)), total_kib, delivery }
    }

    /// Hold `bytes` now, or `None` when the budget does not have them.
    pub fn try_hold(&self, bytes: u64) -> Option<Held> {
        let mut held = Held::none();
        held.try_grow(self, bytes).then_some(held)
    }

    /// Hold what a message announced to be this large needs first: its first step (256 KiB at
    /// most), and only if the whole would fit in the budget now. The rest is held as it
    /// arrives ([`Held::try_grow`]): announcing a size and sending nothing holds little, so
    /// idle clients cannot keep the budget spent.
    pub fn try_start(&self, announced: u64) -> Option<Held> {
        if !self.fits(announced) {
            return None;
        }
        self.try_hold(announced.min(FIRST_STEP))
    }

    /// Whether `bytes` would fit in the budget now.
    pub fn fits(&self, bytes: u64) -> bool {
        u64::from(kib(bytes)) <= self.permits.available_permits() as u64
    }

    /// Hold `bytes` for outbound delivery, waiting until they are free within delivery's
    /// share (a message larger than the share takes all of it).
    pub async fn hold_for_delivery(&self, bytes: u64) -> Held {
        let wanted = kib(bytes).min(self.total_kib / 2).max(1);
        // The semaphores are never closed.
        let share = self.delivery.clone().acquire_many_owned(wanted).await.ok();
        let permit = self.permits.clone().acquire_many_owned(wanted).await.ok();
        Held { permit, _share: share, bytes }
    }

    /// Bytes held right now, for the metrics.
    pub fn used_bytes(&self) -> u64 {
        u64::from(self.total_kib - self.permits.available_permits() as u32) * 1024
    }

    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_kib) * 1024
    }
}

impl Held {
    /// Nothing held yet.
    pub fn none() -> Held {
        Held { permit: None, _share: None, bytes: 0 }
    }

    /// Hold `bytes` in all (more than now, or nothing changes); false if the budget does not
    /// have the difference.
    pub fn try_grow(&mut self, budget: &InFlight, bytes: u64) -> bool {
        let (have, want) = (self.permit.as_ref().map_or(0, |p| p.num_permits() as u32), kib(bytes));
        if want <= have {
            return true;
        }
        match budget.permits.clone().try_acquire_many_owned(want - have) {
            Ok(more) => {
                match self.permit.as_mut() {
                    Some(permit) => permit.merge(more),
                    None => self.permit = Some(more),
                }
                self.bytes = bytes;
                true
            }
            Err(_) => false,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_come_back() {
        let budget = InFlight::new(10 << 20, 1 << 20);
        let mut a = budget.try_hold(4 << 20).unwrap();
        assert!(a.try_grow(&budget, 8 << 20));
        assert!(budget.try_hold(3 << 20).is_none(), "8 of 10 MiB held");
        let b = budget.try_hold(2 << 20).unwrap();
        assert!(!a.try_grow(&budget, 9 << 20));
        assert_eq!(budget.used_bytes(), 10 << 20);
        drop(a);
        drop(b);
        assert_eq!(budget.used_bytes(), 0);
        assert_eq!(InFlight::new(1, 5 << 20).total_bytes(), 10 << 20, "two messages at least");
        assert!(InFlight::new(0, 1).total_bytes() > 0, "a share of the machine's memory");
    }

    #[test]
    fn an_announced_size_holds_only_a_first_step() {
        let budget = InFlight::new(10 << 20, 1 << 20);
        let started = budget.try_start(8 << 20).unwrap();
        assert_eq!(budget.used_bytes(), FIRST_STEP, "announcing 8 MiB holds 256 KiB");
        assert!(budget.try_start(10 << 20).is_none(), "what would not fit now is refused at once");
        drop(started);
        assert!(budget.try_start(10 << 20).is_some());
    }

    #[tokio::test]
    async fn delivery_holds_at_most_half() {
        let budget = InFlight::new(10 << 20, 1 << 20);
        let first = budget.hold_for_delivery(3 << 20).await;
        assert_eq!(budget.used_bytes(), 3 << 20);
        let large = budget.hold_for_delivery(64 << 20);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), large).await;
        assert!(waited.is_err(), "beyond half of the budget, delivery waits");
        assert!(budget.try_hold(7 << 20).is_some(), "and new mail still has the rest");
        drop(first);
        let large = budget.hold_for_delivery(64 << 20).await;
        assert_eq!(budget.used_bytes(), 5 << 20, "a message larger than the share takes all of it");
        drop(large);
        assert_eq!(budget.used_bytes(), 0);
    }
}
