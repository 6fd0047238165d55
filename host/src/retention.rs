//! The retention run: every account's messages, oldest first and in batches, go to the
//! bundle's `retention` hook, which names what to delete (old messages, large seen ones, the
//! oldest above the quota mark) or deletes the whole account (inactive). The host only carries
//! it out. It runs once a day, for one account when a delivery takes it over 75 % of its
//! quota, and on `ferrymail expire`.
//!
//! A failing policy decides nothing, so nothing is deleted.

use std::collections::{HashMap, HashSet};
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
/// A mailbox whose quota trim found nothing to delete is not trimmed again for this long.
const TRIM_COOLDOWN_MILLIS: u64 = 10 * 60 * 1000;

/// The relay's retention state: one run at a time, and the quota trims.
#[derive(Default)]
pub struct Retention {
    running: tokio::sync::Mutex<()>,
    trims: Mutex<Trims>,
}

#[derive(Default)]
struct Trims {
    /// Accounts being trimmed now.
    running: HashSet<u64>,
    /// Accounts not to trim before this time (relay clock, milliseconds).
    idle_until: HashMap<u64, u64>,
}

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

/// Run retention over every account. With `dry_run` nothing is deleted; the report says what
/// would be. One run at a time: a second waits for the first.
pub async fn run(relay: &Relay, dry_run: bool) -> Result<Report, StoreError> {
    let _one_at_a_time = relay.retention.running.lock().await;
    let accounts = relay.store.run(|s| s.accounts()).await?;
    let mut report = Report::default();
    for account in accounts {
        // One account's trouble must not keep the others' mail beyond its time.
        match run_account(relay, account, dry_run, &mut report).await {
            Ok(()) | Err(StoreError::NoAccount) => {}
            Err(e) => tracing::error!("retention of an account failed: {e}"),
        }
    }
    if !dry_run {
        let now = relay.clock.now_millis();
        let purged = relay.store.run(move |s| s.kv_purge_expired(now)).await?;
        tracing::debug!(purged, "expired policy state removed");
        crate::push::forget_expired_tokens(relay).await?;
        // What was deleted becomes free disk space.
        if report.messages_deleted > 0 {
            relay.store.run(|s| s.reclaim()).await?;
        }
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
            let seen_login = account.last_login_day;
            let deleted = dry_run || {
                // Unless its owner logged in since the account was read.
                let address = account.address.clone();
                relay.store.run(move |s| s.delete_account_if(&address, |a| a.last_login_day == seen_login)).await?
            };
            if deleted {
                report.accounts_deleted += 1;
                report.messages_deleted += messages.len() as u64;
                report.bytes_freed += start;
                relay.notifier.notify(id);
            }
            return Ok(());
        }
        let chosen: HashSet<u64> = decision.delete.into_iter().collect();
        for message in batch.iter().filter(|m| chosen.contains(&m.handle())) {
            used = used.saturating_sub(message.entry.size);
            doomed.push((message.mailbox_id, message.uid, message.entry.size));
        }
    }
    report.messages_deleted += doomed.len() as u64;
    report.bytes_freed += doomed.iter().map(|(_, _, size)| size).sum::<u64>();
    if !dry_run && !doomed.is_empty() {
        let address = account.address.clone();
        let doomed: Vec<(u32, u32)> = doomed.into_iter().map(|(mailbox, uid, _)| (mailbox, uid)).collect();
        relay.store.run(move |s| s.delete_messages(&address, &doomed)).await?;
        relay.notifier.notify(id);
    }
    Ok(())
}

/// Run retention for one account now, in the background: a delivery took it over the mark
/// where the quota trim starts. At most one such run per account at a time; after a run that
/// found nothing to delete (everything is younger than a day), none for `TRIM_COOLDOWN_MILLIS`.
pub fn trim_soon(relay: &Arc<Relay>, account_id: u64, address: &str) {
    let now = relay.clock.now_millis();
    {
        let mut trims = relay.retention.trims.lock().unwrap_or_else(|e| e.into_inner());
        if trims.idle_until.get(&account_id).is_some_and(|until| now < *until) || !trims.running.insert(account_id) {
            return;
        }
        if trims.idle_until.len() > 10_000 {
            trims.idle_until.retain(|_, until| now < *until);
        }
    }
    let guard = TrimRunning { relay: relay.clone(), account_id };
    let address = address.to_string();
    tokio::spawn(async move {
        let relay = &guard.relay;
        let mut report = Report::default();
        let result = async {
            let Some(account) = relay.store.run(move |s| s.account(&address)).await? else { return Ok(()) };
            run_account(relay, account, false, &mut report).await
        }
        .await;
        match result {
            Ok(()) | Err(StoreError::NoAccount) => {}
            Err(e) => tracing::error!("quota trim failed: {e}"),
        }
        if report.messages_deleted == 0 {
            let until = relay.clock.now_millis() + TRIM_COOLDOWN_MILLIS;
            relay.retention.trims.lock().unwrap_or_else(|e| e.into_inner()).idle_until.insert(account_id, until);
        }
    });
}

/// Marks an account's quota trim as running; the mark goes with it, whatever happens.
struct TrimRunning {
    relay: Arc<Relay>,
    account_id: u64,
}

impl Drop for TrimRunning {
    fn drop(&mut self) {
        self.relay.retention.trims.lock().unwrap_or_else(|e| e.into_inner()).running.remove(&self.account_id);
    }
}

/// Whether a mailbox this full should be trimmed now rather than at the next daily run.
pub fn over_trim_mark(relay: &Relay, used_bytes: u64) -> bool {
    let quota = relay.config.max_mailbox_size.0;
    quota > 0 && u128::from(used_bytes) * 100 > u128::from(quota) * 75
}

/// Run retention once per (UTC) day of the relay's clock, the first time shortly after start
/// (unless `daily_expire` is off: then cron runs `ferrymail expire`).
pub async fn daily(relay: Arc<Relay>) {
    if !relay.config.daily_expire {
        return;
    }
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
