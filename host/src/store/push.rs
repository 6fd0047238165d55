//! The push queue: notifications waiting to be posted to the notification service, ordered by
//! when they are due. It lives in the database, so it survives restarts.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{Key, Result, Store, cf, decode, encode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEntry {
    pub id: u64,
    pub account_id: u64,
    /// The device token, opaque to the relay.
    pub token: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Unix time (milliseconds) the notification was queued.
    pub created_millis: u64,
    /// Unix time (milliseconds) of the next attempt: the queue's order.
    pub due_millis: u64,
}

impl PushEntry {
    fn key(&self) -> Vec<u8> {
        Key::new().u64(self.due_millis).u64(self.id).0
    }
}

impl Store {
    /// Queue one notification per (account, token), due now.
    pub fn push_enqueue(&self, tokens: &[(u64, String)], now_millis: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (account_id, token) in tokens {
            let entry = PushEntry {
                id: self.next_id()?,
                account_id: *account_id,
                token: token.clone(),
                attempts: 0,
                created_millis: now_millis,
                due_millis: now_millis,
            };
            batch.put_cf(self.cf(cf::PUSH), entry.key(), encode(&entry));
        }
        self.write(batch, false)
    }

    /// Entries due at `now_millis`, earliest first, at most `limit`.
    pub fn push_due(&self, now_millis: u64, limit: usize) -> Result<Vec<PushEntry>> {
        let mut out = Vec::new();
        for item in self.db().iterator_cf(self.cf(cf::PUSH), rocksdb::IteratorMode::Start) {
            let (_, value) = item?;
            let entry: PushEntry = decode(cf::PUSH, &value)?;
            if entry.due_millis > now_millis || out.len() >= limit {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Every queued notification, earliest first.
    pub fn push_queue(&self) -> Result<Vec<PushEntry>> {
        self.push_due(u64::MAX, usize::MAX)
    }

    /// Whether `entry` is still queued as it was read: the worker's scan may return an entry
    /// that an attempt finished (or moved) a moment later.
    pub fn push_is_queued(&self, entry: &PushEntry) -> Result<bool> {
        Ok(self.db().get_pinned_cf(self.cf(cf::PUSH), entry.key())?.is_some())
    }

    /// Put the removal of an account's queued notifications into `batch` (the account is going).
    pub(super) fn drop_push_entries(&self, batch: &mut WriteBatch, account_id: u64) -> Result<()> {
        for item in self.db().iterator_cf(self.cf(cf::PUSH), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            if decode::<PushEntry>(cf::PUSH, &value)?.account_id == account_id {
                batch.delete_cf(self.cf(cf::PUSH), key);
            }
        }
        Ok(())
    }

    /// Replace `old` by `new` (another due time, one more attempt), or remove it with `None`.
    pub fn push_reschedule(&self, old: &PushEntry, new: Option<&PushEntry>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::PUSH), old.key());
        if let Some(new) = new {
            batch.put_cf(self.cf(cf::PUSH), new.key(), encode(new));
        }
        self.write(batch, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order_and_rescheduled() {
        let store = Store::open_in_memory().unwrap();
        store.push_enqueue(&[(7, "a".into()), (8, "b".into())], 1_000).unwrap();
        assert!(store.push_due(999, 10).unwrap().is_empty());
        let due = store.push_due(1_000, 10).unwrap();
        assert_eq!(due.iter().map(|e| e.token.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let later = PushEntry { attempts: 1, due_millis: 9_000, ..due[0].clone() };
        store.push_reschedule(&due[0], Some(&later)).unwrap();
        store.push_reschedule(&due[1], None).unwrap();
        assert!(!store.push_is_queued(&due[0]).unwrap() && !store.push_is_queued(&due[1]).unwrap());
        assert!(store.push_is_queued(&later).unwrap());
        assert!(store.push_due(8_999, 10).unwrap().is_empty());
        assert_eq!(store.push_queue().unwrap(), vec![later]);
    }
}
