//! What IMAP does to mailboxes and the messages in them: create, delete, rename, subscribe;
//! append, flag, copy and move messages. Every change bumps the mailbox's modification
//! sequence so that other sessions can tell what changed.

use rocksdb::WriteBatch;

use super::{Account, Key, Mailbox, MessageEntry, Result, Store, StoreError, be_u64, cf, encode};

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("mailbox already exists")]
    Exists,
    #[error("no such mailbox")]
    NotFound,
    #[error("INBOX cannot be deleted or renamed")]
    Inbox,
    /// The account would hold more than its quota.
    #[error("quota exceeded")]
    OverQuota,
    /// A bound on what one account may keep (see [`Limits`]); the text says which.
    #[error("{0}")]
    Limit(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    Add,
    Remove,
    Replace,
}

/// What one account may keep besides bytes: every bound a client could otherwise push
/// without end (RFC 5530 `[LIMIT]`). Checked under the account's lock.
pub mod limits {
    /// Mailboxes per account, INBOX and the special-use ones included.
    pub const MAILBOXES: usize = 100;
    /// Bytes of a mailbox name (as the client wrote it, modified UTF-7).
    pub const NAME_BYTES: usize = 1024;
    /// Distinct keywords (flags other than the system ones) in use in one mailbox.
    pub const KEYWORDS: usize = 64;
    /// Bytes of all flag names on one message together.
    pub const FLAG_BYTES: usize = 1024;
    /// Subscribed names per account (they need not name a mailbox that exists).
    pub const SUBSCRIPTIONS: usize = 2 * MAILBOXES;
}

const TOO_MANY_MAILBOXES: &str = "Too many mailboxes";
pub(super) const NAME_TOO_LONG: &str = "Mailbox name too long";
const TOO_MANY_KEYWORDS: &str = "Too many keywords in this mailbox";
const TOO_MANY_FLAGS: &str = "Too many flags on one message";

/// RFC 3501's system flags: everything else is a keyword.
pub fn is_keyword(flag: &str) -> bool {
    !["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent"].iter().any(|s| s.eq_ignore_ascii_case(flag))
}

/// A message's flags within [`limits::FLAG_BYTES`].
fn check_flag_bytes(flags: &[String]) -> Result<(), FolderError> {
    match flag_bytes(flags) > limits::FLAG_BYTES {
        true => Err(FolderError::Limit(TOO_MANY_FLAGS)),
        false => Ok(()),
    }
}

fn flag_bytes(flags: &[String]) -> usize {
    flags.iter().map(|f| f.len() + 1).sum()
}

/// Whether `adding` more bytes keeps the account within `quota` (0: no quota).
fn check_quota(account: &Account, adding: u64, quota: u64) -> Result<(), FolderError> {
    match quota > 0 && account.used_bytes.saturating_add(adding) > quota {
        true => Err(FolderError::OverQuota),
        false => Ok(()),
    }
}

fn is_inbox(name: &str) -> bool {
    name.eq_ignore_ascii_case("INBOX")
}

impl Store {
    pub fn create_mailbox(&self, account: &Account, name: &str) -> Result<Mailbox, FolderError> {
        let _guard = self.lock_accounts([account.address.as_str()]);
        if name.len() > limits::NAME_BYTES {
            return Err(FolderError::Limit(NAME_TOO_LONG));
        }
        if is_inbox(name) || self.mailbox(account.id, name)?.is_some() {
            return Err(FolderError::Exists);
        }
        let existing = self.mailboxes(account.id)?;
        if existing.len() >= limits::MAILBOXES {
            return Err(FolderError::Limit(TOO_MANY_MAILBOXES));
        }
        // A mailbox's id is never used again in the account, so that a session which selected
        // a deleted mailbox cannot find itself in a new one: ids come from the store's counter
        // (which never goes back), above those of the default mailboxes (1 to 5), skipping
        // any a live mailbox holds (the counter is 64 bits, ids 32). It is the UIDVALIDITY too.
        let id = loop {
            let id = self.next_id()? as u32;
            if id as usize > super::DEFAULT_MAILBOXES.len() && !existing.iter().any(|m| m.id == id) {
                break id;
            }
        };
        // Subscribed, unless the account's subscriptions (which DELETE keeps) are at their bound.
        let subscribe = self.subscriptions(account.id)?.len() < limits::SUBSCRIPTIONS;
        let mut batch = WriteBatch::default();
        self.put_new_mailbox(&mut batch, account.id, name, id, id, subscribe);
        self.write(batch, false)?;
        self.mailbox(account.id, name)?.ok_or(FolderError::NotFound)
    }

    /// Delete a mailbox and its messages, in one write under the account's lock (a message
    /// delivered or copied in between would otherwise outlive its mailbox).
    pub fn delete_mailbox(&self, account: &Account, name: &str) -> Result<(), FolderError> {
        if is_inbox(name) {
            return Err(FolderError::Inbox);
        }
        let _guard = self.lock_accounts([account.address.as_str()]);
        let mailbox = self.mailbox(account.id, name)?.ok_or(FolderError::NotFound)?;
        let uids: Vec<(u32, u32)> = self.messages(account.id, mailbox.id)?.iter().map(|(uid, _)| (mailbox.id, *uid)).collect();
        let mut batch = WriteBatch::default();
        let released = self.remove_messages(&mut batch, &account.address, &uids)?;
        batch.delete_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&mailbox.name).0);
        self.forget_recent(&mut batch, account.id, mailbox.id);
        self.release_blobs(batch, &released)?;
        Ok(())
    }

    /// Rename a mailbox; its messages keep their UIDs (they belong to the mailbox id).
    pub fn rename_mailbox(&self, account: &Account, from: &str, to: &str) -> Result<(), FolderError> {
        if is_inbox(from) {
            return Err(FolderError::Inbox);
        }
        if to.len() > limits::NAME_BYTES {
            return Err(FolderError::Limit(NAME_TOO_LONG));
        }
        let _guard = self.lock_accounts([account.address.as_str()]);
        let mut mailbox = self.mailbox(account.id, from)?.ok_or(FolderError::NotFound)?;
        if is_inbox(to) || self.mailbox(account.id, to)?.is_some() {
            return Err(FolderError::Exists);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&mailbox.name).0);
        mailbox.name = to.to_string();
        batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(to).0, encode(&mailbox));
        // The subscription follows the mailbox, as new mailboxes are subscribed.
        if self.is_subscribed(account.id, from)? {
            self.put_subscription(&mut batch, account.id, from, false);
            self.put_subscription(&mut batch, account.id, to, true);
        }
        self.write(batch, false)?;
        Ok(())
    }

    /// Add a message to a mailbox (IMAP APPEND), durably, if the account stays within
    /// `quota` bytes (0: none) and the mailbox within its keyword limit. Returns
    /// (UIDVALIDITY, UID).
    pub fn append(
        &self,
        account: &Account,
        mailbox: &str,
        message: &[u8],
        flags: &[String],
        received: u64,
        quota: u64,
    ) -> Result<(u32, u32), FolderError> {
        check_flag_bytes(flags)?;
        let _guard = self.lock_accounts([account.address.as_str()]);
        let mut account = self.account(&account.address)?.ok_or(StoreError::NoAccount)?;
        let mut mailbox = self.mailbox(account.id, mailbox)?.ok_or(FolderError::NotFound)?;
        check_quota(&account, message.len() as u64, quota)?;
        self.check_keywords(account.id, mailbox.id, flags)?;
        let blob_id = self.next_id()?;
        let uid = mailbox.uidnext;
        mailbox.uidnext += 1;
        mailbox.highest_modseq += 1;
        let entry = MessageEntry { blob_id, size: message.len() as u64, received, flags: flags.to_vec(), modseq: mailbox.highest_modseq };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf::BLOBS), Key::new().u64(blob_id).0, message);
        batch.put_cf(self.cf(cf::BLOB_REFS), Key::new().u64(blob_id).0, 1u64.to_be_bytes());
        batch.put_cf(self.cf(cf::MESSAGES), Key::new().u64(account.id).u32(mailbox.id).u32(uid).0, encode(&entry));
        batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&mailbox.name).0, encode(&mailbox));
        account.used_bytes += entry.size;
        account.messages += 1;
        self.put_account(&mut batch, &account);
        self.write(batch, true)?;
        Ok((mailbox.uidvalidity, uid))
    }

    /// Change the flags of messages; returns each changed message's UID, flags and modseq.
    pub fn store_flags(
        &self,
        account: &Account,
        mailbox_id: u32,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
    ) -> Result<Vec<(u32, Vec<String>, u64)>, FolderError> {
        let _guard = self.lock_accounts([account.address.as_str()]);
        let mut mailbox = self.mailbox_by_id(account.id, mailbox_id)?.ok_or(FolderError::NotFound)?;
        if change != FlagChange::Remove {
            self.check_keywords(account.id, mailbox_id, flags)?;
        }
        let mut batch = WriteBatch::default();
        let mut changed = Vec::new();
        for &uid in uids {
            let key = Key::new().u64(account.id).u32(mailbox_id).u32(uid).0;
            let Some(mut entry) = self.get::<MessageEntry>(cf::MESSAGES, &key)? else { continue };
            let before = entry.flags.clone();
            match change {
                FlagChange::Replace => entry.flags = flags.to_vec(),
                FlagChange::Add => {
                    for flag in flags {
                        if !entry.flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
                            entry.flags.push(flag.clone());
                        }
                    }
                }
                FlagChange::Remove => entry.flags.retain(|f| !flags.iter().any(|r| r.eq_ignore_ascii_case(f))),
            }
            // Nothing is written unless every message stays within the bound; a change that
            // does not add (a removal, a flag it has) passes, so a message stored before the
            // bound can still be flagged \Deleted and expunged.
            if flag_bytes(&entry.flags) > flag_bytes(&before) {
                check_flag_bytes(&entry.flags)?;
            }
            if entry.flags != before {
                mailbox.highest_modseq += 1;
                entry.modseq = mailbox.highest_modseq;
                batch.put_cf(self.cf(cf::MESSAGES), &key, encode(&entry));
            }
            changed.push((uid, entry.flags, entry.modseq));
        }
        batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&mailbox.name).0, encode(&mailbox));
        self.write(batch, false)?;
        Ok(changed)
    }

    /// Copy messages into another mailbox (and, for MOVE, remove them from the source) in one
    /// write. The copies refer to the same blobs but count against the account's `quota`
    /// (0: none) as any message does: a COPY that would exceed it copies nothing. Returns the
    /// destination's UIDVALIDITY and (source UID, new UID) pairs.
    pub fn copy_messages(
        &self,
        account: &Account,
        from: u32,
        uids: &[u32],
        to: &str,
        remove_source: bool,
        quota: u64,
    ) -> Result<(u32, Vec<(u32, u32)>), FolderError> {
        let _guard = self.lock_accounts([account.address.as_str()]);
        let _blobs = super::lock(&self.inner.blob_lock);
        let mut account = self.account(&account.address)?.ok_or(StoreError::NoAccount)?;
        let mut target = self.mailbox(account.id, to)?.ok_or(FolderError::NotFound)?;
        // Into the mailbox itself (a MOVE there renumbers the messages): one record, written
        // once, or the second write would undo the first's changes to it.
        let mut source = match target.id == from {
            true => None,
            false => Some(self.mailbox_by_id(account.id, from)?.ok_or(FolderError::NotFound)?),
        };
        let mut batch = WriteBatch::default();
        let mut pairs = Vec::new();
        let mut added_refs: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
        let mut sources = Vec::with_capacity(uids.len());
        for &uid in uids {
            let key = Key::new().u64(account.id).u32(from).u32(uid).0;
            if let Some(entry) = self.get::<MessageEntry>(cf::MESSAGES, &key)? {
                sources.push((uid, key, entry));
            }
        }
        if !remove_source {
            check_quota(&account, sources.iter().map(|(_, _, e)| e.size).sum(), quota)?;
        }
        if source.is_some() {
            let flags: Vec<String> = sources.iter().flat_map(|(_, _, e)| e.flags.iter().cloned()).collect();
            self.check_keywords(account.id, target.id, &flags)?;
        }
        for (uid, key, mut entry) in sources {
            let new_uid = target.uidnext;
            target.uidnext += 1;
            target.highest_modseq += 1;
            entry.modseq = target.highest_modseq;
            batch.put_cf(self.cf(cf::MESSAGES), Key::new().u64(account.id).u32(target.id).u32(new_uid).0, encode(&entry));
            if remove_source {
                batch.delete_cf(self.cf(cf::MESSAGES), &key);
            } else {
                *added_refs.entry(entry.blob_id).or_default() += 1;
                account.used_bytes += entry.size;
                account.messages += 1;
            }
            pairs.push((uid, new_uid));
        }
        for (blob_id, added) in added_refs {
            let key = Key::new().u64(blob_id).0;
            let refs = self.db().get_cf(self.cf(cf::BLOB_REFS), &key).map_err(StoreError::from)?;
            let refs = refs.as_deref().and_then(be_u64).unwrap_or(0);
            batch.put_cf(self.cf(cf::BLOB_REFS), &key, (refs + added).to_be_bytes());
        }
        if remove_source {
            // The removals are a change of the source of their own.
            match source.as_mut() {
                Some(source) => {
                    source.highest_modseq += 1;
                    batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&source.name).0, encode(&source));
                }
                None => target.highest_modseq += 1,
            }
        }
        batch.put_cf(self.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&target.name).0, encode(&target));
        self.put_account(&mut batch, &account);
        self.write(batch, true)?;
        Ok((target.uidvalidity, pairs))
    }

    /// Whether the keywords among `flags` fit into the mailbox: at most [`limits::KEYWORDS`]
    /// distinct ones in use. Reads the mailbox only when a keyword is new to the request, so
    /// system flags (all the app uses) cost nothing.
    fn check_keywords(&self, account_id: u64, mailbox_id: u32, flags: &[String]) -> Result<(), FolderError> {
        let mut adding: Vec<String> = flags.iter().filter(|f| is_keyword(f)).map(|f| f.to_ascii_lowercase()).collect();
        if adding.is_empty() {
            return Ok(());
        }
        adding.sort_unstable();
        adding.dedup();
        if adding.len() > limits::KEYWORDS {
            return Err(FolderError::Limit(TOO_MANY_KEYWORDS));
        }
        let mut in_use: std::collections::BTreeSet<String> = adding.into_iter().collect();
        for (_, entry) in self.messages(account_id, mailbox_id)? {
            in_use.extend(entry.flags.iter().filter(|f| is_keyword(f)).map(|f| f.to_ascii_lowercase()));
            if in_use.len() > limits::KEYWORDS {
                return Err(FolderError::Limit(TOO_MANY_KEYWORDS));
            }
        }
        Ok(())
    }

    pub fn mailbox_by_id(&self, account_id: u64, mailbox_id: u32) -> Result<Option<Mailbox>> {
        Ok(self.mailboxes(account_id)?.into_iter().find(|m| m.id == mailbox_id))
    }

    /// One message of a mailbox.
    pub fn message(&self, account_id: u64, mailbox_id: u32, uid: u32) -> Result<Option<MessageEntry>> {
        self.get(cf::MESSAGES, &Key::new().u64(account_id).u32(mailbox_id).u32(uid).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Store, Account) {
        let store = Store::open_in_memory().unwrap();
        let (account, _) = store.create_account("a@x.org", "h", 1).unwrap();
        (store, account)
    }

    #[test]
    fn mailbox_lifecycle() {
        let (store, account) = setup();
        let created = store.create_mailbox(&account, "Archive").unwrap();
        assert!(matches!(store.create_mailbox(&account, "Archive"), Err(FolderError::Exists)));
        assert!(matches!(store.create_mailbox(&account, "inbox"), Err(FolderError::Exists)));
        store.append(&account, "Archive", b"m", &[], 1, 0).unwrap();
        store.rename_mailbox(&account, "Archive", "Old").unwrap();
        let renamed = store.mailbox(account.id, "Old").unwrap().unwrap();
        assert_eq!(renamed.id, created.id);
        assert_eq!(store.messages(account.id, renamed.id).unwrap().len(), 1, "messages follow the rename");
        assert!(matches!(store.rename_mailbox(&account, "INBOX", "X"), Err(FolderError::Inbox)));
        store.delete_mailbox(&account, "Old").unwrap();
        assert!(store.mailbox(account.id, "Old").unwrap().is_none());
        let again = store.create_mailbox(&account, "Archive").unwrap();
        assert!(again.id != created.id && again.uidvalidity != created.uidvalidity, "a mailbox id is never reused");
        assert_eq!(store.account("a@x.org").unwrap().unwrap().used_bytes, 0);
    }

    #[test]
    fn flags_copy_and_move() {
        let (store, account) = setup();
        let inbox = store.mailbox(account.id, "INBOX").unwrap().unwrap();
        store.deliver(b"one", &["a@x.org".into()], 1).unwrap();
        store.deliver(b"two", &["a@x.org".into()], 2).unwrap();
        let seen = vec!["\\Seen".to_string()];
        let changed = store.store_flags(&account, inbox.id, &[1, 2], FlagChange::Add, &seen).unwrap();
        assert_eq!(changed.iter().map(|c| c.1.clone()).collect::<Vec<_>>(), [seen.clone(), seen.clone()]);
        assert!(changed[1].2 > changed[0].2, "each change gets its own modseq");
        store.store_flags(&account, inbox.id, &[1], FlagChange::Remove, &["\\SEEN".into()]).unwrap();
        assert!(store.message(account.id, inbox.id, 1).unwrap().unwrap().flags.is_empty());

        let (_, copied) = store.copy_messages(&account, inbox.id, &[1], "Trash", false, 0).unwrap();
        assert_eq!(copied, [(1, 1)]);
        assert_eq!(store.account("a@x.org").unwrap().unwrap().messages, 3);
        let (_, moved) = store.copy_messages(&account, inbox.id, &[2], "Trash", true, 0).unwrap();
        assert_eq!(moved, [(2, 2)]);
        assert_eq!(store.messages(account.id, inbox.id).unwrap().len(), 1);
        // Deleting the original keeps the copy's blob alive.
        let blob = store.message(account.id, inbox.id, 1).unwrap().unwrap().blob_id;
        store.delete_messages("a@x.org", &[(inbox.id, 1)]).unwrap();
        assert!(store.blob(blob).unwrap().is_some());
    }

    #[test]
    fn move_into_the_same_mailbox_is_one_change() {
        let (store, account) = setup();
        store.deliver(b"one", &["a@x.org".into()], 1).unwrap();
        store.deliver(b"two", &["a@x.org".into()], 2).unwrap();
        let before = store.mailbox(account.id, "INBOX").unwrap().unwrap();
        let (_, moved) = store.copy_messages(&account, before.id, &[1, 2], "INBOX", true, 0).unwrap();
        assert_eq!(moved, [(1, 3), (2, 4)]);
        let after = store.mailbox(account.id, "INBOX").unwrap().unwrap();
        assert_eq!((after.uidnext, after.highest_modseq), (5, before.highest_modseq + 3), "two copies and the removals");
        assert_eq!(store.messages(account.id, after.id).unwrap().iter().map(|(uid, _)| *uid).collect::<Vec<_>>(), [3, 4]);
        let (_, copied) = store.copy_messages(&account, after.id, &[3], "INBOX", false, 0).unwrap();
        assert_eq!(copied, [(3, 5)]);
        assert_eq!(store.mailbox(account.id, "INBOX").unwrap().unwrap().highest_modseq, after.highest_modseq + 1);
    }

    #[test]
    fn quota_counts_appends_and_copies() {
        let (store, account) = setup();
        store.append(&account, "INBOX", &[b'x'; 600], &[], 1, 1000).unwrap();
        assert!(matches!(store.append(&account, "INBOX", &[b'y'; 500], &[], 1, 1000), Err(FolderError::OverQuota)));
        let inbox = store.mailbox(account.id, "INBOX").unwrap().unwrap();
        assert!(matches!(store.copy_messages(&account, inbox.id, &[1], "Trash", false, 1000), Err(FolderError::OverQuota)));
        let after = store.account("a@x.org").unwrap().unwrap();
        assert_eq!((after.used_bytes, after.messages), (600, 1), "nothing stored over the quota");
        // A move adds nothing, so it works even at the limit.
        store.copy_messages(&account, inbox.id, &[1], "Trash", true, 600).unwrap();
        assert_eq!(store.account("a@x.org").unwrap().unwrap().used_bytes, 600);
    }

    #[test]
    fn bounds_per_account() {
        let (store, account) = setup();
        let long = "n".repeat(limits::NAME_BYTES + 1);
        assert!(matches!(store.create_mailbox(&account, &long), Err(FolderError::Limit(_))));
        assert!(matches!(store.rename_mailbox(&account, "Trash", &long), Err(FolderError::Limit(_))));
        for i in super::super::DEFAULT_MAILBOXES.len()..limits::MAILBOXES {
            store.create_mailbox(&account, &format!("m{i}")).unwrap();
        }
        assert!(matches!(store.create_mailbox(&account, "one-too-many"), Err(FolderError::Limit(_))));

        let inbox = store.mailbox(account.id, "INBOX").unwrap().unwrap();
        store.deliver(b"one", &["a@x.org".into()], 1).unwrap();
        let keywords: Vec<String> = (0..limits::KEYWORDS).map(|i| format!("k{i}")).collect();
        store.store_flags(&account, inbox.id, &[1], FlagChange::Add, &keywords[..40]).unwrap();
        store.append(&account, "INBOX", b"two", &keywords[40..], 1, 0).unwrap();
        let more = ["\\Seen".to_string(), "K0".to_string()];
        store.store_flags(&account, inbox.id, &[2], FlagChange::Add, &more).unwrap();
        let err = store.store_flags(&account, inbox.id, &[2], FlagChange::Add, &["extra".into()]);
        assert!(matches!(err, Err(FolderError::Limit(_))), "the 65th keyword");
        assert!(matches!(store.append(&account, "INBOX", b"3", &["extra".into()], 1, 0), Err(FolderError::Limit(_))));
        let flood = vec!["f".repeat(600), "g".repeat(600)];
        let trash = store.mailbox(account.id, "Trash").unwrap().unwrap();
        store.copy_messages(&account, inbox.id, &[1], "Trash", false, 0).unwrap();
        let err = store.store_flags(&account, trash.id, &[1], FlagChange::Replace, &flood);
        assert!(matches!(err, Err(FolderError::Limit(_))), "over 1 KiB of flags on one message");
        assert_eq!(store.message(account.id, trash.id, 1).unwrap().unwrap().flags.len(), 40, "unchanged");
    }
}
