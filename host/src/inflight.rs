//! One budget for the message bytes the relay holds in memory at once: SMTP DATA, `/mxdeliv`
//! bodies, IMAP APPEND literals (inflated, under COMPRESS), and messages read for outbound
//! delivery. Each of them may be as large as a message (30 MB); a thousand clients sending at
//! once must not add up to more memory than the machine has. A session that finds the budget
//! spent is told to try again later (`452 4.3.1`, HTTP 503, IMAP `NO [LIMIT]`) and nothing is
//! lost; outbound delivery waits for its turn instead.
//!
//! Counted in KiB (a semaphore's permits), rounded up.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct InFlight {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

/// Bytes held from the budget, given back when dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

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
        InFlight { permits: Arc::new(Semaphore::new(total_kib as usize)), total_kib }
    }

    /// Hold `bytes` now, or `None` when the budget does not have them.
    pub fn try_hold(&self, bytes: u64) -> Option<Held> {
        let mut held = Held::none();
        held.try_grow(self, bytes).then_some(held)
    }

    /// Hold `bytes`, waiting until they are free.
    pub async fn hold(&self, bytes: u64) -> Held {
        let wanted = kib(bytes).min(self.total_kib);
        match self.permits.clone().acquire_many_owned(wanted).await {
            Ok(permit) => Held { permit: Some(permit), bytes },
            // The semaphore is never closed.
            Err(_) => Held { permit: None, bytes: 0 },
        }
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
        Held { permit: None, bytes: 0 }
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
}
