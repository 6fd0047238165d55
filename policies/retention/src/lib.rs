//! Retention and quota, chatmail's rules (SPEC §7).
//!
//! - messages older than `delete_mails_after` (20) days go;
//! - messages over 200 000 bytes already seen go after `delete_large_after` (7) days;
//! - accounts without login for `delete_inactive_users_after` (90) days go with their data;
//! - a mailbox over 75 % of `max_mailbox_size` (500M) loses its oldest messages down to 70 %,
//!   never one younger than 24 hours;
//! - a full mailbox (100 %) defers new mail with "Quota exceeded".

use ferrymail_policy::*;
use serde::Deserialize;

pub struct Retention;

const DAY: u64 = 86_400;
const LARGE_MESSAGE: u64 = 200_000;

#[derive(Deserialize)]
#[serde(default)]
struct Config {
    delete_mails_after: u64,
    delete_large_after: u64,
    delete_inactive_users_after: u64,
    max_mailbox_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            delete_mails_after: 20,
            delete_large_after: 7,
            delete_inactive_users_after: 90,
            max_mailbox_size: 500 * 1024 * 1024,
        }
    }
}

impl Policy for Retention {
    const NAME: &'static str = "retention";

    fn rcpt_to(_envelope: Envelope, recipient: Recipient) -> Verdict {
        let config: Config = config().unwrap_or_default();
        match recipient.local {
            Some(usage) if config.max_mailbox_size > 0 && usage.used_bytes >= config.max_mailbox_size => {
                Verdict::defer(452, "4.2.2", "Quota exceeded (mailbox for user is full)")
            }
            _ => Verdict::Accept,
        }
    }

    fn retention(now: u64, account: AccountState, batch: Vec<StoredMessage>) -> RetentionDecision {
        decide(&config().unwrap_or_default(), now, &account, &batch)
    }
}

export_policy!(Retention, hooks: [rcpt_to, retention]);

fn decide(config: &Config, now: u64, account: &AccountState, batch: &[StoredMessage]) -> RetentionDecision {
    let today = now / DAY;
    if config.delete_inactive_users_after > 0
        && u64::from(account.last_login_day) + config.delete_inactive_users_after < today
    {
        return RetentionDecision { delete_account: true, delete: Vec::new() };
    }
    let age = |m: &StoredMessage| now.saturating_sub(m.received);
    let expired = |m: &StoredMessage| {
        (config.delete_mails_after > 0 && age(m) > config.delete_mails_after * DAY)
            || (m.size > LARGE_MESSAGE && m.seen && age(m) > config.delete_large_after * DAY)
    };

    let mut delete = Vec::new();
    let mut used = account.used_bytes;
    for message in batch.iter().filter(|m| expired(m)) {
        delete.push(message.id);
        used = used.saturating_sub(message.size);
    }

    // Quota trim: started above 75 % (at the start of the run), continued down to 70 %.
    let quota = config.max_mailbox_size;
    if quota > 0 && account.used_bytes_at_start * 100 > quota * 75 {
        for message in batch.iter().filter(|m| !expired(m) && age(m) >= DAY) {
            if used * 100 <= quota * 70 {
                break;
            }
            delete.push(message.id);
            used = used.saturating_sub(message.size);
        }
    }
    RetentionDecision { delete_account: false, delete }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, size: u64, age_days: f64, seen: bool, now: u64) -> StoredMessage {
        StoredMessage {
            id,
            mailbox: "INBOX".into(),
            size,
            received: now - (age_days * DAY as f64) as u64,
            seen,
        }
    }

    fn account(used: u64, last_login_day: u32) -> AccountState {
        AccountState { address: "a@x.org".into(), last_login_day, used_bytes: used, used_bytes_at_start: used }
    }

    #[test]
    fn expiry_by_age_and_large_seen() {
        let now = 100 * DAY;
        let config = Config::default();
        let batch = [
            message(1, 1_000, 21.0, false, now),
            message(2, 1_000, 19.0, false, now),
            message(3, 300_000, 8.0, true, now),
            message(4, 300_000, 8.0, false, now),
            message(5, 300_000, 6.0, true, now),
        ];
        let decision = decide(&config, now, &account(10_000, 100), &batch);
        assert_eq!(decision.delete, vec![1, 3]);
        assert!(!decision.delete_account);
    }

    #[test]
    fn inactive_account() {
        let now = 200 * DAY;
        assert!(decide(&Config::default(), now, &account(0, 109), &[]).delete_account);
        assert!(!decide(&Config::default(), now, &account(0, 110), &[]).delete_account);
    }

    #[test]
    fn quota_trim_oldest_to_70_percent_sparing_the_last_day() {
        let now = 100 * DAY;
        let config = Config { max_mailbox_size: 1_000, ..Config::default() };
        let batch: Vec<_> = (0..10).map(|i| message(i, 100, 10.0 - i as f64 * 1.05, false, now)).collect();
        // 800 of 1000 used is over 75 %: the oldest goes, which reaches 70 %.
        let decision = decide(&config, now, &account(800, 100), &batch);
        assert_eq!(decision.delete, vec![0]);
        // 740 is under 75 %: nothing.
        assert!(decide(&config, now, &account(740, 100), &batch).delete.is_empty());
        // Everything younger than a day is spared even when still over.
        let young: Vec<_> = (0..10).map(|i| message(i, 100, 0.5, false, now)).collect();
        assert!(decide(&config, now, &account(1_000, 100), &young).delete.is_empty());
    }
}
