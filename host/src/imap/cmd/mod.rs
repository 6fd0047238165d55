//! The IMAP commands, one group per file. Each is a method on the session.

mod append;
mod auth;
mod copy;
mod fetch;
mod flags;
mod info;
pub(super) mod list;
mod mailboxes;
mod metadata;
mod quota;
mod search;

use imap_codec::imap_types::mailbox::Mailbox;

/// A mailbox name as stored: INBOX in upper case, others as the client wrote them.
pub(super) fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(other) => {
            let name = String::from_utf8_lossy(other.inner().as_ref()).into_owned();
            if name.eq_ignore_ascii_case("INBOX") { "INBOX".to_string() } else { name }
        }
    }
}
