//! What operators ask of a relay: accounts, the outbound queue, retention, reports, status.
//! Each request is one line of words (`account show ADDR`, `queue flush`, `expire --dry-run`);
//! a running relay answers it over its control socket, and with no relay running the CLI opens
//! the data itself and answers the same way.

use std::fmt::Write;
use std::sync::Arc;

use crate::report::StorageReport;
use crate::serve::Relay;
use crate::store::StoreError;

/// Carry out one request; the answer is text for the operator, an error a reason.
pub async fn execute(relay: &Arc<Relay>, request: &str) -> Result<String, String> {
    let words: Vec<&str> = request.split_whitespace().collect();
    let failed = |e: StoreError| e.to_string();
    match words.as_slice() {
        ["account", "list"] => account_list(relay).await.map_err(failed),
        ["account", "show", address] => account_show(relay, address).await,
        ["account", "delete", address] => account_delete(relay, address).await,
        ["queue", "list"] => queue_list(relay).await.map_err(failed),
        ["queue", "flush"] => queue_flush(relay).await.map_err(failed),
        ["queue", "delete", id] => queue_delete(relay, id).await,
        ["expire"] => crate::retention::run(relay, false).await.map(|r| format!("{r}\n")).map_err(failed),
        ["expire", "--dry-run"] => {
            crate::retention::run(relay, true).await.map(|r| format!("dry run, nothing deleted\n{r}\n")).map_err(failed)
        }
        ["report"] => report(relay).await.map(|r| r.text()),
        ["report", "--prometheus"] => report(relay).await.map(|r| r.prometheus()),
        ["status"] => status(relay).await.map_err(failed),
        _ => Err(format!("unknown request {request:?}")),
    }
}

fn day(days: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

fn time(millis: u64) -> String {
    chrono::DateTime::from_timestamp_millis(millis as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| millis.to_string())
}

async fn account_list(relay: &Relay) -> Result<String, StoreError> {
    let accounts = relay.store.run(|s| s.accounts()).await?;
    let mut out = format!("{:<40} {:>10} {:>10} {:>12} {:>8}\n", "ADDRESS", "CREATED", "LAST LOGIN", "BYTES", "MESSAGES");
    for a in &accounts {
        let _ = writeln!(out, "{:<40} {:>10} {:>10} {:>12} {:>8}", a.address, day(a.created_day), day(a.last_login_day), a.used_bytes, a.messages);
    }
    let _ = writeln!(out, "{} accounts", accounts.len());
    Ok(out)
}

async fn account_show(relay: &Relay, address: &str) -> Result<String, String> {
    let (owned, today) = (address.to_string(), relay.clock.today());
    let found = relay
        .store
        .run(move |s| -> Result<_, StoreError> {
            let Some(account) = s.account(&owned)? else { return Ok(None) };
            let mailboxes: Vec<(String, usize)> = s
                .mailboxes(account.id)?
                .into_iter()
                .map(|m| Ok((m.name.clone(), s.messages(account.id, m.id)?.len())))
                .collect::<Result<_, StoreError>>()?;
            let tokens = crate::push::tokens(s, account.id, today)?.len();
            Ok(Some((account, mailboxes, tokens)))
        })
        .await
        .map_err(|e| e.to_string())?;
    let Some((account, mailboxes, tokens)) = found else { return Err(format!("no account {address}")) };
    let quota = relay.config.max_mailbox_size.0;
    let mut out = String::new();
    let _ = writeln!(out, "address: {}", account.address);
    let _ = writeln!(out, "created: {}", day(account.created_day));
    let _ = writeln!(out, "last login: {} (kept by day only)", day(account.last_login_day));
    let percent = if quota > 0 { account.used_bytes as f64 * 100.0 / quota as f64 } else { 0.0 };
    let _ = writeln!(out, "stored: {} bytes in {} messages ({percent:.1} % of {quota})", account.used_bytes, account.messages);
    for (name, count) in mailboxes {
        let _ = writeln!(out, "  {name}: {count} messages");
    }
    let _ = writeln!(out, "push device tokens: {tokens}");
    Ok(out)
}

async fn account_delete(relay: &Relay, address: &str) -> Result<String, String> {
    let owned = address.to_string();
    let account = relay.store.run(move |s| s.account(&owned)).await.map_err(|e| e.to_string())?;
    let Some(account) = account else { return Err(format!("no account {address}")) };
    let owned = address.to_string();
    relay.store.run(move |s| s.delete_account(&owned)).await.map_err(|e| e.to_string())?;
    relay.notifier.notify(account.id);
    tracing::info!("an account was deleted by the operator");
    Ok(format!("deleted {} with {} messages\n", account.address, account.messages))
}

async fn queue_list(relay: &Relay) -> Result<String, StoreError> {
    let queue = relay.store.run(|s| s.queue()).await?;
    let mut out = String::new();
    for entry in &queue {
        let from = if entry.mail_from.is_empty() { "<>" } else { &entry.mail_from };
        let _ = writeln!(
            out,
            "{}  queued {}  attempts {}  next {}\n  from {from}\n  to {}",
            entry.id,
            time(entry.created * 1000),
            entry.attempts,
            time(entry.due_millis),
            entry.recipients.join(", ")
        );
        if let Some(error) = &entry.last_error {
            let _ = writeln!(out, "  last error: {error}");
        }
    }
    let _ = writeln!(out, "{} messages queued", queue.len());
    Ok(out)
}

/// Make every queued message due now.
async fn queue_flush(relay: &Relay) -> Result<String, StoreError> {
    let now = relay.clock.now_millis();
    let mut flushed = 0;
    for entry in relay.store.run(|s| s.queue()).await? {
        if entry.due_millis <= now || !relay.outbound.claim(entry.id) {
            continue;
        }
        // Claimed, no delivery can move it now; but one may have moved it since the list was read.
        let (id, due) = (entry.id, crate::store::QueueEntry { due_millis: now, ..entry.clone() });
        let result = relay.store.run(move |s| s.change_if_queued(&entry, Some(&due))).await;
        relay.outbound.release(id);
        flushed += usize::from(result?);
    }
    relay.outbound.wake();
    Ok(format!("{flushed} messages due now\n"))
}

async fn queue_delete(relay: &Relay, id: &str) -> Result<String, String> {
    let id: u64 = id.parse().map_err(|_| format!("`{id}` is not a queue id (see `queue list`)"))?;
    if !relay.outbound.claim(id) {
        return Err(format!("message {id} is being delivered right now; try again in a moment"));
    }
    let result = relay
        .store
        .run(move |s| -> Result<_, StoreError> {
            let Some(entry) = s.queue()?.into_iter().find(|e| e.id == id) else { return Ok(None) };
            Ok(s.change_if_queued(&entry, None)?.then_some(entry))
        })
        .await;
    relay.outbound.release(id);
    let Some(entry) = result.map_err(|e| e.to_string())? else { return Err(format!("no queued message {id}")) };
    relay.outbound.count(&entry.recipients, false);
    Ok(format!("deleted queued message {id} ({} recipients, no bounce sent)\n", entry.recipients.len()))
}

async fn report(relay: &Relay) -> Result<StorageReport, String> {
    let today = relay.clock.today();
    relay.store.run(move |s| StorageReport::collect(s, today)).await.map_err(|e| e.to_string())
}

async fn status(relay: &Relay) -> Result<String, StoreError> {
    let (accounts, queue, push) = relay.store.run(|s| Ok::<_, StoreError>((s.accounts()?.len(), s.queue()?, s.push_queue()?.len()))).await?;
    let mut out = String::new();
    let _ = writeln!(out, "domain: {}", relay.config.mail_domain);
    let _ = writeln!(out, "version: {}", env!("CARGO_PKG_VERSION"));
    let policies: Vec<String> = relay.policies.summary().iter().map(|p| p.name.clone()).collect();
    let _ = writeln!(out, "policies: {} (generation {})", policies.join(", "), relay.policies.generation());
    let _ = writeln!(out, "accounts: {accounts}");
    let oldest = queue.iter().map(|e| e.created).min();
    let age = oldest.map(|t| format!(", oldest queued {}", time(t * 1000))).unwrap_or_default();
    let _ = writeln!(out, "outbound queue: {} messages{age}", queue.len());
    let _ = writeln!(out, "push queue: {push} notifications");
    let validity = relay.tls.validity();
    let temporary = if validity.temporary { " (temporary, waiting for ACME)" } else { "" };
    let _ = writeln!(
        out,
        "certificate: {}{temporary}, expires {}, names {}",
        relay.tls.source().name(),
        time(validity.not_after.max(0) as u64 * 1000),
        validity.names.join(" ")
    );
    if let Some(acme) = &relay.acme {
        out += &acme.describe();
    }
    Ok(out)
}
