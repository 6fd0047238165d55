//! The retention run: every account's messages, oldest first and in batches, go to the
//! bundle's `retention` hook, which names what to delete (old messages, large seen ones, the
//! oldest above the quota mark) or deletes the whole account (inactive). The host only carries
//! it out. It runs once a day, for one account when a delivery takes it over 75 % of its
//! quota, and on `ferrymail expire`.
//!
//! A failing policy decides nothing, so nothing is deleted.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::policy::{AccountState, StoredMessage};
use crate::serve::Relay;
use crate::store::{Account, StoreError};

/// Messages handed to the policy per call: bounded, so a huge mailbox cannot blow a guest's memory.
const BATCH: usize = 500;
/// How often the scheduler looks whether a new (UTC) day began.
const DAILY_CHECK: Duration = Duration::from_secs(600);

/// What a run did (or, dry, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub accounts: u64,
    pub accounts_deleted: u64,
    pub messages_deleted: u64,
    pub bytes_freed: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accounts checked: {}\naccounts deleted: {}\nmessages deleted: {}\nbytes freed: {}",
            self.accounts, self.accounts_deleted, self.messages_deleted, self.bytes_freed
        )
    }
}

/// Run retention over every account. With `dry_run` nothing is deleted; the report says what would be.
pub async fn run(relay: &Relay, dry_run: bool) -> Result<Report, StoreError> {
    let accounts = relay.store.run(|s| s.accounts()).await?;
    let mut report = Report::default();
    for account in accounts {
        run_account(relay, account, dry_run, &mut report).await?;
    }
    if !dry_run {
        let now = relay.clock.now_millis();
        let purged = relay.store.run(move |s| s.kv_purge_expired(now)).await?;
        tracing::debug!(purged, "expired policy state removed");
        crate::push::forget_expired_tokens(relay).await?;
        relay.metrics.inc("ferrymail_expire_runs_total", &[]);
        relay.metrics.add("ferrymail_expire_removed_messages_total", &[], report.messages_deleted);
        relay.metrics.add("ferrymail_expire_removed_accounts_total", &[], report.accounts_deleted);
    }
    tracing::info!(
        dry_run,
        accounts = report.accounts,
        accounts_deleted = report.accounts_deleted,
        messages_deleted = report.messages_deleted,
        bytes_freed = report.bytes_freed,
        "retention run finished"
    );
    Ok(report)
}

/// Ask the policy about one account and carry out its decision.
async fn run_account(relay: &Relay, account: Account, dry_run: bool, report: &mut Report) -> Result<(), StoreError> {
    let now = relay.clock.now_secs();
    let id = account.id;
    let messages = relay.store.run(move |s| s.stored_messages(id)).await?;
    report.accounts += 1;
    let start = account.used_bytes;
    let mut used = start;
    let mut doomed = Vec::new();
    // An empty mailbox is still asked once: the account may be inactive.
    let batches: Vec<&[crate::store::StoredMessage]> =
        if messages.is_empty() { vec![&[]] } else { messages.chunks(BATCH).collect() };
    for batch in batches {
        let state = AccountState {
            address: account.address.clone(),
            last_login_day: account.last_login_day,
            used_bytes: used,
            used_bytes_at_start: start,
        };
        let items = batch
            .iter()
            .map(|m| StoredMessage {
                id: m.handle(),
                mailbox: m.mailbox.clone(),
                size: m.entry.size,
                received: m.entry.received,
                seen: m.entry.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")),
            })
            .collect();
        let decision = relay.policies.retention(now, state, items).await;
        if decision.delete_account {
            report.accounts_deleted += 1;
            report.messages_deleted += messages.len() as u64;
            report.bytes_freed += start;
            if !dry_run {
                let address = account.address.clone();
                relay.store.run(move |s| s.delete_account(&address)).await?;
                relay.notifier.notify(id);
            }
            return Ok(());
        }
        let chosen: HashSet<u64> = decision.delete.into_iter().collect();
        for message in batch.iter().filter(|m| chosen.contains(&m.handle())) {
            used = used.saturating_sub(message.entry.size);
            report.bytes_freed += message.entry.size;
            doomed.push((message.mailbox_id, message.uid));
        }
    }
    report.messages_deleted += doomed.len() as u64;
    if !dry_run && !doomed.is_empty() {
        let address = account.address.clone();
        relay.store.run(move |s| s.delete_messages(&address, &doomed)).await?;
        relay.notifier.notify(id);
    }
    Ok(())
}

/// Run retention for one account now, in the background: a delivery took it over the mark
/// where the quota trim starts. At most one such run per account at a time.
pub fn trim_soon(relay: &Arc<Relay>, account_id: u64, address: &str) {
    static RUNNING: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
    let claim = move |add: bool| {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let running = running.get_or_insert_with(HashSet::new);
        if add { running.insert(account_id) } else { running.remove(&account_id) }
    };
    if !claim(true) {
        return;
    }
    let (relay, address) = (relay.clone(), address.to_string());
    tokio::spawn(async move {
        let result = async {
            let Some(account) = relay.store.run(move |s| s.account(&address)).await? else { return Ok(()) };
            run_account(&relay, account, false, &mut Report::default()).await
        }
        .await;
        if let Err(e) = result {
            tracing::error!("quota trim failed: {e}");
        }
        claim(false);
    });
}

/// Whether a mailbox this full should be trimmed now rather than at the next daily run.
pub fn over_trim_mark(relay: &Relay, used_bytes: u64) -> bool {
    let quota = relay.config.max_mailbox_size.0;
    quota > 0 && u128::from(used_bytes) * 100 > u128::from(quota) * 75
}

/// Run retention once per (UTC) day of the relay's clock, the first time shortly after start.
pub async fn daily(relay: Arc<Relay>) {
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut last_day = None;
    loop {
        let today = relay.clock.today();
        if last_day != Some(today) {
            match run(&relay, false).await {
                Ok(_) => last_day = Some(today),
                Err(e) => tracing::error!("retention run failed: {e}"),
            }
        }
        tokio::time::sleep(DAILY_CHECK).await;
    }
}
