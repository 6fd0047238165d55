//! The storage report (`ferrymail report`, and gauges on `/metrics`): how much is stored, how
//! message sizes spread, how many accounts were active lately. Counts only: no address.

use std::fmt::Write;

use crate::store::{Store, StoreError};

/// Upper bounds of the message size buckets, in bytes.
const SIZE_BOUNDS: [u64; 4] = [10 << 10, 100 << 10, 1 << 20, 10 << 20];
/// "Active within N days" windows.
const ACTIVE_WITHIN: [u32; 5] = [1, 10, 30, 60, 90];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageReport {
    pub accounts: u64,
    pub bytes: u64,
    pub messages: u64,
    /// Messages per size bucket: `SIZE_BOUNDS`, then the rest.
    pub by_size: [u64; SIZE_BOUNDS.len() + 1],
    /// Accounts that logged in within each of `ACTIVE_WITHIN` days.
    pub active: [u64; ACTIVE_WITHIN.len()],
    pub outbound_queue: u64,
    pub push_queue: u64,
}

impl StorageReport {
    /// Walk the database once. Blocking, and proportional to the number of messages.
    pub fn collect(store: &Store, today: u32) -> Result<StorageReport, StoreError> {
        let mut report = StorageReport::default();
        for account in store.accounts()? {
            report.accounts += 1;
            report.bytes += account.used_bytes;
            for (i, days) in ACTIVE_WITHIN.iter().enumerate() {
                if today.saturating_sub(account.last_login_day) < *days {
                    report.active[i] += 1;
                }
            }
        }
        store.for_each_message_size(|size| {
            report.messages += 1;
            let bucket = SIZE_BOUNDS.iter().position(|bound| size <= *bound).unwrap_or(SIZE_BOUNDS.len());
            report.by_size[bucket] += 1;
        })?;
        report.outbound_queue = store.queue()?.len() as u64;
        report.push_queue = store.push_queue()?.len() as u64;
        Ok(report)
    }

    /// For people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "accounts: {}", self.accounts);
        let _ = writeln!(out, "stored: {} bytes in {} messages", self.bytes, self.messages);
        let mut lower = "0".to_string();
        for (i, count) in self.by_size.iter().enumerate() {
            let label = match SIZE_BOUNDS.get(i) {
                Some(bound) => format!("{lower}..{}", kib(*bound)),
                None => format!("over {lower}"),
            };
            let _ = writeln!(out, "  messages {label}: {count}");
            lower = SIZE_BOUNDS.get(i).map(|b| kib(*b)).unwrap_or_default();
        }
        for (days, count) in ACTIVE_WITHIN.iter().zip(self.active) {
            let _ = writeln!(out, "accounts active within {days} day{}: {count}", if *days == 1 { "" } else { "s" });
        }
        let _ = writeln!(out, "outbound queue: {} messages", self.outbound_queue);
        let _ = writeln!(out, "push queue: {} notifications", self.push_queue);
        out
    }

    /// Prometheus text: gauges, the sizes as a histogram-style cumulative count.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        };
        gauge(&mut out, "ferrymail_storage_accounts", "Accounts on this relay.");
        let _ = writeln!(out, "ferrymail_storage_accounts {}", self.accounts);
        gauge(&mut out, "ferrymail_storage_bytes", "Bytes stored in mailboxes.");
        let _ = writeln!(out, "ferrymail_storage_bytes {}", self.bytes);
        gauge(&mut out, "ferrymail_storage_messages", "Messages stored, by size (cumulative, le = at most this many bytes).");
        let mut cumulative = 0;
        for (i, count) in self.by_size.iter().enumerate() {
            cumulative += count;
            let le = SIZE_BOUNDS.get(i).map(|b| b.to_string()).unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(out, "ferrymail_storage_messages{{le=\"{le}\"}} {cumulative}");
        }
        gauge(&mut out, "ferrymail_accounts_active", "Accounts that logged in within this many days.");
        for (days, count) in ACTIVE_WITHIN.iter().zip(self.active) {
            let _ = writeln!(out, "ferrymail_accounts_active{{days=\"{days}\"}} {count}");
        }
        gauge(&mut out, "ferrymail_outbound_queue_messages", "Messages waiting for delivery to other servers.");
        let _ = writeln!(out, "ferrymail_outbound_queue_messages {}", self.outbound_queue);
        gauge(&mut out, "ferrymail_push_queue_notifications", "Push notifications waiting to be posted.");
        let _ = writeln!(out, "ferrymail_push_queue_notifications {}", self.push_queue);
        out
    }
}

fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 { format!("{} MiB", bytes >> 20) } else { format!("{} KiB", bytes >> 10) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_size_and_activity() {
        let store = Store::open_in_memory().unwrap();
        store.create_account("a@x.org", "h", 100).unwrap();
        store.create_account("b@x.org", "h", 70).unwrap();
        store.deliver(&vec![b'x'; 500], &["a@x.org".into(), "b@x.org".into()], 1).unwrap();
        store.deliver(&vec![b'x'; 200 << 10], &["a@x.org".into()], 1).unwrap();
        let report = StorageReport::collect(&store, 100).unwrap();
        assert_eq!((report.accounts, report.messages, report.bytes), (2, 3, 1000 + (200 << 10)));
        assert_eq!(report.by_size, [2, 0, 1, 0, 0]);
        assert_eq!(report.active, [1, 1, 1, 2, 2], "30 days ago is not within 30 days");
        assert!(report.prometheus().contains("ferrymail_storage_messages{le=\"+Inf\"} 3\n"));
        assert!(report.text().contains("accounts active within 1 day: 1"));
    }
}
