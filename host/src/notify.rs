//! Wake-ups for sessions watching an account: a delivery, an expunge or a flag change in one
//! session is announced to the others (IMAP IDLE, NOOP). One counter per watched account,
//! created on first watch and gone when the last watcher leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct Notifier {
    accounts: Arc<Mutex<HashMap<u64, Weak<watch::Sender<u64>>>>>,
}

/// A session's view of one account's changes.
pub struct Watch {
    receiver: watch::Receiver<u64>,
    // Keeps the account's channel alive while this session watches.
    _sender: Arc<watch::Sender<u64>>,
}

impl Watch {
    /// Wait for the next change (returns at once if one happened since the last call).
    pub async fn changed(&mut self) {
        // The sender lives as long as this watch, so this cannot fail.
        let _ = self.receiver.changed().await;
    }

    /// Whether something changed since the last `changed()` or `mark_seen()`.
    pub fn has_changed(&self) -> bool {
        self.receiver.has_changed().unwrap_or(false)
    }

    pub fn mark_seen(&mut self) {
        self.receiver.mark_unchanged();
    }
}

impl Notifier {
    pub fn watch(&self, account_id: u64) -> Watch {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let sender = match accounts.get(&account_id).and_then(Weak::upgrade) {
            Some(sender) => sender,
            None => {
                // Drop entries of accounts nobody watches any more, now and then.
                if accounts.len() > 64 && accounts.len().is_power_of_two() {
                    accounts.retain(|_, weak| weak.strong_count() > 0);
                }
                let sender = Arc::new(watch::channel(0u64).0);
                accounts.insert(account_id, Arc::downgrade(&sender));
                sender
            }
        };
        let mut receiver = sender.subscribe();
        receiver.mark_unchanged();
        Watch { receiver, _sender: sender }
    }

    /// Announce a change in an account to every session watching it.
    pub fn notify(&self, account_id: u64) {
        let sender = self.accounts.lock().unwrap_or_else(|e| e.into_inner()).get(&account_id).and_then(Weak::upgrade);
        if let Some(sender) = sender {
            sender.send_modify(|generation| *generation += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_of_an_account_are_woken() {
        let notifier = Notifier::default();
        let mut a = notifier.watch(7);
        let mut b = notifier.watch(7);
        let other = notifier.watch(8);
        assert!(!a.has_changed());
        notifier.notify(7);
        a.changed().await;
        assert!(b.has_changed() && !other.has_changed());
        b.mark_seen();
        assert!(!b.has_changed());
        notifier.notify(9); // nobody watches: nothing happens
    }
}
