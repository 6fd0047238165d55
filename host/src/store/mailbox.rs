//! Mailboxes, the message index and blobs.
//!
//! A message is stored once as a blob, however many local recipients (and queue entries)
//! refer to it; each mailbox entry names the blob, and a reference count says when the last
//! reference is gone.

use std::borrow::Cow;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{Key, QueueEntry, Result, Store, StoreError, be_u32, be_u64, cf, decode, encode};

/// Every account's mailboxes: INBOX and the special-use folders (RFC 6154).
pub const DEFAULT_MAILBOXES: [(&str, Option<&str>); 5] = [
    ("INBOX", None),
    ("Drafts", Some("\\Drafts")),
    ("Junk", Some("\\Junk")),
    ("Trash", Some("\\Trash")),
    ("Sent", Some("\\Sent")),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub id: u32,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    /// Where subscriptions lived before they became records of their own (a mailbox's
    /// deletion took its subscription along). Read once by [`Store::open`]'s migration,
    /// written `false` since; kept so that stored mailboxes still decode.
    pub legacy_subscribed: bool,
}

/// One message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEntry {
    pub blob_id: u64,
    pub size: u64,
    /// Unix time (seconds) the message was stored: IMAP's INTERNALDATE.
    pub received: u64,
    pub flags: Vec<String>,
    pub modseq: u64,
}

/// A message as the retention run sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub mailbox: String,
    pub mailbox_id: u32,
    pub uid: u32,
    pub entry: MessageEntry,
}

impl StoredMessage {
    /// One number naming this message within its account.
    pub fn handle(&self) -> u64 {
        (u64::from(self.mailbox_id) << 32) | u64::from(self.uid)
    }
}

/// Where a delivered message landed, for waking sessions that watch the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub address: String,
    pub account_id: u64,
    pub mailbox_id: u32,
    pub uid: u32,
    /// The account's storage use after this delivery.
    pub used_bytes: u64,
}

/// What one SMTP transaction stores (see [`Store::accept`]). The copies may be handed over:
/// each is then freed once it is in the write batch, before the write (a message may be 30 MB,
/// and the batch and RocksDB's memtable each hold it once more).
pub struct Accepted<'a> {
    /// The copy for local mailboxes and the local recipients.
    pub local: Option<(Cow<'a, [u8]>, &'a [String])>,
    pub outbound: Option<Outbound<'a>>,
    pub now_millis: u64,
}

/// The copy for other servers: sender and remote recipients.
pub struct Outbound<'a> {
    pub message: Cow<'a, [u8]>,
    pub mail_from: &'a str,
    pub recipients: &'a [String],
}

impl Store {
    /// A new mailbox, and (with `subscribe`) its subscription: new mailboxes are subscribed,
    /// so that clients that list only subscribed ones see them.
    pub(super) fn put_new_mailbox(&self, batch: &mut WriteBatch, account_id: u64, name: &str, id: u32, uidvalidity: u32, subscribe: bool) {
        let mailbox = Mailbox {
            id,
            name: name.to_string(),
            uidvalidity,
            uidnext: 1,
            highest_modseq: 1,
            legacy_subscribed: false,
        };
        batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account_id).str(name).0, encode(&mailbox));
        if subscribe {
            self.put_subscription(batch, account_id, name, true);
        }
    }

    /// An account's mailboxes, in name order.
    pub fn mailboxes(&self, account_id: u64) -> Result<Vec<Mailbox>> {
        let prefix = Key::new().u64(account_id).0;
        let mut out = Vec::new();
        for item in self.db().prefix_iterator_cf(self.cf(cf::MAILBOXES), &prefix) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(decode(cf::MAILBOXES, &value)?);
        }
        Ok(out)
    }

    /// A mailbox by name (INBOX in any case).
    pub fn mailbox(&self, account_id: u64, name: &str) -> Result<Option<Mailbox>> {
        let name = if name.eq_ignore_ascii_case("INBOX") { "INBOX" } else { name };
        self.get(cf::MAILBOXES, &Key::new().u64(account_id).str(name).0)
    }

    /// Store a message once and file it into the INBOX of every local recipient, durably
    /// (synced) before returning. Unknown recipients are an error: nothing is written.
    pub fn deliver(&self, message: &[u8], recipients: &[String], received: u64) -> Result<Vec<Delivery>> {
        let accepted = Accepted { local: Some((Cow::Borrowed(message), recipients)), outbound: None, now_millis: received * 1000 };
        Ok(self.accept(accepted)?.0)
    }

    /// Store what SMTP accepted in one synced write: the copy for local mailboxes (filed into
    /// every local recipient's INBOX) and the copy for the outbound queue. Either both are
    /// stored or neither: a `250` may only follow this.
    pub fn accept(&self, accepted: Accepted<'_>) -> Result<(Vec<Delivery>, Option<QueueEntry>)> {
        let mut batch = WriteBatch::default();
        let mut deliveries = Vec::new();
        let guards;
        if let Some((message, recipients)) = accepted.local {
            let mut recipients: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
            recipients.sort();
            recipients.dedup();
            guards = self.lock_accounts(recipients.iter().map(String::as_str));
            deliveries = self.file_into_inboxes(&mut batch, &message, &recipients, accepted.now_millis / 1000)?;
            drop(message);
        } else {
            guards = Vec::new();
        }
        let queued = match accepted.outbound {
            Some(outbound) => Some(self.add_queue_entry(&mut batch, outbound, accepted.now_millis)?),
            None => None,
        };
        self.write(batch, true)?;
        drop(guards);
        Ok((deliveries, queued))
    }

    fn file_into_inboxes(&self, batch: &mut WriteBatch, message: &[u8], recipients: &[String], received: u64) -> Result<Vec<Delivery>> {
        let blob_id = self.next_id()?;
        batch.put_cf(self.cf(cf::BLOBS), Key::new().u64(blob_id).0, message);
        batch.put_cf(self.cf(cf::BLOB_REFS), Key::new().u64(blob_id).0, (recipients.len() as u64).to_be_bytes());

        let mut deliveries = Vec::with_capacity(recipients.len());
        for address in recipients {
            let mut account = self.account(address)?.ok_or(StoreError::NoAccount)?;
            let mut inbox = self.mailbox(account.id, "INBOX")?.ok_or(StoreError::NoMailbox)?;
            let uid = inbox.uidnext;
            inbox.uidnext += 1;
            inbox.highest_modseq += 1;
            let entry = MessageEntry {
                blob_id,
                size: message.len() as u64,
                received,
                flags: Vec::new(),
                modseq: inbox.highest_modseq,
            };
            batch.put_cf(self.cf(cf::MESSAGES), Key::new().u64(account.id).u32(inbox.id).u32(uid).0, encode(&entry));
            batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&inbox.name).0, encode(&inbox));
            account.used_bytes += entry.size;
            account.messages += 1;
            self.put_account(batch, &account);
            deliveries.push(Delivery {
                address: address.clone(),
                account_id: account.id,
                mailbox_id: inbox.id,
                uid,
                used_bytes: account.used_bytes,
            });
        }
        Ok(deliveries)
    }

    /// The messages of one mailbox, by UID.
    pub fn messages(&self, account_id: u64, mailbox_id: u32) -> Result<Vec<(u32, MessageEntry)>> {
        self.messages_from(account_id, mailbox_id, 0)
    }

    /// The messages of one mailbox from `first_uid` on: what arrived since a session looked.
    pub fn messages_from(&self, account_id: u64, mailbox_id: u32, first_uid: u32) -> Result<Vec<(u32, MessageEntry)>> {
        let prefix = Key::new().u64(account_id).u32(mailbox_id).0;
        let start = Key::new().u64(account_id).u32(mailbox_id).u32(first_uid).0;
        let mut out = Vec::new();
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in self.db().iterator_cf(self.cf(cf::MESSAGES), mode) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let uid = be_u32(&key[12..]).ok_or_else(|| corrupt("short message key"))?;
            out.push((uid, decode(cf::MESSAGES, &value)?));
        }
        Ok(out)
    }

    /// Every message of an account, oldest first: what the retention run walks.
    pub fn stored_messages(&self, account_id: u64) -> Result<Vec<StoredMessage>> {
        let mut out = Vec::new();
        for mailbox in self.mailboxes(account_id)? {
            for (uid, entry) in self.messages(account_id, mailbox.id)? {
                out.push(StoredMessage { mailbox: mailbox.name.clone(), mailbox_id: mailbox.id, uid, entry });
            }
        }
        out.sort_by_key(|m| (m.entry.received, m.mailbox_id, m.uid));
        Ok(out)
    }

    /// Call `f` with the size of every stored message of every account (the storage report).
    pub fn for_each_message_size(&self, mut f: impl FnMut(u64)) -> Result<()> {
        for item in self.db().iterator_cf(self.cf(cf::MESSAGES), rocksdb::IteratorMode::Start) {
            let (_, value) = item?;
            f(decode::<MessageEntry>(cf::MESSAGES, &value)?.size);
        }
        Ok(())
    }

    /// A message's bytes.
    pub fn blob(&self, blob_id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db().get_cf(self.cf(cf::BLOBS), Key::new().u64(blob_id).0)?)
    }

    /// Remove messages (by `(mailbox_id, uid)`) from an account; blobs go with their last
    /// reference. Each mailbox touched gets a new modification sequence, so that sessions
    /// watching it notice. Returns how many were removed.
    pub fn delete_messages(&self, address: &str, messages: &[(u32, u32)]) -> Result<usize> {
        let address = address.to_ascii_lowercase();
        let _guard = self.lock_accounts([address.as_str()]);
        let mut batch = WriteBatch::default();
        let released = self.remove_messages(&mut batch, &address, messages)?;
        let removed = released.len();
        self.release_blobs(batch, &released)?;
        Ok(removed)
    }

    /// Put the removal of `messages` (and the account's new usage) into `batch`; returns the
    /// blobs they referenced. The caller holds the account's lock.
    pub(super) fn remove_messages(&self, batch: &mut WriteBatch, address: &str, messages: &[(u32, u32)]) -> Result<Vec<u64>> {
        let mut account = self.account(address)?.ok_or(StoreError::NoAccount)?;
        let mut released = Vec::new();
        let mut touched = std::collections::BTreeSet::new();
        for &(mailbox_id, uid) in messages {
            let key = Key::new().u64(account.id).u32(mailbox_id).u32(uid).0;
            let Some(entry) = self.get::<MessageEntry>(cf::MESSAGES, &key)? else { continue };
            batch.delete_cf(self.cf(cf::MESSAGES), &key);
            account.used_bytes = account.used_bytes.saturating_sub(entry.size);
            account.messages = account.messages.saturating_sub(1);
            released.push(entry.blob_id);
            touched.insert(mailbox_id);
        }
        for mailbox in self.mailboxes(account.id)?.into_iter().filter(|m| touched.contains(&m.id)) {
            let mailbox = Mailbox { highest_modseq: mailbox.highest_modseq + 1, ..mailbox };
            batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&mailbox.name).0, encode(&mailbox));
        }
        self.put_account(batch, &account);
        Ok(released)
    }

    /// Drop one reference to each blob (deleting blobs left without any) and write `batch`
    /// together with those changes.
    pub(super) fn release_blobs(&self, mut batch: WriteBatch, blob_ids: &[u64]) -> Result<()> {
        let _guard = super::lock(&self.inner.blob_lock);
        let mut counts: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
        for &blob_id in blob_ids {
            *counts.entry(blob_id).or_default() += 1;
        }
        for (blob_id, released) in counts {
            let key = Key::new().u64(blob_id).0;
            let refs = self.db().get_cf(self.cf(cf::BLOB_REFS), &key)?.as_deref().and_then(be_u64).unwrap_or(0);
            if refs <= released {
                batch.delete_cf(self.cf(cf::BLOBS), &key);
                batch.delete_cf(self.cf(cf::BLOB_REFS), &key);
            } else {
                batch.put_cf(self.cf(cf::BLOB_REFS), &key, (refs - released).to_be_bytes());
            }
        }
        self.write(batch, false)
    }
}

fn corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt { cf: cf::MESSAGES, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(addresses: &[&str]) -> Store {
        let store = Store::open_in_memory().unwrap();
        for a in addresses {
            store.create_account(a, "h", 1).unwrap();
        }
        store
    }

    #[test]
    fn one_blob_for_every_recipient() {
        let store = store_with(&["a@x.org", "b@x.org"]);
        let recipients = vec!["a@x.org".to_string(), "B@x.org".to_string(), "a@x.org".to_string()];
        let deliveries = store.deliver(b"hello", &recipients, 1000).unwrap();
        assert_eq!(deliveries.len(), 2, "duplicates collapse");
        let a = store.account("a@x.org").unwrap().unwrap();
        let b = store.account("b@x.org").unwrap().unwrap();
        let inbox_a = store.mailbox(a.id, "inbox").unwrap().unwrap();
        let list_a = store.messages(a.id, inbox_a.id).unwrap();
        let list_b = store.messages(b.id, store.mailbox(b.id, "INBOX").unwrap().unwrap().id).unwrap();
        assert_eq!(list_a[0].1.blob_id, list_b[0].1.blob_id, "one copy, two references");
        assert_eq!(list_a[0].0, 1);
        assert_eq!(inbox_a.uidnext, 2);
        assert_eq!((a.used_bytes, a.messages), (5, 1));
        assert_eq!(store.blob(list_a[0].1.blob_id).unwrap().unwrap(), b"hello");

        let blob = list_a[0].1.blob_id;
        assert_eq!(store.messages_from(a.id, inbox_a.id, 1).unwrap().len(), 1);
        assert!(store.messages_from(a.id, inbox_a.id, 2).unwrap().is_empty());
        assert_eq!(store.delete_messages("a@x.org", &[(inbox_a.id, 1)]).unwrap(), 1);
        let after = store.mailbox(a.id, "INBOX").unwrap().unwrap();
        assert!(after.highest_modseq > inbox_a.highest_modseq, "an expunge is a change others must see");
        assert!(store.blob(blob).unwrap().is_some(), "b still refers to it");
        store.delete_messages("b@x.org", &[(inbox_a.id, 1)]).unwrap();
        assert!(store.blob(blob).unwrap().is_none(), "last reference gone");
        assert_eq!(store.account("a@x.org").unwrap().unwrap().used_bytes, 0);
    }

    #[test]
    fn unknown_recipient_writes_nothing() {
        let store = store_with(&["a@x.org"]);
        let err = store.deliver(b"x", &["a@x.org".into(), "nobody@x.org".into()], 1).unwrap_err();
        assert!(matches!(err, StoreError::NoAccount));
        let a = store.account("a@x.org").unwrap().unwrap();
        assert_eq!(a.messages, 0);
    }

    #[test]
    fn local_and_outbound_copies_are_stored_together_or_not_at_all() {
        let store = store_with(&["a@x.org"]);
        let remote = vec!["r@y.org".to_string()];
        let outbound = || Some(Outbound { message: Cow::Borrowed(b"out"), mail_from: "a@x.org", recipients: &remote });
        let (deliveries, queued) = store
            .accept(Accepted { local: Some((Cow::Borrowed(b"in"), &["a@x.org".to_string()])), outbound: outbound(), now_millis: 5_000 })
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(store.blob(queued.unwrap().blob_id).unwrap().unwrap(), b"out");
        assert_eq!(store.queue().unwrap().len(), 1);

        let unknown = vec!["nobody@x.org".to_string()];
        assert!(store.accept(Accepted { local: Some((Cow::Borrowed(b"in"), &unknown)), outbound: outbound(), now_millis: 6_000 }).is_err());
        assert_eq!(store.queue().unwrap().len(), 1, "the queue entry was not written either");
    }

    #[test]
    fn uids_increase_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.create_account("a@x.org", "h", 1).unwrap();
            for i in 0..3 {
                store.deliver(format!("m{i}").as_bytes(), &["a@x.org".into()], i).unwrap();
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let a = store.account("a@x.org").unwrap().unwrap();
        let uids: Vec<u32> = store.stored_messages(a.id).unwrap().iter().map(|m| m.uid).collect();
        assert_eq!(uids, [1, 2, 3]);
    }

    #[test]
    fn account_deletion_removes_its_blobs() {
        let store = store_with(&["a@x.org"]);
        store.deliver(b"bye", &["a@x.org".into()], 1).unwrap();
        let a = store.account("a@x.org").unwrap().unwrap();
        let blob = store.stored_messages(a.id).unwrap()[0].entry.blob_id;
        store.delete_account("a@x.org").unwrap();
        assert!(store.blob(blob).unwrap().is_none());
        assert!(store.mailboxes(a.id).unwrap().is_empty());
    }
}
