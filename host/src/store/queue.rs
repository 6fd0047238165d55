//! The outbound queue: messages waiting for delivery to other servers, ordered by when
//! they are due. It lives in the database, so it survives restarts.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::mailbox::{Accepted, Outbound};
use super::{Key, Result, Store, cf, decode, encode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: u64,
    pub blob_id: u64,
    /// The envelope sender ("" for the null sender).
    pub mail_from: String,
    /// Recipients not yet delivered.
    pub recipients: Vec<String>,
    pub attempts: u32,
    /// Unix time (seconds) the message entered the queue.
    pub created: u64,
    /// Unix time (milliseconds) of the next attempt: the queue's order.
    pub due_millis: u64,
    pub last_error: Option<String>,
}

impl QueueEntry {
    fn key(&self) -> Vec<u8> {
        Key::new().u64(self.due_millis).u64(self.id).0
    }
}

impl Store {
    /// Queue a message for remote recipients, durably (synced) before returning.
    pub fn enqueue(&self, message: &[u8], mail_from: &str, recipients: &[String], now_millis: u64) -> Result<QueueEntry> {
        let outbound = Outbound { message: std::borrow::Cow::Borrowed(message), mail_from, recipients };
        let (_, queued) = self.accept(Accepted { local: None, outbound: Some(outbound), now_millis })?;
        Ok(queued.expect("an outbound copy is always queued"))
    }

    pub(super) fn add_queue_entry(&self, batch: &mut WriteBatch, outbound: Outbound<'_>, now_millis: u64) -> Result<QueueEntry> {
        let blob_id = self.next_id()?;
        let entry = QueueEntry {
            id: self.next_id()?,
            blob_id,
            mail_from: outbound.mail_from.to_string(),
            recipients: outbound.recipients.to_vec(),
            attempts: 0,
            created: now_millis / 1000,
            due_millis: now_millis,
            last_error: None,
        };
        batch.put_cf(self.cf(cf::BLOBS), Key::new().u64(blob_id).0, &outbound.message);
        batch.put_cf(self.cf(cf::BLOB_REFS), Key::new().u64(blob_id).0, 1u64.to_be_bytes());
        batch.put_cf(self.cf(cf::QUEUE), entry.key(), encode(&entry));
        Ok(entry)
    }

    /// Entries due at `now_millis`, earliest first, at most `limit`.
    pub fn queue_due(&self, now_millis: u64, limit: usize) -> Result<Vec<QueueEntry>> {
        let mut out = Vec::new();
        for item in self.db().iterator_cf(self.cf(cf::QUEUE), rocksdb::IteratorMode::Start) {
            let (_, value) = item?;
            let entry: QueueEntry = decode(cf::QUEUE, &value)?;
            if entry.due_millis > now_millis || out.len() >= limit {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// The whole queue, earliest first.
    pub fn queue(&self) -> Result<Vec<QueueEntry>> {
        self.queue_due(u64::MAX, usize::MAX)
    }

    /// Whether `entry` is still queued as it was read: the worker's scan may return an entry
    /// that a delivery finished (or moved) a moment later.
    pub fn is_queued(&self, entry: &QueueEntry) -> Result<bool> {
        Ok(self.db().get_pinned_cf(self.cf(cf::QUEUE), entry.key())?.is_some())
    }

    /// Replace `old` by `new` (same id): fewer recipients, another due time, a new error.
    pub fn requeue(&self, old: &QueueEntry, new: &QueueEntry) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::QUEUE), old.key());
        batch.put_cf(self.cf(cf::QUEUE), new.key(), encode(new));
        self.write(batch, true)
    }

    /// Change or remove an entry for the operator, only if it is still queued as it was read
    /// (a delivery may have finished or moved it meanwhile). Returns whether it was.
    pub fn change_if_queued(&self, old: &QueueEntry, new: Option<&QueueEntry>) -> Result<bool> {
        if !self.is_queued(old)? {
            return Ok(false);
        }
        match new {
            Some(new) => self.requeue(old, new)?,
            None => self.dequeue(old)?,
        }
        Ok(true)
    }

    /// Remove an entry (delivered, bounced or deleted by the operator) and its message.
    pub fn dequeue(&self, entry: &QueueEntry) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::QUEUE), entry.key());
        self.release_blobs(batch, &[entry.blob_id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_order_requeue_and_dequeue() {
        let store = Store::open_in_memory().unwrap();
        let a = store.enqueue(b"one", "a@x.org", &["r@y.org".into()], 1_000).unwrap();
        let b = store.enqueue(b"two", "", &["s@y.org".into(), "t@y.org".into()], 500).unwrap();
        let due: Vec<u64> = store.queue_due(1_000, 10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(due, [b.id, a.id]);
        assert_eq!(store.queue_due(600, 10).unwrap().len(), 1);

        let later = QueueEntry { due_millis: 5_000, attempts: 1, recipients: vec!["t@y.org".into()], ..b.clone() };
        store.requeue(&b, &later).unwrap();
        assert!(!store.is_queued(&b).unwrap() && store.is_queued(&later).unwrap(), "only the new version is queued");
        assert_eq!(store.queue_due(1_000, 10).unwrap(), [a.clone()]);
        assert_eq!(store.queue().unwrap(), [a.clone(), later.clone()]);

        store.dequeue(&a).unwrap();
        assert!(!store.is_queued(&a).unwrap());
        assert!(store.blob(a.blob_id).unwrap().is_none());
        assert_eq!(store.blob(later.blob_id).unwrap().unwrap(), b"two");
    }
}
