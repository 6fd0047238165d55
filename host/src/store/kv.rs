//! Policy state: a small key-value store per policy, with TTL and compare-and-swap.
//! Keys are `namespace \0 key`; a namespace is a policy's name, which cannot contain `\0`.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, cf, decode, encode};

/// What one namespace (one policy) may keep: a policy must not fill the relay's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    pub entries: u64,
    pub bytes: u64,
}

/// Entries and bytes (keys and values) a namespace holds, expired ones until purged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct KvUsage {
    entries: u64,
    bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub version: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    value: Vec<u8>,
    version: u64,
    expires_millis: Option<u64>,
}

fn key(namespace: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1 + key.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl Store {
    pub fn kv_get(&self, namespace: &str, k: &str, now_millis: u64) -> Result<Option<KvEntry>> {
        let record: Option<Record> = self.get(cf::POLICY_KV, &key(namespace, k))?;
        Ok(record
            .filter(|r| r.expires_millis.is_none_or(|e| e > now_millis))
            .map(|r| KvEntry { value: r.value, version: r.version }))
    }

    /// Set an entry, if the namespace stays within `limits` (else [`StoreError::Limit`]).
    pub fn kv_set(&self, namespace: &str, k: &str, value: &[u8], expires_millis: Option<u64>, now_millis: u64, limits: KvLimits) -> Result<u64> {
        let full_key = key(namespace, k);
        let _guard = self.lock_kv(&full_key);
        self.kv_put(namespace, &full_key, value, expires_millis, now_millis, limits)
    }

    pub fn kv_delete(&self, namespace: &str, k: &str) -> Result<()> {
        let full_key = key(namespace, k);
        let _guard = self.lock_kv(&full_key);
        let old = self.db().get_pinned_cf(self.cf(cf::POLICY_KV), &full_key)?.map(|v| v.len());
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::POLICY_KV), &full_key);
        self.write(batch, false)?;
        if let Some(old) = old {
            self.kv_account(namespace, |usage| {
                usage.entries = usage.entries.saturating_sub(1);
                usage.bytes = usage.bytes.saturating_sub((full_key.len() + old) as u64);
            });
        }
        Ok(())
    }

    /// Write only if the live entry's version is `expected` (None: absent or expired).
    /// The outer Err is a storage error; the inner one carries the current entry.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_compare_and_swap(
        &self,
        namespace: &str,
        k: &str,
        expected: Option<u64>,
        value: &[u8],
        expires_millis: Option<u64>,
        now_millis: u64,
        limits: KvLimits,
    ) -> Result<Result<u64, Option<KvEntry>>> {
        let full_key = key(namespace, k);
        let _guard = self.lock_kv(&full_key);
        let current = self.kv_get(namespace, k, now_millis)?;
        if current.as_ref().map(|e| e.version) != expected {
            return Ok(Err(current));
        }
        self.kv_put(namespace, &full_key, value, expires_millis, now_millis, limits).map(Ok)
    }

    /// Remove expired entries; returns how many went.
    pub fn kv_purge_expired(&self, now_millis: u64) -> Result<usize> {
        Ok(self.kv_purge(&[], &[], now_millis, usize::MAX, None)?.0)
    }

    /// Remove the expired entries of keys starting with `prefix`, from `from` on, looking at
    /// no more than `budget` entries; returns how many went and where to go on next time.
    /// Each deletion is checked again under its key's lock (`held`: the shard the caller
    /// holds already), so that an entry replaced meanwhile is not lost; a shard another
    /// caller holds is left for the next time.
    fn kv_purge(&self, prefix: &[u8], from: &[u8], now_millis: u64, budget: usize, held: Option<usize>) -> Result<(usize, Option<Vec<u8>>)> {
        let expired = |value: &[u8]| -> Result<bool> {
            let record: Record = decode(cf::POLICY_KV, value)?;
            Ok(record.expires_millis.is_some_and(|e| e <= now_millis))
        };
        let mut by_shard: std::collections::BTreeMap<usize, Vec<Vec<u8>>> = std::collections::BTreeMap::new();
        let (mut scanned, mut next) = (0, None);
        let mode = rocksdb::IteratorMode::From(prefix.max(from), rocksdb::Direction::Forward);
        for item in self.db().iterator_cf(self.cf(cf::POLICY_KV), mode) {
            let (k, value) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if scanned == budget {
                next = Some(k.to_vec());
                break;
            }
            scanned += 1;
            if expired(&value)? {
                by_shard.entry(kv_shard(&k)).or_default().push(k.to_vec());
            }
        }
        let mut purged = 0;
        let mut freed: std::collections::HashMap<String, KvUsage> = std::collections::HashMap::new();
        for (shard, keys) in by_shard {
            let _guard = match held == Some(shard) {
                true => None,
                false => match self.inner.kv_locks[shard].try_lock() {
                    Ok(guard) => Some(guard),
                    Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => continue,
                },
            };
            let mut batch = WriteBatch::default();
            for k in keys {
                let Some(value) = self.db().get_pinned_cf(self.cf(cf::POLICY_KV), &k)? else { continue };
                if !expired(&value)? {
                    continue;
                }
                batch.delete_cf(self.cf(cf::POLICY_KV), &k);
                purged += 1;
                let namespace = k.split(|&b| b == 0).next().unwrap_or_default();
                let entry = freed.entry(String::from_utf8_lossy(namespace).into_owned()).or_default();
                entry.entries += 1;
                entry.bytes += (k.len() + value.len()) as u64;
            }
            self.write(batch, false)?;
        }
        let mut usage = self.inner.kv_usage.lock().unwrap_or_else(|e| e.into_inner());
        for (namespace, freed) in freed {
            if let Some(usage) = usage.get_mut(&namespace) {
                usage.entries = usage.entries.saturating_sub(freed.entries);
                usage.bytes = usage.bytes.saturating_sub(freed.bytes);
            }
        }
        Ok((purged, next))
    }

    /// Write an entry; the caller holds the key's lock.
    fn kv_put(&self, namespace: &str, full_key: &[u8], value: &[u8], expires_millis: Option<u64>, now_millis: u64, limits: KvLimits) -> Result<u64> {
        let version = self.next_id()?;
        let record = encode(&Record { value: value.to_vec(), version, expires_millis });
        // What the write adds: (entries, bytes, bytes released by the entry it replaces).
        let change = || -> Result<(u64, u64, u64)> {
            let old = self.db().get_pinned_cf(self.cf(cf::POLICY_KV), full_key)?.map(|v| v.len() as u64);
            Ok((u64::from(old.is_none()), (full_key.len() + record.len()) as u64, old.map_or(0, |old| full_key.len() as u64 + old)))
        };
        let fits = |usage: &KvUsage, (entries, bytes, released): (u64, u64, u64)| {
            usage.entries + entries <= limits.entries && (usage.bytes + bytes).saturating_sub(released) <= limits.bytes
        };
        let mut adding = change()?;
        if !fits(&self.kv_usage(namespace), adding) {
            // Expired entries still count until purged: make room with them first, a slice of
            // the namespace per call (a full namespace must not cost a scan of a million
            // entries on every write), going on where the last slice ended.
            let prefix = key(namespace, "");
            let from = self.inner.kv_purge_from.lock().unwrap_or_else(|e| e.into_inner()).remove(namespace).unwrap_or_default();
            let (_, next) = self.kv_purge(&prefix, &from, now_millis, PURGE_SLICE, Some(kv_shard(full_key)))?;
            if let Some(next) = next {
                self.inner.kv_purge_from.lock().unwrap_or_else(|e| e.into_inner()).insert(namespace.to_string(), next);
            }
            // The purge may have removed the entry this write replaces.
            adding = change()?;
            if !fits(&self.kv_usage(namespace), adding) {
                return Err(StoreError::Limit(format!("the policy's key-value store is full ({} entries, {} bytes at most)", limits.entries, limits.bytes)));
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf::POLICY_KV), full_key, &record);
        self.write(batch, false)?;
        let (entries, bytes, released) = adding;
        self.kv_account(namespace, |usage| {
            usage.entries += entries;
            usage.bytes = (usage.bytes + bytes).saturating_sub(released);
        });
        Ok(version)
    }

    /// A namespace's usage (counted at open, kept since).
    fn kv_usage(&self, namespace: &str) -> KvUsage {
        self.inner.kv_usage.lock().unwrap_or_else(|e| e.into_inner()).get(namespace).copied().unwrap_or_default()
    }

    fn kv_account(&self, namespace: &str, change: impl FnOnce(&mut KvUsage)) {
        change(self.inner.kv_usage.lock().unwrap_or_else(|e| e.into_inner()).entry(namespace.to_string()).or_default());
    }

    /// Count what every namespace holds: once, when the store opens (one pass over the
    /// policies' state), so that no write has to.
    pub(super) fn count_kv_usage(&self) -> Result<()> {
        let mut counted: std::collections::HashMap<String, KvUsage> = std::collections::HashMap::new();
        for item in self.db().iterator_cf(self.cf(cf::POLICY_KV), rocksdb::IteratorMode::Start) {
            let (k, value) = item?;
            let namespace = k.split(|&b| b == 0).next().unwrap_or_default();
            let usage = counted.entry(String::from_utf8_lossy(namespace).into_owned()).or_default();
            usage.entries += 1;
            usage.bytes += (k.len() + value.len()) as u64;
        }
        *self.inner.kv_usage.lock().unwrap_or_else(|e| e.into_inner()) = counted;
        Ok(())
    }

    fn lock_kv(&self, full_key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        super::lock(&self.inner.kv_locks[kv_shard(full_key)])
    }
}

/// Entries a write to a full namespace looks at to make room.
const PURGE_SLICE: usize = 1024;

/// The lock shard of a key.
fn kv_shard(full_key: &[u8]) -> usize {
    let hash = full_key.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (hash % super::LOCK_SHARDS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: KvLimits = KvLimits { entries: 100, bytes: 1 << 20 };

    #[test]
    fn namespaces_are_bounded_in_entries_and_bytes() {
        let store = Store::open_in_memory().unwrap();
        let limits = KvLimits { entries: 3, bytes: 300 };
        for k in ["a", "b", "c"] {
            store.kv_set("p", k, b"v", None, 0, limits).unwrap();
        }
        assert!(matches!(store.kv_set("p", "d", b"v", None, 0, limits), Err(StoreError::Limit(_))), "a fourth entry");
        store.kv_set("p", "a", b"replaced", None, 0, limits).unwrap();
        store.kv_set("other", "d", b"v", None, 0, limits).unwrap();
        store.kv_delete("p", "b").unwrap();
        store.kv_set("p", "d", b"v", None, 0, limits).unwrap();
        assert!(matches!(store.kv_set("p", "a", &[0; 400], None, 0, limits), Err(StoreError::Limit(_))), "over the bytes");
        // Expired entries make room when the namespace is full.
        store.kv_set("q", "x", b"1", Some(10), 0, limits).unwrap();
        store.kv_set("q", "y", b"1", Some(10), 0, limits).unwrap();
        store.kv_set("q", "z", b"1", None, 0, limits).unwrap();
        store.kv_set("q", "w", b"1", None, 100, limits).unwrap();
        assert!(store.kv_get("q", "z", 100).unwrap().is_some());
        assert_eq!(store.kv_purge_expired(1_000).unwrap(), 0, "purged already, to make room");
        assert!(matches!(store.kv_set("q", "v", b"1", None, 100, KvLimits { entries: 2, bytes: 300 }), Err(StoreError::Limit(_))));
    }

    #[test]
    fn a_full_namespace_is_purged_a_slice_at_a_time() {
        let store = Store::open_in_memory().unwrap();
        let limits = KvLimits { entries: 3000, bytes: 1 << 30 };
        for i in 0..3000 {
            store.kv_set("p", &format!("k{i:05}"), b"v", Some(10), 0, limits).unwrap();
        }
        // A write to the full namespace looks at one slice, which makes room.
        store.kv_set("p", "new", b"v", None, 100, limits).unwrap();
        assert_eq!(store.kv_usage("p").entries, 3000 - PURGE_SLICE as u64 + 1);
        // Replacing an expired entry that the purge removes counts it once.
        store.kv_set("q", "a", b"1", Some(10), 0, KvLimits { entries: 1, bytes: 1 << 20 }).unwrap();
        store.kv_set("q", "a", b"2", None, 100, KvLimits { entries: 1, bytes: 1 << 20 }).unwrap();
        assert_eq!(store.kv_usage("q").entries, 1);
        assert_eq!(store.kv_purge_expired(1_000).unwrap(), 3000 - PURGE_SLICE);
        assert_eq!(store.kv_usage("p").entries, 1);
        // Usage is counted again when the store opens.
        store.count_kv_usage().unwrap();
        assert_eq!((store.kv_usage("p").entries, store.kv_usage("q").entries), (1, 1));
    }

    #[test]
    fn ttl_cas_and_namespaces() {
        let store = Store::open_in_memory().unwrap();
        let v1 = store.kv_set("ratelimit", "a", b"1", Some(2_000), 1_000, ROOMY).unwrap();
        assert_eq!(store.kv_get("ratelimit", "a", 1_000).unwrap().unwrap().version, v1);
        assert!(store.kv_get("ratelimit", "a", 2_000).unwrap().is_none(), "expired");
        assert!(store.kv_get("other", "a", 1_000).unwrap().is_none(), "namespaces are separate");

        let v2 = store.kv_compare_and_swap("ratelimit", "a", None, b"2", None, 3_000, ROOMY).unwrap().unwrap();
        let stale = store.kv_compare_and_swap("ratelimit", "a", Some(v1), b"3", None, 3_000, ROOMY).unwrap();
        assert_eq!(stale, Err(Some(KvEntry { value: b"2".to_vec(), version: v2 })));
        assert!(store.kv_compare_and_swap("ratelimit", "a", Some(v2), b"3", None, 3_000, ROOMY).unwrap().is_ok());

        store.kv_set("ratelimit", "gone", b"x", Some(10), 0, ROOMY).unwrap();
        assert_eq!(store.kv_purge_expired(3_000).unwrap(), 1);
        store.kv_delete("ratelimit", "a").unwrap();
        assert!(store.kv_get("ratelimit", "a", 0).unwrap().is_none());
    }
}
