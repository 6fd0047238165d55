//! APPEND, answering with UIDPLUS's APPENDUID.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;

use super::fetch::flag_names;
use super::mailbox_name;
use crate::imap::session::Session;
use crate::store::FolderError;

impl Session {
    pub(in crate::imap) async fn append(
        &mut self,
        tag: &Tag<'static>,
        mailbox: &Mailbox<'static>,
        flags: &[Flag<'static>],
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'static>,
    ) {
        let Some(account) = self.account.clone() else { return };
        let bytes = match message {
            LiteralOrLiteral8::Literal(literal) => literal.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.into_owned(),
        };
        if bytes.len() as u64 > self.relay.config.max_message_size.0 {
            return self.out.no(tag, Some(Code::TooBig), "Message too large");
        }
        if !self.relay.disk.has_room(bytes.len() as u64) {
            return self.out.no(tag, Some(Code::OverQuota), crate::imap::respond::NO_STORAGE);
        }
        let received = date.map_or_else(|| self.relay.clock.now_secs(), |d| d.as_ref().timestamp().max(0) as u64);
        let flags = match flag_names(flags) {
            Ok(flags) => flags,
            Err(invalid) => return self.out.bad(Some(tag), None, &invalid),
        };
        let name = mailbox_name(mailbox);
        let (store, quota) = (self.relay.store.clone(), self.relay.config.max_mailbox_size.0);
        let appended = store.run(move |s| s.append(&account, &name, &bytes, &flags, received, quota)).await;
        match appended {
            Ok((validity, uid)) => {
                self.announce();
                if self.selected.as_ref().is_some_and(|s| s.name.eq_ignore_ascii_case(&mailbox_name(mailbox))) {
                    self.sync_selected().await;
                }
                let code = match (NonZeroU32::new(validity), NonZeroU32::new(uid)) {
                    (Some(uid_validity), Some(uid)) => Some(Code::AppendUid { uid_validity, uid }),
                    _ => None,
                };
                self.out.ok(tag, code, "Append completed");
            }
            Err(FolderError::NotFound) => self.out.no(tag, Some(Code::TryCreate), "Mailbox doesn't exist"),
            Err(e) => self.folder_failed(tag, e),
        }
    }
}
