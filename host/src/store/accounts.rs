//! Accounts, keyed by their lower-case address.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::mailbox::DEFAULT_MAILBOXES;
use super::{Key, Result, Store, cf, encode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Internal id: records of a deleted account can never surface under a new one.
    pub id: u64,
    pub address: String,
    /// A password hash in PHC or crypt(3) format; never the password.
    pub password_hash: String,
    /// Days since 1970-01-01: only the day is kept, by promise to users.
    pub created_day: u32,
    pub last_login_day: u32,
    /// Bytes and messages stored, kept up to date by every delivery and deletion.
    pub used_bytes: u64,
    pub messages: u64,
}

impl Store {
    pub fn account(&self, address: &str) -> Result<Option<Account>> {
        self.get(cf::ACCOUNTS, address.to_ascii_lowercase().as_bytes())
    }

    /// Create an account with the default mailboxes, unless the address is taken: then the
    /// existing account is returned untouched and `false` says it was not created. Concurrent
    /// first logins of one address therefore create exactly one account.
    pub fn create_account(&self, address: &str, password_hash: &str, today: u32) -> Result<(Account, bool)> {
        let address = address.to_ascii_lowercase();
        let _guard = self.lock_accounts([address.as_str()]);
        if let Some(existing) = self.account(&address)? {
            return Ok((existing, false));
        }
        let account = Account {
            id: self.next_id()?,
            address: address.clone(),
            password_hash: password_hash.to_string(),
            created_day: today,
            last_login_day: today,
            used_bytes: 0,
            messages: 0,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf::ACCOUNTS), address.as_bytes(), encode(&account));
        for (i, (name, _)) in DEFAULT_MAILBOXES.iter().enumerate() {
            // UIDVALIDITY only has to differ from any earlier mailbox of the same name.
            self.put_new_mailbox(&mut batch, account.id, name, i as u32 + 1, self.next_id()? as u32, true);
        }
        self.write(batch, true)?;
        Ok((account, true))
    }

    /// Record a login, at day granularity. Writes only when the day changed.
    pub fn touch_login(&self, address: &str, today: u32) -> Result<()> {
        let address = address.to_ascii_lowercase();
        let _guard = self.lock_accounts([address.as_str()]);
        let Some(mut account) = self.account(&address)? else { return Ok(()) };
        if account.last_login_day == today {
            return Ok(());
        }
        account.last_login_day = today;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf::ACCOUNTS), address.as_bytes(), encode(&account));
        self.write(batch, false)
    }

    /// Delete an account and everything stored for it.
    pub fn delete_account(&self, address: &str) -> Result<bool> {
        self.delete_account_if(address, |_| true)
    }

    /// Delete an account if, read under its lock, it still meets `condition` (e.g. it has not
    /// logged in since a retention run looked at it).
    pub fn delete_account_if(&self, address: &str, condition: impl FnOnce(&Account) -> bool) -> Result<bool> {
        let address = address.to_ascii_lowercase();
        let _guard = self.lock_accounts([address.as_str()]);
        let Some(account) = self.account(&address)? else { return Ok(false) };
        if !condition(&account) {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let prefix = Key::new().u64(account.id).0;
        let mut released = Vec::new();
        for item in self.db().prefix_iterator_cf(self.cf(cf::MESSAGES), &prefix) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let entry: super::MessageEntry = super::decode(cf::MESSAGES, &value)?;
            released.push(entry.blob_id);
            batch.delete_cf(self.cf(cf::MESSAGES), &key);
        }
        for family in [cf::MAILBOXES, cf::METADATA, cf::SUBSCRIPTIONS] {
            batch.delete_range_cf(self.cf(family), &prefix, &Key::new().u64(account.id + 1).0);
        }
        batch.delete_cf(self.cf(cf::ACCOUNTS), address.as_bytes());
        self.drop_push_entries(&mut batch, account.id)?;
        self.release_blobs(batch, &released)?;
        Ok(true)
    }

    /// Every account, in address order.
    pub fn accounts(&self) -> Result<Vec<Account>> {
        self.db()
            .iterator_cf(self.cf(cf::ACCOUNTS), rocksdb::IteratorMode::Start)
            .map(|item| {
                let (_, value) = item?;
                super::decode(cf::ACCOUNTS, &value)
            })
            .collect()
    }

    pub(super) fn put_account(&self, batch: &mut WriteBatch, account: &Account) {
        batch.put_cf(self.cf(cf::ACCOUNTS), account.address.as_bytes(), encode(account));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_once_then_existing() {
        let store = Store::open_in_memory().unwrap();
        let (a, created) = store.create_account("Alice@X.org", "$hash1", 100).unwrap();
        assert!(created);
        assert_eq!(a.address, "alice@x.org");
        let (b, created) = store.create_account("alice@x.org", "$other", 101).unwrap();
        assert!(!created);
        assert_eq!(b.password_hash, "$hash1", "an existing account is never overwritten");
        assert_eq!(store.mailboxes(a.id).unwrap().len(), DEFAULT_MAILBOXES.len());
    }

    #[test]
    fn concurrent_first_logins_create_one_account() {
        let store = Store::open_in_memory().unwrap();
        let created: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    s.spawn(move || store.create_account("race@x.org", &format!("h{i}"), 1).unwrap().1 as usize)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(created, 1);
    }

    #[test]
    fn login_day_and_deletion() {
        let store = Store::open_in_memory().unwrap();
        store.create_account("bob@x.org", "h", 10).unwrap();
        store.touch_login("bob@x.org", 12).unwrap();
        assert_eq!(store.account("bob@x.org").unwrap().unwrap().last_login_day, 12);
        assert!(store.delete_account("bob@x.org").unwrap());
        assert!(store.account("bob@x.org").unwrap().is_none());
        assert!(!store.delete_account("bob@x.org").unwrap());
    }
}
