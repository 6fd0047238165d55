//! Native stand-ins for the host services, for unit tests of a policy's logic.
//!
//! Each test thread has its own host: a clock that only moves when told, an in-memory
//! key-value store, a configuration and a log you can inspect. Randomness is a fixed
//! sequence so tests are repeatable; never ship a native build as a policy.
//!
//! [`TestMessage`] parses a message with the relay's own parser, so `check_message` can be
//! tested against real .eml files without a relay.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::kv::Entry;
use crate::{AccountInfo, Level};

mod message;
pub use message::{TestMessage, check_message, dkim_pass, incoming, outgoing};

struct TestHost {
    now_millis: u64,
    config: String,
    kv: BTreeMap<String, (Entry, Option<u64>)>,
    next_version: u64,
    logs: Vec<(Level, String)>,
    random_state: u64,
    accounts: BTreeMap<String, AccountInfo>,
    counters: BTreeMap<String, u64>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost {
            // 2026-01-01T00:00:00Z: a fixed, realistic start.
            now_millis: 1_767_225_600_000,
            config: "{}".to_string(),
            kv: BTreeMap::new(),
            next_version: 1,
            logs: Vec::new(),
            random_state: 0x9E37_79B9_7F4A_7C15,
            accounts: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }
}

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

fn with<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Forget all state: clock, config, store and logs.
pub fn reset() {
    with(|host| *host = TestHost::default());
}

/// Set the clock (Unix milliseconds).
pub fn set_now_millis(now: u64) {
    with(|host| host.now_millis = now);
}

/// Move the clock forward.
pub fn advance_millis(delta: u64) {
    with(|host| host.now_millis += delta);
}

/// The configuration the policy reads, as JSON text.
pub fn set_config(json: &str) {
    with(|host| host.config = json.to_string());
}

/// The log lines written so far.
pub fn logs() -> Vec<(Level, String)> {
    with(|host| host.logs.clone())
}

/// Make `address` a local account created `created_day` (days since 1970-01-01), as
/// [`crate::account`] will report it. See [`crate::today`] for the current day.
pub fn add_account(address: &str, created_day: u32) {
    let info = AccountInfo { created_day, last_login_day: created_day, used_bytes: 0, messages: 0 };
    with(|host| host.accounts.insert(address.to_ascii_lowercase(), info));
}

/// The policy's counters ([`crate::count`]) so far, by name.
pub fn counters() -> BTreeMap<String, u64> {
    with(|host| host.counters.clone())
}

/// One counter's value (0 when never counted).
pub fn counter(name: &str) -> u64 {
    with(|host| host.counters.get(name).copied().unwrap_or(0))
}

/// The keys currently in the store (expired ones excluded).
pub fn kv_keys() -> Vec<String> {
    with(|host| {
        let now = host.now_millis;
        host.kv.iter().filter(|(_, (_, exp))| exp.is_none_or(|e| e > now)).map(|(k, _)| k.clone()).collect()
    })
}

pub(crate) mod host {
    use super::with;
    use crate::Level;

    pub fn now_millis() -> u64 {
        with(|host| host.now_millis)
    }

    pub fn log(level: Level, text: &str) {
        with(|host| host.logs.push((level, text.to_string())));
    }

    pub fn random_bytes(len: u32) -> Vec<u8> {
        // The relay's limits, so that a call it would trap on fails in tests too.
        assert!(len <= 4096, "random_bytes: at most 4096 bytes per call");
        with(|host| {
            (0..len)
                .map(|_| {
                    // splitmix64: repeatable, well spread; tests only.
                    host.random_state = host.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = host.random_state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    (z ^ (z >> 31)) as u8
                })
                .collect()
        })
    }

    pub fn config() -> String {
        with(|host| host.config.clone())
    }

    pub fn account(address: &str) -> Option<crate::AccountInfo> {
        with(|host| host.accounts.get(&address.to_ascii_lowercase()).cloned())
    }

    pub fn count(name: &str, delta: u64) {
        // The relay's rule, so that a bad name fails in tests rather than in production.
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        assert!(valid, "count: `{name}` is not a counter name (1-64 of a-z, 0-9, '_', '-')");
        with(|host| *host.counters.entry(name.to_string()).or_default() += delta);
    }
}

pub(crate) mod kv {
    use super::{TestHost, with};
    use crate::kv::Entry;

    fn live(host: &mut TestHost, key: &str) -> Option<Entry> {
        let now = host.now_millis;
        match host.kv.get(key) {
            Some((entry, expiry)) if expiry.is_none_or(|e| e > now) => Some(entry.clone()),
            Some(_) => {
                host.kv.remove(key);
                None
            }
            None => None,
        }
    }

    /// The relay's limits, so that a write it would trap on fails in tests too.
    fn check(key: &str, value: &[u8]) {
        assert!(key.len() <= 1024, "kv: keys are at most 1024 bytes");
        assert!(value.len() <= 64 * 1024, "kv: values are at most 64 KiB");
    }

    fn put(host: &mut TestHost, key: &str, value: &[u8], ttl_seconds: Option<u64>) -> u64 {
        check(key, value);
        let version = host.next_version;
        host.next_version += 1;
        let expiry = ttl_seconds.map(|ttl| host.now_millis + ttl * 1000);
        host.kv.insert(key.to_string(), (Entry { value: value.to_vec(), version }, expiry));
        version
    }

    pub fn get(key: &str) -> Option<Entry> {
        check(key, &[]);
        with(|host| live(host, key))
    }

    pub fn set(key: &str, value: &[u8], ttl_seconds: Option<u64>) {
        with(|host| {
            put(host, key, value, ttl_seconds);
        })
    }

    pub fn delete(key: &str) {
        with(|host| {
            host.kv.remove(key);
        })
    }

    pub fn compare_and_swap(
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        ttl_seconds: Option<u64>,
    ) -> Result<u64, Option<Entry>> {
        with(|host| {
            let current = live(host, key);
            if current.as_ref().map(|e| e.version) != expected {
                return Err(current);
            }
            Ok(put(host, key, value, ttl_seconds))
        })
    }
}
