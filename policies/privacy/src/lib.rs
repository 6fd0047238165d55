//! Header scrubbing, chatmail's rules (SPEC §4): what leaves the relay tells nothing about
//! the sender's network or software, and what lands in a mailbox carries no relay traces.

use ferrymail_policy::*;

pub struct Privacy;

/// Removed from submitted mail before it goes anywhere.
pub const SUBMISSION_REMOVE: [&str; 4] = ["Received", "X-Originating-IP", "X-Mailer", "User-Agent"];
/// Removed from every copy stored in a local mailbox.
pub const DELIVERY_REMOVE: [&str; 3] = ["DKIM-Signature", "Authentication-Results", "Received"];

impl Policy for Privacy {
    const NAME: &'static str = "privacy";

    fn check_message(envelope: Envelope, message: &Message<'_>, _dkim: Vec<DkimResult>) -> MessageVerdict {
        let mut verdict = MessageVerdict::accept();
        if envelope.direction == Direction::Outgoing {
            verdict.edits.remove = SUBMISSION_REMOVE.iter().map(|h| h.to_string()).collect();
            // The real subject travels inside the encrypted part.
            if message.header("subject").is_some() {
                verdict.edits.set = vec![("Subject".to_string(), "[...]".to_string())];
            }
        }
        verdict.delivery_edits.remove = DELIVERY_REMOVE.iter().map(|h| h.to_string()).collect();
        verdict
    }
}

export_policy!(Privacy, hooks: [check_message]);
