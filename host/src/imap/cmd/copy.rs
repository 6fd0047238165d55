//! COPY and MOVE (and their UID forms), answering with UIDPLUS's COPYUID.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;

use super::mailbox_name;
use crate::imap::selected::uidplus_set;
use crate::imap::session::Session;
use crate::store::FolderError;

impl Session {
    pub(in crate::imap) async fn copy(&mut self, tag: &Tag<'static>, set: &SequenceSet, target: &Mailbox<'static>, by_uid: bool, remove: bool) {
        let (Some(account), Some(selected)) = (self.account.clone(), &self.selected) else { return };
        if remove && selected.read_only {
            return self.out.no(tag, Some(Code::ReadOnly), crate::imap::respond::READ_ONLY);
        }
        // A copy takes no space for the message, but the disk must not fill with mailbox entries.
        if !remove && !self.relay.disk.has_room(0) {
            return self.out.no(tag, Some(Code::OverQuota), crate::imap::respond::NO_STORAGE);
        }
        let uids: Vec<u32> = selected.resolve(set, by_uid).into_iter().map(|i| selected.messages[i].uid).collect();
        let (from, to) = (selected.mailbox_id, mailbox_name(target));
        let (store, quota) = (self.relay.store.clone(), self.relay.config.max_mailbox_size.0);
        let copied = store.run(move |s| s.copy_messages(&account, from, &uids, &to, remove, quota)).await;
        let (validity, pairs) = match copied {
            Ok(copied) => copied,
            Err(FolderError::NotFound) => return self.out.no(tag, Some(Code::TryCreate), "Mailbox doesn't exist"),
            Err(e) => return self.folder_failed(tag, e),
        };
        self.announce();
        let sources: Vec<u32> = pairs.iter().map(|(s, _)| *s).collect();
        let targets: Vec<u32> = pairs.iter().map(|(_, t)| *t).collect();
        let copy_uid = match (std::num::NonZeroU32::new(validity), uidplus_set(&sources), uidplus_set(&targets)) {
            (Some(uid_validity), Some(source), Some(destination)) => Some(Code::CopyUid { uid_validity, source, destination }),
            _ => None,
        };
        if remove {
            // RFC 6851: COPYUID in an untagged OK, then the EXPUNGEs, then the tagged OK.
            if let Some(copy_uid) = copy_uid {
                self.out.untagged_ok(Some(copy_uid), "Moved");
            }
            self.sync_selected().await;
            self.out.ok(tag, None, "Move completed");
        } else {
            self.out.ok(tag, copy_uid, "Copy completed");
        }
    }
}
