//! Rate limits kept in the policy's key-value store, safe under concurrent calls.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per key, the "theoretical arrival
//! time" (TAT): an event passes when it would not push the TAT more than `burst` intervals
//! ahead of now. The TAT is updated with compare-and-swap, so two sessions of one sender
//! cannot both take the last slot, and it expires once it has passed, so idle keys cost
//! nothing.

use crate::{kv, now_millis};

/// One event per `interval_millis` on average and up to `burst` at once, for `key`: true
/// (and the slot taken) when an event may pass now. An interval of 0 is no limit.
///
/// ```
/// # use ferrymail_policy::rate;
/// // 10 an hour, 3 at once.
/// let passed = (0..5).filter(|_| rate::allow("alice@example.org", 3_600_000 / 10, 3)).count();
/// assert_eq!(passed, 3);
/// ```
pub fn allow(key: &str, interval_millis: u64, burst: u64) -> bool {
    if interval_millis == 0 {
        // With a zero interval, two sessions whose clocks were read a millisecond apart
        // would refuse each other.
        return true;
    }
    let tolerance = interval_millis * burst.max(1);
    let now = now_millis();
    kv::update(key, |stored| {
        let tat = stored.and_then(|v| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        let new_tat = tat.max(now) + interval_millis;
        if new_tat - now > tolerance {
            return (None, false);
        }
        // Once the TAT has passed, the key is back to a full burst: the entry can go.
        let ttl = (new_tat - now).div_ceil(1000);
        (Some((new_tat.to_be_bytes().to_vec(), Some(ttl))), true)
    })
}
