//! RFC 3501's `\Recent`: a message is recent to the first session that is told of it in its
//! mailbox. Per mailbox the store keeps the first UID no session has claimed yet; a session
//! that selects the mailbox read-write (or hears of new messages in it) claims up to UIDNEXT,
//! under the account's lock, so exactly one session sees each message as recent.
//!
//! Kept beside METADATA under an internal key (no IMAP entry name starts with NUL), so that
//! it goes with the account. A mailbox from before this record: everything in it is recent,
//! once.

use rocksdb::WriteBatch;

use super::{Account, Key, Result, Store, be_u32, cf};

fn key(account_id: u64, mailbox_id: u32) -> Vec<u8> {
    Key::new().u64(account_id).str("\0recent/").u32(mailbox_id).0
}

impl Store {
    /// The first UID of the mailbox that no session has claimed as recent.
    pub fn recent_from(&self, account_id: u64, mailbox_id: u32) -> Result<u32> {
        let raw = self.db().get_cf(self.cf(cf::METADATA), key(account_id, mailbox_id))?;
        Ok(raw.as_deref().and_then(be_u32).unwrap_or(1))
    }

    /// Claim the messages below `uidnext` not yet claimed: they are recent to the caller from
    /// the UID returned on.
    pub fn claim_recent(&self, account: &Account, mailbox_id: u32, uidnext: u32) -> Result<u32> {
        let _guard = self.lock_accounts([account.address.as_str()]);
        let from = self.recent_from(account.id, mailbox_id)?;
        if uidnext > from {
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(cf::METADATA), key(account.id, mailbox_id), uidnext.to_be_bytes());
            self.write(batch, false)?;
        }
        Ok(from)
    }

    pub(super) fn forget_recent(&self, batch: &mut WriteBatch, account_id: u64, mailbox_id: u32) {
        batch.delete_cf(self.cf(cf::METADATA), key(account_id, mailbox_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_is_recent_to_one_claim() {
        let store = Store::open_in_memory().unwrap();
        let (account, _) = store.create_account("a@x.org", "h", 1).unwrap();
        let inbox = store.mailbox(account.id, "INBOX").unwrap().unwrap();
        assert_eq!(store.claim_recent(&account, inbox.id, 4).unwrap(), 1, "1 to 3 are recent to the first");
        assert_eq!(store.claim_recent(&account, inbox.id, 4).unwrap(), 4, "none to the second");
        assert_eq!(store.claim_recent(&account, inbox.id, 6).unwrap(), 4, "4 and 5 to the next");
        assert_eq!(store.recent_from(account.id, inbox.id).unwrap(), 6);
        assert_eq!(store.claim_recent(&account, inbox.id, 5).unwrap(), 6, "never back");
    }

    #[test]
    fn claims_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (account, inbox_id) = {
            let store = Store::open(dir.path()).unwrap();
            let (account, _) = store.create_account("a@x.org", "h", 1).unwrap();
            let inbox = store.mailbox(account.id, "INBOX").unwrap().unwrap();
            store.claim_recent(&account, inbox.id, 3).unwrap();
            (account, inbox.id)
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.claim_recent(&account, inbox_id, 3).unwrap(), 3, "1 and 2 were claimed before");
    }
}
