//! SELECT, EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, STATUS, CLOSE, UNSELECT, EXPUNGE.

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::flag::{Flag, FlagPerm};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::mailbox_name;
use crate::imap::respond::{self, code};
use crate::imap::selected::Selected;
use crate::imap::session::Session;
use crate::store::{FolderError, MessageEntry, StoreError};

const SYSTEM_FLAGS: [Flag<'static>; 5] = [Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft];

impl Session {
    pub(in crate::imap) async fn select(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>, read_only: bool, parameters: &[SelectParameter]) {
        if parameters.iter().any(|p| matches!(p, SelectParameter::CondStore)) {
            self.condstore = true;
        }
        // A failed SELECT leaves no mailbox selected.
        self.selected = None;
        let (entries, mailbox) = match self.load_mailbox(mailbox).await {
            Ok(Some(found)) => found,
            Ok(None) => return self.out.no(tag, Some(code("NONEXISTENT")), respond::NO_MAILBOX),
            Err(e) => return self.store_failed(tag, e),
        };
        // What no session has been told of yet is recent to this one (EXAMINE claims nothing).
        let (store, account) = (self.relay.store.clone(), self.account.clone());
        let (mailbox_id, uidnext) = (mailbox.id, mailbox.uidnext);
        let recent_from = store
            .run(move |s| match (&account, read_only) {
                (Some(account), false) => s.claim_recent(account, mailbox_id, uidnext),
                (Some(account), true) => s.recent_from(account.id, mailbox_id),
                (None, _) => Ok(uidnext),
            })
            .await;
        let recent_from = match recent_from {
            Ok(from) => from,
            Err(e) => return self.store_failed(tag, e),
        };
        let mut selected = Selected::new(&mailbox, read_only, entries);
        selected.add_recent(recent_from, uidnext);
        let recent = selected.recent_count();
        let first_unseen = selected.messages.iter().position(|m| !has_flag(&m.entry, "\\Seen"));
        announce_flags(&mut self.out, &selected);
        self.out.exists(selected.exists());
        self.out.data(Data::Recent(recent));
        // RFC 3501 §6.3.1: the first unseen message's sequence number.
        if let Some(unseen) = first_unseen.and_then(|i| NonZeroU32::new(i as u32 + 1)) {
            self.out.untagged_ok(Some(Code::Unseen(unseen)), "First unseen");
        }
        if let Some(validity) = NonZeroU32::new(selected.uidvalidity) {
            self.out.untagged_ok(Some(Code::UidValidity(validity)), "UIDs valid");
        }
        if let Some(next) = NonZeroU32::new(selected.uidnext) {
            self.out.untagged_ok(Some(Code::UidNext(next)), "Predicted next UID");
        }
        if let Some(modseq) = NonZeroU64::new(selected.highest_modseq) {
            self.out.untagged_ok(Some(Code::HighestModSeq(modseq)), "Highest");
        }
        self.selected = Some(selected);
        let access = if read_only { Code::ReadOnly } else { Code::ReadWrite };
        self.out.ok(tag, Some(access), if read_only { "Examine completed" } else { "Select completed" });
    }

    /// FLAGS and PERMANENTFLAGS again, when keywords new to the session are in use.
    pub(in crate::imap) fn announce_flags(&mut self) {
        if let Some(selected) = &self.selected {
            announce_flags(&mut self.out, selected);
        }
    }

    pub(in crate::imap) async fn create(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>) {
        let Some(account) = self.account.clone() else { return };
        let name = mailbox_name(mailbox).trim_end_matches(super::info::DELIMITER).to_string();
        if !valid_new_name(&name) {
            return self.out.no(tag, None, INVALID_NAME);
        }
        let store = self.relay.store.clone();
        match store.run(move |s| s.create_mailbox(&account, &name)).await {
            Ok(_) => self.out.ok(tag, None, "Create completed"),
            Err(FolderError::Exists) => self.out.no(tag, Some(code("ALREADYEXISTS")), "Mailbox already exists"),
            Err(e) => self.folder_failed(tag, e),
        }
    }

    pub(in crate::imap) async fn delete(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>) {
        let Some(account) = self.account.clone() else { return };
        let name = mailbox_name(mailbox);
        let store = self.relay.store.clone();
        match store.run(move |s| s.delete_mailbox(&account, &name)).await {
            Ok(()) => {
                self.announce();
                self.out.ok(tag, None, "Delete completed")
            }
            Err(e) => self.folder_failed(tag, e),
        }
    }

    pub(in crate::imap) async fn rename(&mut self, tag: &Tag<'static>, from: &Mailbox<'static>, to: &Mailbox<'static>) {
        let Some(account) = self.account.clone() else { return };
        let (from, to) = (mailbox_name(from), mailbox_name(to));
        if !valid_new_name(&to) {
            return self.out.no(tag, None, INVALID_NAME);
        }
        let store = self.relay.store.clone();
        match store.run(move |s| s.rename_mailbox(&account, &from, &to)).await {
            Ok(()) => self.out.ok(tag, None, "Rename completed"),
            Err(FolderError::Exists) => self.out.no(tag, Some(code("ALREADYEXISTS")), "Mailbox already exists"),
            Err(e) => self.folder_failed(tag, e),
        }
    }

    /// Any name may be subscribed, existing or not; unsubscribing a name not subscribed is OK.
    pub(in crate::imap) async fn subscribe(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>, subscribed: bool) {
        let Some(account) = self.account.clone() else { return };
        let name = mailbox_name(mailbox);
        // Only a name a mailbox could have is kept.
        if subscribed && !valid_new_name(&name) {
            return self.out.no(tag, None, INVALID_NAME);
        }
        let store = self.relay.store.clone();
        match store.run(move |s| s.subscribe(&account, &name, subscribed)).await {
            Ok(()) => self.out.ok(tag, None, respond::DONE),
            Err(e) => self.folder_failed(tag, e),
        }
    }

    pub(in crate::imap) async fn status(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>, items: &[StatusDataItemName]) {
        let (entries, found) = match self.load_mailbox(mailbox).await {
            Ok(Some(found)) => found,
            Ok(None) => return self.out.no(tag, Some(code("NONEXISTENT")), respond::NO_MAILBOX),
            Err(e) => return self.store_failed(tag, e),
        };
        let count = |f: fn(&MessageEntry) -> bool| entries.iter().filter(|(_, e)| f(e)).count() as u32;
        let recent = match items.contains(&StatusDataItemName::Recent) {
            true => {
                let (store, account_id, mailbox_id) = (self.relay.store.clone(), self.account.as_ref().map_or(0, |a| a.id), found.id);
                match store.run(move |s| s.recent_from(account_id, mailbox_id)).await {
                    Ok(from) => entries.iter().filter(|(uid, _)| *uid >= from).count() as u32,
                    Err(e) => return self.store_failed(tag, e),
                }
            }
            false => 0,
        };
        let answer: Vec<StatusDataItem> = items
            .iter()
            .filter_map(|item| {
                Some(match item {
                    StatusDataItemName::Messages => StatusDataItem::Messages(entries.len() as u32),
                    StatusDataItemName::Recent => StatusDataItem::Recent(recent),
                    StatusDataItemName::UidNext => StatusDataItem::UidNext(NonZeroU32::new(found.uidnext)?),
                    StatusDataItemName::UidValidity => StatusDataItem::UidValidity(NonZeroU32::new(found.uidvalidity)?),
                    StatusDataItemName::Unseen => StatusDataItem::Unseen(count(|e| !has_flag(e, "\\Seen"))),
                    StatusDataItemName::Deleted => StatusDataItem::Deleted(count(|e| has_flag(e, "\\Deleted"))),
                    StatusDataItemName::DeletedStorage => StatusDataItem::DeletedStorage(
                        entries.iter().filter(|(_, e)| has_flag(e, "\\Deleted")).map(|(_, e)| e.size).sum(),
                    ),
                    StatusDataItemName::HighestModSeq => StatusDataItem::HighestModSeq(found.highest_modseq),
                })
            })
            .collect();
        self.out.data(Data::Status { mailbox: mailbox.clone(), items: answer.into() });
        self.out.ok(tag, None, "Status completed");
    }

    /// A mailbox of the logged-in account with its messages.
    async fn load_mailbox(&self, mailbox: &Mailbox<'static>) -> Result<Option<(Vec<(u32, MessageEntry)>, crate::store::Mailbox)>, StoreError> {
        let Some(account_id) = self.account.as_ref().map(|a| a.id) else { return Ok(None) };
        let name = mailbox_name(mailbox);
        let store = self.relay.store.clone();
        store
            .run(move |s| match s.mailbox(account_id, &name)? {
                Some(mailbox) => Ok(Some((s.messages(account_id, mailbox.id)?, mailbox))),
                None => Ok(None),
            })
            .await
    }

    /// CLOSE expunges silently; UNSELECT does not.
    pub(in crate::imap) async fn close(&mut self, tag: &Tag<'static>, expunge: bool) {
        if expunge && self.selected.as_ref().is_some_and(|s| !s.read_only) {
            let doomed = self.deleted_messages(None);
            if let Err(e) = self.remove(doomed).await {
                return self.store_failed(tag, e);
            }
        }
        self.selected = None;
        self.out.ok(tag, None, respond::DONE);
    }

    pub(in crate::imap) async fn expunge(&mut self, tag: &Tag<'static>, uids: Option<&SequenceSet>) {
        if self.selected.as_ref().is_some_and(|s| s.read_only) {
            return self.out.no(tag, Some(Code::ReadOnly), respond::READ_ONLY);
        }
        let doomed = self.deleted_messages(uids);
        if let Err(e) = self.remove(doomed).await {
            return self.store_failed(tag, e);
        }
        // Announces the EXPUNGEs (and anything else that changed meanwhile).
        self.sync_selected().await;
        self.out.ok(tag, None, "Expunge completed");
    }

    /// UIDs flagged \Deleted in the selected mailbox (within `uids` when given).
    fn deleted_messages(&self, uids: Option<&SequenceSet>) -> Vec<u32> {
        let Some(selected) = &self.selected else { return Vec::new() };
        let candidates: Vec<usize> = match uids {
            Some(set) => selected.resolve(set, true),
            None => (0..selected.messages.len()).collect(),
        };
        candidates
            .into_iter()
            .map(|i| &selected.messages[i])
            .filter(|m| has_flag(&m.entry, "\\Deleted"))
            .map(|m| m.uid)
            .collect()
    }

    async fn remove(&mut self, uids: Vec<u32>) -> Result<(), StoreError> {
        let (Some(account), Some(selected)) = (&self.account, &self.selected) else { return Ok(()) };
        if uids.is_empty() {
            return Ok(());
        }
        let address = account.address.clone();
        let pairs: Vec<(u32, u32)> = uids.iter().map(|uid| (selected.mailbox_id, *uid)).collect();
        let store = self.relay.store.clone();
        store.run(move |s| s.delete_messages(&address, &pairs)).await?;
        self.announce();
        Ok(())
    }

    pub(in crate::imap) fn store_failed(&mut self, tag: &Tag<'static>, error: StoreError) {
        tracing::error!("IMAP store operation failed: {error}");
        self.out.no(tag, Some(code("SERVERBUG")), respond::SERVER_ERROR);
    }

    pub(in crate::imap) fn folder_failed(&mut self, tag: &Tag<'static>, error: FolderError) {
        match error {
            FolderError::NotFound => self.out.no(tag, Some(code("NONEXISTENT")), respond::NO_MAILBOX),
            FolderError::Exists => self.out.no(tag, Some(code("ALREADYEXISTS")), "Mailbox already exists"),
            FolderError::Inbox => self.out.no(tag, Some(code("CANNOT")), "INBOX cannot be deleted or renamed"),
            FolderError::OverQuota => self.out.no(tag, Some(Code::OverQuota), respond::OVER_QUOTA),
            FolderError::Limit(text) => self.out.no(tag, Some(code("LIMIT")), text),
            FolderError::Store(e) => self.store_failed(tag, e),
        }
    }
}

/// FLAGS and PERMANENTFLAGS for a selected mailbox: the system flags and the keywords in use
/// (clients offer those to the user), and `\*` where new keywords may be made.
fn announce_flags(out: &mut respond::Out, selected: &Selected) {
    let keywords = selected.keywords.iter().filter_map(|k| Flag::try_from(k.as_str()).ok().map(|f| f.into_static()));
    let flags: Vec<Flag<'static>> = SYSTEM_FLAGS.iter().cloned().chain(keywords).collect();
    let permanent = match selected.read_only {
        true => Vec::new(),
        false => flags.iter().cloned().map(FlagPerm::Flag).chain([FlagPerm::Asterisk]).collect(),
    };
    out.data(Data::Flags(flags));
    out.untagged_ok(Some(Code::PermanentFlags(permanent)), "Flags permitted");
}

const INVALID_NAME: &str = "Invalid mailbox name";

/// A name a mailbox may be created (or renamed) under: not empty, no wildcards, modified UTF-7.
fn valid_new_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['*', '%']) && super::is_modified_utf7(name.as_bytes())
}

pub(in crate::imap) fn has_flag(entry: &MessageEntry, flag: &str) -> bool {
    entry.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}
