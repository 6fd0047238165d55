//! The host's services: clock, log, randomness and the policy's configuration.
//! In a native build (tests) they are served by [`crate::testing`].

#[cfg(target_arch = "wasm32")]
use crate::bindings::chatmail::policy::host as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::host as imp;

pub use crate::bindings::chatmail::policy::host::{AccountInfo, Level};

/// Unix time in milliseconds, from the relay's clock (which tests may move).
pub fn now_millis() -> u64 {
    imp::now_millis()
}

/// A log line attributed to this policy. Never log message content or passwords.
pub fn log(level: Level, text: &str) {
    imp::log(level, text)
}

/// `len` cryptographically secure random bytes.
pub fn random_bytes(len: u32) -> Vec<u8> {
    imp::random_bytes(len)
}

/// A random string of `len` characters drawn uniformly from `alphabet`.
pub fn random_string(len: usize, alphabet: &[u8]) -> String {
    assert!(!alphabet.is_empty() && alphabet.len() <= 256, "alphabet must have 1 to 256 characters");
    // Rejection sampling keeps the distribution uniform for any alphabet size.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes(len as u32 * 2) {
            if (byte as usize) < limit && out.len() < len {
                out.push(alphabet[byte as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// The policy's configuration as JSON text: the relay's top-level settings overlaid
/// with the policy's own `[policy.config]` table.
pub fn config_json() -> String {
    imp::config()
}

/// The policy's configuration, deserialized. Unknown keys are ignored (the relay's
/// settings are all present), so a config struct names only the keys it needs.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    serde_json::from_str(&config_json()).map_err(|e| format!("bad policy config: {e}"))
}

/// The account of a local address, if it exists (since contract 1.1.0). Days count from
/// 1970-01-01 (UTC); see [`today`].
pub fn account(address: &str) -> Option<AccountInfo> {
    imp::account(address)
}

/// Add `delta` to this policy's counter `name` (since contract 1.1.0): operators see it as
/// `ferrymail_policy_events_total{policy="...",event="name"}`. Names are 1-64 characters of
/// a-z, 0-9, '_' and '-', at most 32 per policy; never put an address or a token in one.
pub fn count(name: &str, delta: u64) {
    imp::count(name, delta)
}

/// Today, in days since 1970-01-01 (UTC), by the relay's clock: the unit of [`AccountInfo`].
pub fn today() -> u32 {
    (now_millis() / 86_400_000) as u32
}
