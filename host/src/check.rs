//! `ferrymail policy check`: run a bundle against one message as the server would, without
//! a server. For policy authors' tests and for operators asking "why was this refused?".

use std::sync::Arc;

use crate::config::Config;
use crate::message::ParsedMessage;
use crate::policy::{Direction, DkimResult, Envelope, MailboxUsage, MessageDecision, Policies, Recipient, Reply, Verdict};

/// One message and its envelope.
pub struct CheckRequest {
    pub direction: Direction,
    /// The envelope sender ("" = null sender). Outgoing, it is also the authenticated user.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Domains whose DKIM signature counts as verified (incoming).
    pub dkim_pass: Vec<String>,
    pub message: Vec<u8>,
}

/// Size limit and parse failure are the host's; everything else comes from the policies.
pub async fn check(policies: &Policies, config: &Config, request: CheckRequest) -> MessageDecision {
    let refuse = |verdict| MessageDecision { verdict, ..MessageDecision::default() };
    if request.message.len() as u64 > config.max_message_size.0 {
        return refuse(message_too_large());
    }
    let authenticated_as = match request.direction {
        Direction::Outgoing => Some(request.mail_from.clone()),
        Direction::Incoming => None,
    };
    let mut envelope = Envelope {
        direction: request.direction,
        mail_from: request.mail_from.clone(),
        rcpt_to: Vec::new(),
        authenticated_as,
    };
    let verdict = policies.mail_from(envelope.clone()).await;
    if !matches!(verdict, Verdict::Accept) {
        return refuse(verdict);
    }
    for rcpt in &request.rcpt_to {
        let local = config.is_local(rcpt);
        let recipient = Recipient {
            address: rcpt.clone(),
            // Without a store, local mailboxes are taken as empty.
            local: local.then_some(MailboxUsage { used_bytes: 0, messages: 0 }),
        };
        let verdict = policies.rcpt_to(envelope.clone(), recipient).await;
        if !matches!(verdict, Verdict::Accept) {
            return refuse(verdict);
        }
        envelope.rcpt_to.push(rcpt.clone());
    }
    let Ok(message) = ParsedMessage::parse(request.message) else {
        return refuse(unparseable());
    };
    let dkim = request
        .dkim_pass
        .iter()
        .map(|domain| DkimResult { domain: domain.to_ascii_lowercase(), selector: String::new(), pass: true })
        .collect();
    policies.check_message(envelope, Arc::new(message), dkim).await
}

/// `552` for a message over `max_message_size`.
pub fn message_too_large() -> Verdict {
    Verdict::Reject(too_large_reply())
}

/// `552 5.3.4 Message exceeds maximum size`.
pub fn too_large_reply() -> Reply {
    Reply { code: 552, enhanced: "5.3.4".into(), text: "Message exceeds maximum size".into() }
}

/// `500` for a message the MIME parser cannot read.
pub fn unparseable() -> Verdict {
    Verdict::Reject(Reply { code: 500, enhanced: String::new(), text: "Failed to parse message".into() })
}

/// The report `policy check` prints: the verdict on the first line, then what would be done.
pub fn report(decision: &MessageDecision) -> String {
    let mut out = match &decision.verdict {
        Verdict::Accept => "accept".to_string(),
        Verdict::Reject(reply) => format!("reject {reply}"),
        Verdict::Defer(reply) => format!("defer {reply}"),
    };
    out.push('\n');
    for (label, edits) in [("edit", &decision.edits), ("delivery edit", &decision.delivery_edits)] {
        for name in &edits.remove {
            out.push_str(&format!("{label}: remove {name}\n"));
        }
        for (name, value) in &edits.set {
            out.push_str(&format!("{label}: set {name}: {value}\n"));
        }
    }
    if let Some(sender) = &decision.mail_from {
        out.push_str(&format!("envelope sender: <{sender}>\n"));
    }
    out
}
