//! Policy state: a small key-value store per policy, with TTL and compare-and-swap.
//! Keys are `namespace \0 key`; a namespace is a policy's name, which cannot contain `\0`.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{Result, Store, cf, decode, encode};

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

    pub fn kv_set(&self, namespace: &str, k: &str, value: &[u8], expires_millis: Option<u64>) -> Result<u64> {
        let full_key = key(namespace, k);
        let _guard = self.lock_kv(&full_key);
        self.kv_put(&full_key, value, expires_millis)
    }

    pub fn kv_delete(&self, namespace: &str, k: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::POLICY_KV), key(namespace, k));
        self.write(batch, false)
    }

    /// Write only if the live entry's version is `expected` (None: absent or expired).
    /// The outer Err is a storage error; the inner one carries the current entry.
    pub fn kv_compare_and_swap(
        &self,
        namespace: &str,
        k: &str,
        expected: Option<u64>,
        value: &[u8],
        expires_millis: Option<u64>,
        now_millis: u64,
    ) -> Result<Result<u64, Option<KvEntry>>> {
        let full_key = key(namespace, k);
        let _guard = self.lock_kv(&full_key);
        let current = self.kv_get(namespace, k, now_millis)?;
        if current.as_ref().map(|e| e.version) != expected {
            return Ok(Err(current));
        }
        self.kv_put(&full_key, value, expires_millis).map(Ok)
    }

    /// Remove expired entries; returns how many went.
    pub fn kv_purge_expired(&self, now_millis: u64) -> Result<usize> {
        let mut batch = WriteBatch::default();
        let mut purged = 0;
        for item in self.db().iterator_cf(self.cf(cf::POLICY_KV), rocksdb::IteratorMode::Start) {
            let (k, value) = item?;
            let record: Record = decode(cf::POLICY_KV, &value)?;
            if record.expires_millis.is_some_and(|e| e <= now_millis) {
                batch.delete_cf(self.cf(cf::POLICY_KV), &k);
                purged += 1;
            }
        }
        self.write(batch, false)?;
        Ok(purged)
    }

    fn kv_put(&self, full_key: &[u8], value: &[u8], expires_millis: Option<u64>) -> Result<u64> {
        let version = self.next_id()?;
        let record = Record { value: value.to_vec(), version, expires_millis };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf::POLICY_KV), full_key, encode(&record));
        self.write(batch, false)?;
        Ok(version)
    }

    fn lock_kv(&self, full_key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let hash = full_key.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        super::lock(&self.inner.kv_locks[(hash % super::LOCK_SHARDS as u64) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_cas_and_namespaces() {
        let store = Store::open_in_memory().unwrap();
        let v1 = store.kv_set("ratelimit", "a", b"1", Some(2_000)).unwrap();
        assert_eq!(store.kv_get("ratelimit", "a", 1_000).unwrap().unwrap().version, v1);
        assert!(store.kv_get("ratelimit", "a", 2_000).unwrap().is_none(), "expired");
        assert!(store.kv_get("other", "a", 1_000).unwrap().is_none(), "namespaces are separate");

        let v2 = store.kv_compare_and_swap("ratelimit", "a", None, b"2", None, 3_000).unwrap().unwrap();
        let stale = store.kv_compare_and_swap("ratelimit", "a", Some(v1), b"3", None, 3_000).unwrap();
        assert_eq!(stale, Err(Some(KvEntry { value: b"2".to_vec(), version: v2 })));
        assert!(store.kv_compare_and_swap("ratelimit", "a", Some(v2), b"3", None, 3_000).unwrap().is_ok());

        store.kv_set("ratelimit", "gone", b"x", Some(10)).unwrap();
        assert_eq!(store.kv_purge_expired(3_000).unwrap(), 1);
        store.kv_delete("ratelimit", "a").unwrap();
        assert!(store.kv_get("ratelimit", "a", 0).unwrap().is_none());
    }
}
