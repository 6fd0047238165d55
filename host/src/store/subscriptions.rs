//! IMAP subscriptions: a set of mailbox names per account, independent of the mailboxes
//! themselves (RFC 3501 §6.3.6, RFC 9051 §6.3.9). Deleting a mailbox keeps its subscription;
//! a name may be subscribed before a mailbox of that name exists. New mailboxes are
//! subscribed when created, and RENAME carries the subscription to the new name.

use rocksdb::WriteBatch;

use super::{Account, Key, Mailbox, Result, Store, cf, decode};
use super::folders::{FolderError, limits};

/// Set once the subscriptions of mailboxes stored before this record kind existed are copied.
const MIGRATED_KEY: &[u8] = b"\0subscriptions-migrated";

const TOO_MANY_SUBSCRIPTIONS: &str = "Too many subscriptions";

impl Store {
    pub(super) fn put_subscription(&self, batch: &mut WriteBatch, account_id: u64, name: &str, subscribed: bool) {
        let key = Key::new().u64(account_id).str(normalized(name)).0;
        match subscribed {
            true => batch.put_cf(self.cf(cf::SUBSCRIPTIONS), key, []),
            false => batch.delete_cf(self.cf(cf::SUBSCRIPTIONS), key),
        }
    }

    pub(super) fn is_subscribed(&self, account_id: u64, name: &str) -> Result<bool> {
        let key = Key::new().u64(account_id).str(normalized(name)).0;
        Ok(self.db().get_pinned_cf(self.cf(cf::SUBSCRIPTIONS), key)?.is_some())
    }

    /// The names an account subscribed to, in byte order.
    pub fn subscriptions(&self, account_id: u64) -> Result<Vec<String>> {
        let prefix = Key::new().u64(account_id).0;
        let mut names = Vec::new();
        for item in self.db().prefix_iterator_cf(self.cf(cf::SUBSCRIPTIONS), &prefix) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            names.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(names)
    }

    /// Subscribe to a name (whether a mailbox of that name exists or not) or unsubscribe from
    /// it (a name not subscribed is no error: RFC 9051 §6.3.10). Bounded: at most
    /// [`limits::SUBSCRIPTIONS`] names of at most [`limits::NAME_BYTES`] each.
    pub fn subscribe(&self, account: &Account, name: &str, subscribed: bool) -> Result<(), FolderError> {
        let _guard = self.lock_accounts([account.address.as_str()]);
        if subscribed {
            if name.len() > limits::NAME_BYTES {
                return Err(FolderError::Limit(super::folders::NAME_TOO_LONG));
            }
            let existing = self.subscriptions(account.id)?;
            if !existing.iter().any(|n| n == normalized(name)) && existing.len() >= limits::SUBSCRIPTIONS {
                return Err(FolderError::Limit(TOO_MANY_SUBSCRIPTIONS));
            }
        }
        let mut batch = WriteBatch::default();
        self.put_subscription(&mut batch, account.id, name, subscribed);
        self.write(batch, false)?;
        Ok(())
    }

    /// Once per database: subscriptions kept inside mailbox records (before they were records
    /// of their own) become subscription records.
    pub(super) fn migrate_subscriptions(&self) -> Result<()> {
        if self.db().get_cf(self.cf(cf::METADATA), MIGRATED_KEY)?.is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for item in self.db().iterator_cf(self.cf(cf::MAILBOXES), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            let mailbox: Mailbox = decode(cf::MAILBOXES, &value)?;
            if mailbox.legacy_subscribed
                && let Some(account_id) = key.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
            {
                self.put_subscription(&mut batch, account_id, &mailbox.name, true);
            }
        }
        batch.put_cf(self.cf(cf::METADATA), MIGRATED_KEY, []);
        self.write(batch, true)
    }
}

/// INBOX in any case is INBOX.
fn normalized(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") { "INBOX" } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_outlive_their_mailboxes() {
        let store = Store::open_in_memory().unwrap();
        let (account, _) = store.create_account("a@x.org", "h", 1).unwrap();
        assert_eq!(store.subscriptions(account.id).unwrap(), ["Drafts", "INBOX", "Junk", "Sent", "Trash"], "defaults subscribed");
        store.create_mailbox(&account, "Archive").unwrap();
        assert!(store.subscriptions(account.id).unwrap().contains(&"Archive".to_string()), "new mailboxes subscribed");
        store.delete_mailbox(&account, "Archive").unwrap();
        assert!(store.subscriptions(account.id).unwrap().contains(&"Archive".to_string()), "DELETE keeps it");
        store.subscribe(&account, "Future", true).unwrap();
        store.subscribe(&account, "Never", false).unwrap();
        store.subscribe(&account, "inbox", false).unwrap();
        store.rename_mailbox(&account, "Junk", "Spam").unwrap();
        assert_eq!(store.subscriptions(account.id).unwrap(), ["Archive", "Drafts", "Future", "Sent", "Spam", "Trash"]);
        for i in 0..limits::SUBSCRIPTIONS {
            let _ = store.subscribe(&account, &format!("n{i}"), true);
        }
        assert!(matches!(store.subscribe(&account, "one-more", true), Err(FolderError::Limit(_))));
        assert!(store.subscribe(&account, "n1", true).is_ok(), "subscribing again adds nothing");
        store.create_mailbox(&account, "Overflow").unwrap();
        assert!(!store.subscriptions(account.id).unwrap().contains(&"Overflow".to_string()), "not past the bound, even when created");
        store.delete_account("a@x.org").unwrap();
        assert!(store.subscriptions(account.id).unwrap().is_empty(), "an account's subscriptions go with it");
    }

    #[test]
    fn subscriptions_in_mailbox_records_are_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let account_id = {
            let store = Store::open(dir.path()).unwrap();
            let (account, _) = store.create_account("a@x.org", "h", 1).unwrap();
            // A database written before subscriptions were records: the flag in the mailbox,
            // no record, no migration marker.
            let mut batch = WriteBatch::default();
            for mut mailbox in store.mailboxes(account.id).unwrap() {
                mailbox.legacy_subscribed = mailbox.name != "Junk";
                batch.put_cf(store.cf(cf::MAILBOXES), Key::new().u64(account.id).str(&mailbox.name).0, super::super::encode(&mailbox));
                store.put_subscription(&mut batch, account.id, &mailbox.name, false);
            }
            batch.delete_cf(store.cf(cf::METADATA), MIGRATED_KEY);
            store.write(batch, true).unwrap();
            account.id
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.subscriptions(account_id).unwrap(), ["Drafts", "INBOX", "Sent", "Trash"]);
        let account = store.account("a@x.org").unwrap().unwrap();
        store.subscribe(&account, "Sent", false).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.subscriptions(account_id).unwrap(), ["Drafts", "INBOX", "Trash"], "not migrated twice");
    }
}
