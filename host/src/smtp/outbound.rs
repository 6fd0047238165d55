//! The outbound queue's worker: takes due entries from the store, delivers them to the mail
//! hosts of each recipient domain (first over HTTPS `/mxdeliv`, then SMTP), and records what
//! happened per recipient. Temporary failures are retried with growing pauses; after two days,
//! or on a permanent failure, the sender gets a bounce.
//!
//! Per destination domain at most `max_outbound_per_destination` deliveries run at once and
//! at most `max_queue_per_destination` recipients wait (more are refused at RCPT with 421).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::bounce::{self, Failed};
use super::client::{self, Destination, Outcome};
use super::mxdeliv;
use crate::dns::{LookupError, accepts_invalid_certificates};
use crate::serve::Relay;
use crate::store::QueueEntry;

/// Undeliverable mail goes back to its sender after this long.
pub const GIVE_UP_AFTER_SECS: u64 = 2 * 86_400;
/// After a failed /mxdeliv, a host is sent SMTP only for this long.
const SMTP_ONLY_FOR_MILLIS: u64 = 30 * 60 * 1000;
/// Pauses between attempts; the last one repeats.
const BACKOFF_SECS: [u64; 7] = [60, 120, 300, 600, 1200, 2400, 3600];
/// Entries delivered at once, all destinations together.
const CONCURRENT_ENTRIES: usize = 64;

/// The queue worker's shared state.
#[derive(Default)]
pub struct Outbound {
    wake: Notify,
    in_flight: Mutex<HashSet<u64>>,
    /// Hosts whose /mxdeliv failed, until when (Unix milliseconds).
    smtp_only: Mutex<HashMap<String, u64>>,
    /// Concurrency per destination domain.
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Recipients waiting per destination domain.
    waiting: Mutex<HashMap<String, usize>>,
    /// Taken while a message is read and waits for room in the budget for messages in memory
    /// (inflight.rs): its size is known only once it is read, so one at a time.
    reading: tokio::sync::Mutex<()>,
}

fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

impl Outbound {
    /// Look at the queue now (a message was queued, or a test moved the clock).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Keep deliveries off a queue entry while the operator changes it: false when one is
    /// delivering it right now. [`Outbound::release`] gives it back.
    pub fn claim(&self, id: u64) -> bool {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
    }

    pub fn release(&self, id: u64) {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Whether another recipient at `domain` may be queued.
    pub fn has_room(&self, domain: &str, limit: u64) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        (waiting.get(&domain.to_ascii_lowercase()).copied().unwrap_or(0) as u64) < limit
    }

    /// Count recipients entering (+) or leaving (-) the queue.
    pub fn count(&self, recipients: &[String], entering: bool) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for recipient in recipients {
            let n = waiting.entry(domain_of(recipient)).or_default();
            *n = if entering { *n + 1 } else { n.saturating_sub(1) };
        }
        waiting.retain(|_, n| *n > 0);
    }

    fn destination(&self, domain: &str, workers: usize) -> Arc<Semaphore> {
        let mut destinations = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        destinations.entry(domain.to_string()).or_insert_with(|| Arc::new(Semaphore::new(workers.max(1)))).clone()
    }

    fn smtp_only(&self, host: &str, now: u64) -> bool {
        self.smtp_only.lock().unwrap_or_else(|e| e.into_inner()).get(host).is_some_and(|until| *until > now)
    }

    fn prefer_smtp(&self, host: &str, now: u64) {
        self.smtp_only.lock().unwrap_or_else(|e| e.into_inner()).insert(host.to_string(), now + SMTP_ONLY_FOR_MILLIS);
    }
}

/// Deliver queued mail for as long as the relay runs.
pub async fn run(relay: Arc<Relay>) {
    if let Ok(queue) = relay.store.run(|s| s.queue()).await {
        for entry in &queue {
            relay.outbound.count(&entry.recipients, true);
        }
    }
    let slots = Arc::new(Semaphore::new(CONCURRENT_ENTRIES));
    loop {
        let now = relay.clock.now_millis();
        let due = relay.store.run(move |s| s.queue_due(now, CONCURRENT_ENTRIES * 4)).await.unwrap_or_default();
        for entry in due {
            if !relay.outbound.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(entry.id) {
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let relay = relay.clone();
            tokio::spawn(async move {
                let id = entry.id;
                let current = entry.clone();
                // Read before an earlier delivery of this entry finished: then it is gone or moved.
                if relay.store.run(move |s| s.is_queued(&current)).await.unwrap_or(false) {
                    deliver(&relay, entry).await;
                }
                relay.outbound.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                drop(slot);
                relay.outbound.wake();
            });
        }
        // Look again every second (the clock may be moved) or when woken.
        tokio::select! {
            () = relay.outbound.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One attempt at every recipient of an entry, then the queue updated.
async fn deliver(relay: &Relay, entry: QueueEntry) {
    let blob_id = entry.blob_id;
    // Sixty-four deliveries of 30 MB each would hold 2 GB: a message read is held from the
    // budget for messages in memory, and beyond it only the one waiting for room.
    let reading = relay.outbound.reading.lock().await;
    let read = relay.store.run(move |s| s.blob(blob_id)).await;
    let _held = match &read {
        Ok(Some(message)) => Some(relay.in_flight.hold_for_delivery(message.len() as u64).await),
        _ => None,
    };
    drop(reading);
    let message = match read {
        Ok(Some(message)) => message,
        Ok(None) => {
            tracing::error!(queue_id = entry.id, "queued message is missing; dropping the entry");
            finish(relay, &entry, &entry.recipients).await;
            return;
        }
        Err(e) => {
            tracing::error!("cannot read the queue: {e}");
            return;
        }
    };
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for recipient in &entry.recipients {
        by_domain.entry(domain_of(recipient)).or_default().push(recipient.clone());
    }
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for (domain, recipients) in by_domain {
        let workers = relay.config.max_outbound_per_destination as usize;
        let gate = relay.outbound.destination(&domain, workers);
        let _turn = gate.acquire().await;
        let results = deliver_to_domain(relay, &domain, &entry.mail_from, &recipients, &message).await;
        outcomes.extend(recipients.into_iter().zip(results));
    }

    let now = relay.clock.now_millis();
    let expired = now / 1000 >= entry.created + GIVE_UP_AFTER_SECS;
    let mut retry = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut done = Vec::new();
    for (recipient, outcome) in outcomes {
        match outcome {
            Outcome::Delivered => done.push(recipient),
            Outcome::Permanent(reason) => failed.push((recipient, reason)),
            Outcome::Temporary(reason) if expired => failed.push((recipient, format!("{reason} (gave up after 2 days)"))),
            Outcome::Temporary(reason) => retry.push((recipient, reason)),
        }
    }
    if !failed.is_empty() {
        relay.metrics.add("ferrymail_outbound_bounced_total", &[], failed.len() as u64);
        bounce_to_sender(relay, &entry, &message, &failed).await;
    }
    let finished: Vec<String> = done.into_iter().chain(failed.into_iter().map(|(r, _)| r)).collect();
    if retry.is_empty() {
        finish(relay, &entry, &finished).await;
        return;
    }
    let pause = BACKOFF_SECS[(entry.attempts as usize).min(BACKOFF_SECS.len() - 1)];
    let next = QueueEntry {
        recipients: retry.iter().map(|(r, _)| r.clone()).collect(),
        attempts: entry.attempts + 1,
        due_millis: now + pause * 1000,
        last_error: retry.first().map(|(_, reason)| reason.clone()),
        ..entry.clone()
    };
    // Only the reply's code: its text may quote an address.
    let code = next.last_error.as_deref().and_then(|e| e.split(' ').next()).unwrap_or("");
    tracing::info!(queue_id = entry.id, attempts = next.attempts, retry_in_secs = pause, code, "delivery deferred");
    let old = entry.clone();
    if let Err(e) = relay.store.run(move |s| s.requeue(&old, &next)).await {
        tracing::error!("cannot update the queue: {e}");
    }
    relay.outbound.count(&finished, false);
}

/// The entry is done: remove it (and its message).
async fn finish(relay: &Relay, entry: &QueueEntry, recipients: &[String]) {
    let old = entry.clone();
    if let Err(e) = relay.store.run(move |s| s.dequeue(&old)).await {
        tracing::error!("cannot update the queue: {e}");
    }
    relay.outbound.count(recipients, false);
}

/// One outcome per recipient of `domain`.
async fn deliver_to_domain(relay: &Relay, domain: &str, mail_from: &str, recipients: &[String], message: &[u8]) -> Vec<Outcome> {
    let all = |outcome: Outcome| vec![outcome; recipients.len()];
    let hosts = match relay.dns.mail_hosts(domain).await {
        Ok(hosts) => hosts,
        Err(LookupError::NullMx) => return all(Outcome::Permanent(format!("556 5.1.10 {domain} accepts no mail (null MX)"))),
        Err(LookupError::NoSuchDomain) => return all(Outcome::Permanent(format!("550 5.1.2 {domain}: domain does not exist"))),
        Err(LookupError::Temporary(e)) => return all(Outcome::Temporary(format!("451 4.4.3 {domain}: {e}"))),
    };
    let verify = !accepts_invalid_certificates(domain);
    let mut last_error = format!("451 4.4.1 no mail host of {domain} could be reached");
    let (mut tried, mut refused) = (false, false);
    for host in &hosts {
        let ips = match relay.dns.addresses(host).await {
            Ok(ips) => ips,
            Err(e) => {
                tried = true;
                last_error = format!("451 4.4.3 {host}: {e}");
                continue;
            }
        };
        for ip in ips {
            // DNS is the sender's to choose: it must not aim the relay at its own network.
            if crate::net::is_private(ip.to_canonical()) && !relay.config.allow_private_destinations {
                refused = true;
                continue;
            }
            tried = true;
            let now = relay.clock.now_millis();
            if relay.config.try_mxdeliv && !relay.outbound.smtp_only(host, now) {
                let port = relay.config.outbound_https_port;
                match mxdeliv::post(host, ip, port, relay.config.ip_literal(), verify, mail_from, recipients, message).await {
                    Ok(()) => {
                        delivered(relay, "mxdeliv", recipients.len());
                        return all(Outcome::Delivered);
                    }
                    Err(mxdeliv::Failure::Refused(text)) if recipients.len() == 1 => {
                        return all(Outcome::Permanent(format!("554 5.0.0 {host} refused: {text}")));
                    }
                    // One refused recipient refuses the whole request: SMTP tells which.
                    Err(mxdeliv::Failure::Refused(text)) => tracing::debug!(host, "/mxdeliv refused ({text}); using SMTP"),
                    Err(failure) => {
                        tracing::debug!(host, "no /mxdeliv ({failure}); using SMTP");
                        relay.outbound.prefer_smtp(host, now);
                    }
                }
            }
            let destination = Destination {
                host,
                ip,
                port: relay.config.outbound_smtp_port,
                verify_certificate: verify,
                helo: &relay.config.mail_domain,
                source: relay.config.ip_literal(),
            };
            match client::send(&destination, mail_from, recipients, message).await {
                Ok(outcomes) => {
                    delivered(relay, "smtp", outcomes.iter().filter(|o| matches!(o, Outcome::Delivered)).count());
                    return outcomes;
                }
                Err(unreachable) => last_error = format!("451 4.4.1 {}", unreachable.0),
            }
        }
    }
    if refused && !tried {
        let reason = format!("554 5.4.4 the mail hosts of {domain} are at loopback, private or reserved addresses: not delivered there");
        return all(Outcome::Permanent(reason));
    }
    all(Outcome::Temporary(last_error))
}

/// Count (and log, without addresses) recipients handed to another server.
fn delivered(relay: &Relay, via: &'static str, recipients: usize) {
    if recipients > 0 {
        relay.metrics.add("ferrymail_outbound_delivered_total", &[("via", via)], recipients as u64);
        tracing::info!(via, recipients, "delivered to another server");
    }
}

/// Tell the sender which recipients will never get the message. Local senders get the
/// report in their INBOX; a remote sender (only possible for forwarded mail) gets it queued,
/// DKIM-signed, from the null sender.
async fn bounce_to_sender(relay: &Relay, entry: &QueueEntry, message: &[u8], failed: &[(String, String)]) {
    let sender = entry.mail_from.to_ascii_lowercase();
    if sender.is_empty() {
        // Never bounce a bounce.
        return;
    }
    let failed: Vec<Failed<'_>> = failed.iter().map(|(r, reason)| Failed { recipient: r, reason }).collect();
    let now = relay.clock.now_millis();
    let report = bounce::report(&relay.config.mail_domain, &sender, message, &failed, now / 1000, entry.id);
    let store = relay.store.clone();
    let stored = if relay.config.is_local(&sender) {
        let (today, push) = (relay.clock.today(), crate::push::enabled(relay));
        store
            .run(move |s| {
                let deliveries = s.deliver(&report, &[sender], now / 1000)?;
                // The bounce comes from the mailer daemon, not the sender: their devices hear of it.
                let pushes = if push { crate::push::queue(s, &deliveries, "", today, now) } else { 0 };
                Ok((deliveries.first().map(|d| d.account_id), pushes))
            })
            .await
    } else {
        let signed = relay.dkim.sign(&report);
        relay.outbound.count(std::slice::from_ref(&sender), true);
        store.run(move |s| s.enqueue(&signed, "", &[sender], now).map(|_| (None, 0))).await
    };
    match stored {
        Ok((account_id, pushes)) => {
            if let Some(account_id) = account_id {
                relay.notifier.notify(account_id);
            }
            if pushes > 0 {
                relay.push.wake();
            }
        }
        Err(e) => tracing::error!("cannot store a bounce: {e}"),
    }
}
