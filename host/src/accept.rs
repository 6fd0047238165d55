//! Accepting one message, whichever way it came (submission, MX, `/mxdeliv`): its recipients
//! are checked as they come, then the policy bundle checks the message, its header edits are
//! applied, the copy for other servers is DKIM-signed, and one copy goes into the local
//! recipients' mailboxes and one into the outbound queue — in one synced write — before
//! sessions watching those mailboxes are woken. Only then may the protocol answer "accepted".

use std::borrow::Cow;
use std::sync::Arc;

use crate::check;
use crate::message::ParsedMessage;
use crate::dkim::Dkim;
use crate::message::edit::{self, Edits};
use crate::policy::{Direction, DkimResult, Envelope, MailboxUsage, Recipient, Reply, Verdict};
use crate::serve::Relay;
use crate::store::{Accepted, Outbound};

/// A message and its envelope, after the protocol collected them.
pub struct Submission {
    pub direction: Direction,
    pub mail_from: String,
    /// Recipients of this relay's domain (accounts checked at RCPT time).
    pub local: Vec<String>,
    /// Recipients elsewhere (outgoing only).
    pub remote: Vec<String>,
    pub authenticated_as: Option<String>,
    pub dkim: Vec<DkimResult>,
    pub raw: Vec<u8>,
}

/// Why a message or recipient was not accepted: the reply for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused(pub Reply);

fn reply(code: u16, enhanced: &str, text: String) -> Refused {
    Refused(Reply { code, enhanced: enhanced.into(), text })
}

/// Whether a recipient is local (`true`) or elsewhere, or why it is refused. `envelope`
/// holds the recipients accepted before this one.
pub async fn recipient(relay: &Relay, envelope: &Envelope, address: &str) -> Result<bool, Refused> {
    let local = relay.config.is_local(address);
    let usage = if local {
        let lookup = address.to_string();
        match relay.store.run(move |s| s.account(&lookup)).await {
            Ok(Some(account)) => Some(MailboxUsage { used_bytes: account.used_bytes, messages: account.messages }),
            Ok(None) => {
                return Err(reply(550, "5.1.1", format!("<{address}>: Recipient address rejected: User unknown in local recipient table")));
            }
            Err(e) => {
                tracing::error!("account lookup failed: {e}");
                return Err(reply(451, "4.3.0", "Temporary lookup failure".into()));
            }
        }
    } else if envelope.direction == Direction::Incoming {
        return Err(reply(554, "5.7.1", format!("<{address}>: Relay access denied")));
    } else {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !relay.outbound.has_room(domain, relay.config.max_queue_per_destination) {
            return Err(reply(421, "4.3.2", format!("Too much mail queued for {domain}, try again later")));
        }
        None
    };
    let recipient = Recipient { address: address.to_string(), local: usage };
    match relay.policies.rcpt_to(envelope.clone(), recipient).await {
        Verdict::Accept => Ok(local),
        Verdict::Reject(reply) | Verdict::Defer(reply) => {
            if reply.enhanced == "4.2.2" || reply.enhanced == "5.2.2" {
                relay.metrics.inc("ferrymail_quota_exceeded_total", &[]);
            }
            Err(Refused(reply))
        }
    }
}

pub async fn accept(relay: &Arc<Relay>, submission: Submission) -> Result<(), Refused> {
    let direction_label = match submission.direction {
        Direction::Outgoing => "outgoing",
        Direction::Incoming => "incoming",
    };
    if submission.raw.len() as u64 > relay.config.max_message_size.0 {
        return Err(refusal(check::message_too_large()));
    }
    // Parsing (and, below, editing and signing) a message of up to 30 MB takes a while: on
    // the blocking pool, not on the threads that serve sessions.
    let raw = submission.raw;
    let Ok(message) = relay.store.run(move |_| ParsedMessage::parse(raw)).await else {
        return Err(refusal(check::unparseable()));
    };
    let message = Arc::new(message);
    let mut rcpt_to = submission.local.clone();
    rcpt_to.extend(submission.remote.iter().cloned());
    let envelope = Envelope {
        direction: submission.direction,
        mail_from: submission.mail_from.clone(),
        rcpt_to,
        authenticated_as: submission.authenticated_as.clone(),
    };
    // For the counters only: whether the message is an OpenPGP/MIME one is the policies' call.
    let encrypted = if message.parts().first().is_some_and(|p| p.content_type == "multipart/encrypted") { "yes" } else { "no" };
    let decision = relay.policies.check_message(envelope, message.clone(), submission.dkim).await;
    if let Verdict::Reject(reply) | Verdict::Defer(reply) = &decision.verdict {
        let code = reply.code.to_string();
        let labels = [("direction", direction_label), ("encrypted", encrypted), ("code", code.as_str())];
        relay.metrics.inc("ferrymail_messages_refused_total", &labels);
        return Err(refusal(decision.verdict));
    }

    if !relay.disk.has_room(message.size()) {
        return Err(reply(452, "4.3.1", "Insufficient system storage".into()));
    }
    if !submission.remote.is_empty() {
        relay.metrics.inc("ferrymail_dkim_signed_total", &[]);
    }
    let mail_from = decision.mail_from.unwrap_or(submission.mail_from);
    let now = relay.clock.now_millis();
    let today = relay.clock.today();
    let push = crate::push::enabled(relay);
    let (local, remote) = (submission.local, submission.remote);
    let queued_recipients = remote.clone();
    let (store, signer) = (relay.store.clone(), relay.clone());
    let stored = store
        .run(move |s| {
            let dkim = (!remote.is_empty()).then_some(&signer.dkim);
            let (local_copy, outgoing_copy) = copies(message, &decision.edits, &decision.delivery_edits, !local.is_empty(), dkim);
            let local = (!local.is_empty()).then_some((Cow::Owned(local_copy), local.as_slice()));
            let outbound = (!remote.is_empty())
                .then_some(Outbound { message: Cow::Owned(outgoing_copy), mail_from: &mail_from, recipients: &remote });
            let (deliveries, queued) = s.accept(Accepted { local, outbound, now_millis: now })?;
            // In the same blocking task: the message is stored, the notifications follow it.
            let pushes = if push { crate::push::queue(s, &deliveries, &mail_from, today, now) } else { 0 };
            Ok::<_, crate::store::StoreError>((deliveries, queued, pushes))
        })
        .await;
    let (deliveries, queued, pushes) = match stored {
        Ok(stored) => stored,
        Err(e) if crate::disk::is_full(&e) => {
            relay.disk.release();
            tracing::warn!("cannot store an accepted message: the disk is full");
            return Err(reply(452, "4.3.1", "Insufficient system storage".into()));
        }
        Err(e) => {
            tracing::error!("cannot store an accepted message: {e}");
            return Err(reply(451, "4.3.0", "Temporary storage failure, please try again later".into()));
        }
    };
    for delivery in &deliveries {
        relay.notifier.notify(delivery.account_id);
        if crate::retention::over_trim_mark(relay, delivery.used_bytes) {
            crate::retention::trim_soon(relay, delivery.account_id, &delivery.address);
        }
    }
    if pushes > 0 {
        relay.push.wake();
    }
    if queued.is_some() {
        relay.outbound.count(&queued_recipients, true);
        relay.outbound.wake();
        relay.metrics.inc("ferrymail_messages_queued_total", &[]);
    }
    relay.metrics.inc("ferrymail_messages_accepted_total", &[("direction", direction_label), ("encrypted", encrypted)]);
    relay.metrics.add("ferrymail_delivered_mail_total", &[], deliveries.len() as u64);
    Ok(())
}

/// The copies for local mailboxes and for other servers (DKIM-signed), with their header
/// edits. The one for other servers is made by editing a copy in place; the local one by
/// editing the message as it came in place, taken over when no one else holds it: a 30 MB
/// message is held at most twice here, and only when it goes both ways.
fn copies(message: Arc<ParsedMessage>, edits: &Edits, delivery_edits: &Edits, local: bool, dkim: Option<&Dkim>) -> (Vec<u8>, Vec<u8>) {
    let outgoing = match dkim {
        Some(dkim) => {
            let mut copy = edit::apply(message.raw(), edits).into_owned();
            dkim.sign_in_place(&mut copy);
            copy
        }
        None => Vec::new(),
    };
    if !local {
        return (Vec::new(), outgoing);
    }
    let raw = Arc::try_unwrap(message).map_or_else(|shared| shared.raw().to_vec(), ParsedMessage::into_raw);
    (edit::apply_in_place(raw, &[edits, delivery_edits]), outgoing)
}

fn refusal(verdict: Verdict) -> Refused {
    match verdict {
        Verdict::Reject(reply) | Verdict::Defer(reply) => Refused(reply),
        // Never constructed with Accept; a generic temporary failure is the safe answer.
        Verdict::Accept => Refused(crate::policy::tempfail_reply()),
    }
}
