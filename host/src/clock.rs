//! The relay's clock. Everything that expires (rate limits, retention, tokens) reads time
//! here, so tests can move it forward instead of sleeping for days.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Default, Debug)]
pub struct Clock {
    offset_millis: Arc<AtomicU64>,
}

impl Clock {
    /// Unix time in milliseconds.
    pub fn now_millis(&self) -> u64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        real + self.offset_millis.load(Ordering::Relaxed)
    }

    /// Unix time in seconds.
    pub fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }

    /// Days since 1970-01-01 (UTC).
    pub fn today(&self) -> u32 {
        (self.now_secs() / 86_400) as u32
    }

    /// Move this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_millis.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}
