//! STORE and UID STORE, with CONDSTORE's UNCHANGEDSINCE.

use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;

use super::fetch::flag_names;
use crate::imap::respond;
use crate::imap::selected::uid_set;
use crate::imap::session::Session;
use crate::store::{FlagChange, FolderError};

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(in crate::imap) async fn store_flags(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'static>],
        by_uid: bool,
        modifiers: &[StoreModifier],
    ) {
        let Some(selected) = &self.selected else { return };
        if selected.read_only {
            return self.out.no(tag, Some(Code::ReadOnly), respond::READ_ONLY);
        }
        let unchanged_since = modifiers.iter().map(|modifier| match modifier {
            StoreModifier::UnchangedSince(modseq) => *modseq,
        }).next();
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let indices = selected.resolve(set, by_uid);
        // CONDSTORE: messages changed after the client's modseq are left alone and reported.
        let (apply, modified): (Vec<usize>, Vec<usize>) =
            indices.into_iter().partition(|&i| unchanged_since.is_none_or(|since| selected.messages[i].entry.modseq <= since));
        let uids: Vec<u32> = apply.iter().map(|&i| selected.messages[i].uid).collect();
        let modified_uids: Vec<u32> = modified.iter().map(|&i| selected.messages[i].uid).collect();
        let change = match kind {
            StoreType::Add => FlagChange::Add,
            StoreType::Remove => FlagChange::Remove,
            StoreType::Replace => FlagChange::Replace,
        };
        let flags = match flag_names(flags) {
            Ok(flags) => flags,
            Err(invalid) => return self.out.bad(Some(tag), None, &invalid),
        };
        let changed = match self.change_flags(&uids, change, &flags).await {
            Ok(changed) => changed,
            Err(e) => return self.folder_failed(tag, e),
        };
        if response == StoreResponse::Answer || self.condstore {
            for index in changed {
                self.flags_update(index, by_uid);
            }
        }
        let code = if modified_uids.is_empty() { None } else { uid_set(&modified_uids).map(Code::Modified) };
        self.out.ok(tag, code, "Store completed");
    }

    /// Change flags of messages in the selected mailbox, keep the session's view in step and
    /// tell other sessions. Returns the indices of the messages touched.
    pub(in crate::imap) async fn change_flags(&mut self, uids: &[u32], change: FlagChange, flags: &[String]) -> Result<Vec<usize>, FolderError> {
        let (Some(account), Some(selected)) = (self.account.clone(), &self.selected) else { return Ok(Vec::new()) };
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let (mailbox_id, uids, flags) = (selected.mailbox_id, uids.to_vec(), flags.to_vec());
        let store = self.relay.store.clone();
        let changed = store.run(move |s| s.store_flags(&account, mailbox_id, &uids, change, &flags)).await?;
        let Some(selected) = self.selected.as_mut() else { return Ok(Vec::new()) };
        let mut indices = Vec::new();
        let mut modseqs = Vec::new();
        let mut new_keywords = false;
        for (uid, flags, modseq) in changed {
            if let Some(index) = selected.index_of(uid) {
                selected.messages[index].entry.flags = flags;
                selected.messages[index].entry.modseq = modseq;
                new_keywords |= selected.learn_keywords(index);
                modseqs.push(modseq);
                indices.push(index);
            }
        }
        // The session's modseq follows only its own changes: if another session changed the
        // mailbox in between (a gap), the next sync must still see that change.
        modseqs.sort_unstable();
        for modseq in modseqs {
            if modseq == selected.highest_modseq + 1 {
                selected.highest_modseq = modseq;
            }
        }
        if new_keywords {
            // Before the FETCH responses that show them.
            self.announce_flags();
        }
        self.announce();
        Ok(indices)
    }
}
