//! The default chatmail bundle, compiled from `policies/` by build.rs and carried in the binary.

/// The default chain, in order: who may log in, who may send how much, what may be sent,
/// what it looks like when it arrives, and how long it stays.
pub const DEFAULT_BUNDLE: [&str; 5] = ["accounts", "ratelimit", "encryption", "privacy", "retention"];

/// The component of a built-in policy.
pub fn wasm(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "accounts" => include_bytes!(concat!(env!("OUT_DIR"), "/accounts_policy.wasm")),
        "encryption" => include_bytes!(concat!(env!("OUT_DIR"), "/encryption_policy.wasm")),
        "ratelimit" => include_bytes!(concat!(env!("OUT_DIR"), "/ratelimit_policy.wasm")),
        "privacy" => include_bytes!(concat!(env!("OUT_DIR"), "/privacy_policy.wasm")),
        "retention" => include_bytes!(concat!(env!("OUT_DIR"), "/retention_policy.wasm")),
        _ => return None,
    })
}
