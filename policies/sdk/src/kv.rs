//! A small durable key-value store private to this policy. It survives reloads and restarts;
//! entries with a TTL disappear once it has passed.

#[cfg(target_arch = "wasm32")]
use crate::bindings::chatmail::policy::kv as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::kv as imp;

pub use crate::bindings::chatmail::policy::kv::Entry;

pub fn get(key: &str) -> Option<Entry> {
    imp::get(key)
}

pub fn set(key: &str, value: &[u8], ttl_seconds: Option<u64>) {
    imp::set(key, value, ttl_seconds)
}

pub fn delete(key: &str) {
    imp::delete(key)
}

/// Store `value` only if the entry's version is still `expected` (None = absent).
/// `Ok` holds the new version; `Err` the current entry to retry from.
pub fn compare_and_swap(
    key: &str,
    expected: Option<u64>,
    value: &[u8],
    ttl_seconds: Option<u64>,
) -> Result<u64, Option<Entry>> {
    imp::compare_and_swap(key, expected, value, ttl_seconds)
}

/// Read-modify-write with compare-and-swap, retried on conflict. `update` gets the current
/// value (None when absent) and returns the new value and TTL, or None to leave it alone.
/// Returns what the last successful `update` returned.
pub fn update<R>(
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> (Option<(Vec<u8>, Option<u64>)>, R),
) -> R {
    let mut current = get(key);
    loop {
        let (write, result) = update(current.as_ref().map(|e| e.value.as_slice()));
        let Some((value, ttl)) = write else { return result };
        match compare_and_swap(key, current.as_ref().map(|e| e.version), &value, ttl) {
            Ok(_) => return result,
            Err(now) => current = now,
        }
    }
}
