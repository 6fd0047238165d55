//! FETCH and UID FETCH: flags, dates, sizes and the sections of a message the app asks for
//! (`BODY.PEEK[HEADER.FIELDS (...)]`, `BODY.PEEK[]`, ...), and ENVELOPE and BODYSTRUCTURE for
//! mail readers. Fetching a body without PEEK marks the message \Seen, as RFC 3501 says.

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::core::{AString, IString, Literal, NString, Tag, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section};
use imap_codec::imap_types::flag::{Flag, FlagFetch};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::sequence::SequenceSet;

use super::mailboxes::has_flag;
use crate::imap::respond::{self, code};
use crate::imap::session::Session;
use crate::imap::structure;
use crate::message::header::body_start;
use crate::store::{FlagChange, MessageEntry};

/// Body sections one FETCH may ask for.
const MAX_SECTIONS: usize = 32;

/// Buffered FETCH output beyond this goes to the client before the next message is read.
const FLUSH_AT: usize = 256 * 1024;

impl Session {
    pub(in crate::imap) async fn fetch(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        by_uid: bool,
        modifiers: &[FetchModifier],
    ) {
        let Some(selected) = &self.selected else { return };
        let mut names = match items {
            MacroOrMessageDataItemNames::Macro(Macro::Fast) => {
                vec![MessageDataItemName::Flags, MessageDataItemName::InternalDate, MessageDataItemName::Rfc822Size]
            }
            MacroOrMessageDataItemNames::Macro(Macro::All) => vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
                MessageDataItemName::Envelope,
            ],
            MacroOrMessageDataItemNames::Macro(Macro::Full) => vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
                MessageDataItemName::Envelope,
                MessageDataItemName::Body,
            ],
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
            MacroOrMessageDataItemNames::Macro(_) => return self.out.bad(Some(tag), None, respond::BAD_COMMAND),
        };
        if names.iter().any(|n| matches!(n, MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. })) {
            return self.out.bad(Some(tag), None, "BINARY is not supported");
        }
        // Each body section may parse the message again (and each level of it): a bounded number
        // per FETCH, far more than any client asks for.
        if names.iter().filter(|n| matches!(n, MessageDataItemName::BodyExt { section: Some(_), .. })).count() > MAX_SECTIONS {
            return self.out.no(tag, Some(code("LIMIT")), "Too many body sections in one FETCH");
        }
        // QRESYNC is not offered: its VANISHED modifier is a client error (RFC 7162 §3.2.6).
        if modifiers.iter().any(|m| matches!(m, FetchModifier::Vanished)) {
            return self.out.bad(Some(tag), None, "VANISHED needs QRESYNC, which is not enabled");
        }
        let changed_since = modifiers.iter().find_map(|m| match m {
            FetchModifier::ChangedSince(since) => Some(since.get()),
            FetchModifier::Vanished => None,
        });
        // RFC 7162 §3.1: CHANGEDSINCE and the MODSEQ item enable CONDSTORE.
        if changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq) {
            self.condstore = true;
        }
        if by_uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        if self.condstore && changed_since.is_some() && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }

        let indices: Vec<usize> = selected
            .resolve(set, by_uid)
            .into_iter()
            .filter(|&i| changed_since.is_none_or(|since| selected.messages[i].entry.modseq > since))
            .collect();
        let sets_seen = !selected.read_only
            && names.iter().any(|n| {
                matches!(n, MessageDataItemName::BodyExt { peek: false, .. } | MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text)
            });
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Envelope
                    | MessageDataItemName::Body
                    | MessageDataItemName::BodyStructure
            )
        });

        if sets_seen {
            let unseen: Vec<u32> = indices
                .iter()
                .map(|&i| &selected.messages[i])
                .filter(|m| !has_flag(&m.entry, "\\Seen"))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                if let Err(e) = self.change_flags(&unseen, FlagChange::Add, &["\\Seen".to_string()]).await {
                    return self.folder_failed(tag, e);
                }
                if !names.contains(&MessageDataItemName::Flags) {
                    names.push(MessageDataItemName::Flags);
                }
            }
        }

        // Bodies are parsed (BODYSTRUCTURE, MIME parts of 30 MB messages) and encoded on the
        // blocking pool, one message at a time: never on the threads that serve sessions.
        let names = std::sync::Arc::new(names);
        // Messages another session expunged whose content is gone: RFC 5530's EXPUNGEISSUED.
        let mut gone = false;
        for index in indices {
            let Some(selected) = &self.selected else { return };
            let Some(known) = selected.messages.get(index) else { continue };
            let Some(seq) = NonZeroU32::new(index as u32 + 1) else { continue };
            let (uid, entry, recent) = (known.uid, known.entry.clone(), selected.is_recent(known.uid));
            if !needs_body {
                let items: Vec<MessageDataItem<'static>> = names.iter().filter_map(|name| item(name, uid, &entry, recent, None)).collect();
                if let Ok(items) = Vec1::try_from(items) {
                    self.out.data(Data::Fetch { seq, items });
                }
            } else {
                let (store, names) = (self.relay.store.clone(), names.clone());
                let encoded = store
                    .run(move |s| -> Result<Option<Vec<u8>>, crate::store::StoreError> {
                        // Expunged meanwhile: nothing to show.
                        let Some(raw) = s.blob(entry.blob_id)? else { return Ok(None) };
                        let items: Vec<MessageDataItem<'static>> =
                            names.iter().filter_map(|name| item(name, uid, &entry, recent, Some(raw.as_slice()))).collect();
                        let mut out = respond::Out::default();
                        if let Ok(items) = Vec1::try_from(items) {
                            out.data(Data::Fetch { seq, items });
                        }
                        Ok(Some(out.bytes))
                    })
                    .await;
                match encoded {
                    Ok(Some(bytes)) => self.out.append(bytes),
                    Ok(None) => {
                        gone = true;
                        continue;
                    }
                    Err(e) => return self.store_failed(tag, e),
                }
            }
            // A mailbox can hold 500 MB: send as we go rather than all at the end.
            if self.out.bytes.len() > FLUSH_AT && self.flush().await.is_err() {
                return;
            }
        }
        match gone {
            true => self.out.no(tag, Some(code("EXPUNGEISSUED")), respond::EXPUNGE_ISSUED),
            false => self.out.ok(tag, None, "Fetch completed"),
        }
    }

    /// Announce one message's new flags (after STORE, or a change by another session).
    pub(in crate::imap) fn flags_update(&mut self, index: usize, with_uid: bool) {
        let Some(selected) = &self.selected else { return };
        let Some(known) = selected.messages.get(index) else { return };
        let mut items = vec![MessageDataItem::Flags(fetch_flags(&known.entry, selected.is_recent(known.uid)))];
        if with_uid && let Some(uid) = NonZeroU32::new(known.uid) {
            items.push(MessageDataItem::Uid(uid));
        }
        if self.condstore && let Some(modseq) = NonZeroU64::new(known.entry.modseq) {
            items.push(MessageDataItem::ModSeq(modseq));
        }
        if let (Ok(items), Some(seq)) = (Vec1::try_from(items), NonZeroU32::new(index as u32 + 1)) {
            self.out.data(Data::Fetch { seq, items });
        }
    }
}

/// A message's flags, and `\\Recent` if it is recent to this session.
pub(in crate::imap) fn fetch_flags(entry: &MessageEntry, recent: bool) -> Vec<FlagFetch<'static>> {
    // A `\\Recent` stored before clients were stopped from setting it is not shown: only the
    // session's own claim counts.
    let stored = entry.flags.iter().filter(|f| !f.eq_ignore_ascii_case("\\Recent"));
    let stored = stored.filter_map(|f| Flag::try_from(f.as_str()).ok().map(|flag| FlagFetch::Flag(flag.into_static())));
    stored.chain(recent.then_some(FlagFetch::Recent)).collect()
}

fn item(name: &MessageDataItemName<'static>, uid: u32, entry: &MessageEntry, recent: bool, raw: Option<&[u8]>) -> Option<MessageDataItem<'static>> {
    Some(match name {
        MessageDataItemName::Uid => MessageDataItem::Uid(NonZeroU32::new(uid)?),
        MessageDataItemName::Flags => MessageDataItem::Flags(fetch_flags(entry, recent)),
        MessageDataItemName::InternalDate => MessageDataItem::InternalDate(internal_date(entry.received)?),
        MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(entry.size.min(u64::from(u32::MAX)) as u32),
        MessageDataItemName::ModSeq => MessageDataItem::ModSeq(NonZeroU64::new(entry.modseq)?),
        MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(raw?.to_vec())),
        MessageDataItemName::Envelope => MessageDataItem::Envelope(structure::envelope(raw?)?),
        MessageDataItemName::Body => MessageDataItem::Body(structure::body_structure(raw?)?),
        MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(structure::body_structure(raw?)?),
        MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(nstring(raw?[..body_start(raw?)].to_vec())),
        MessageDataItemName::Rfc822Text => MessageDataItem::Rfc822Text(nstring(raw?[body_start(raw?)..].to_vec())),
        MessageDataItemName::BodyExt { section, partial, .. } => {
            let bytes = section_bytes(raw?, section.as_ref());
            let origin = partial.map(|(start, _)| start);
            let data = match (bytes, *partial) {
                // A section the message lacks is NIL, never an empty string.
                (None, _) => NString(None),
                (Some(bytes), Some((start, length))) => {
                    let start = (start as usize).min(bytes.len());
                    let end = start.saturating_add(length.get() as usize).min(bytes.len());
                    nstring(bytes[start..end].to_vec())
                }
                (Some(bytes), None) => nstring(bytes),
            };
            MessageDataItem::BodyExt { section: section.clone(), origin, data }
        }
        _ => return None,
    })
}

/// The bytes of a body section; `None` for a section the message does not have.
fn section_bytes(raw: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    use crate::imap::section::{Specifier, section as select};
    let path = |part: &Option<Part>| -> Vec<u32> { part.iter().flat_map(|p| p.0.as_ref().iter().map(|n| n.get())).collect() };
    let names = |fields: &Vec1<AString<'_>>| -> Vec<Vec<u8>> { fields.as_ref().iter().map(|f| f.as_ref().to_vec()).collect() };
    let fields = |part: &Option<Part>, fields: &Vec1<AString<'_>>, exclude: bool| {
        let names = names(fields);
        let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        select(raw, &path(part), Specifier::Fields(&names, exclude))
    };
    match section {
        None => Some(raw.to_vec()),
        Some(Section::Part(part)) => select(raw, &path(&Some(part.clone())), Specifier::Whole),
        Some(Section::Mime(part)) => select(raw, &path(&Some(part.clone())), Specifier::Mime),
        Some(Section::Header(part)) => select(raw, &path(part), Specifier::Header),
        Some(Section::Text(part)) => select(raw, &path(part), Specifier::Text),
        Some(Section::HeaderFields(part, names)) => fields(part, names, false),
        Some(Section::HeaderFieldsNot(part, names)) => fields(part, names, true),
    }
}

/// A message literal. Messages with NUL bytes (invalid mail) lose them rather than the message.
fn nstring(mut bytes: Vec<u8>) -> NString<'static> {
    if bytes.contains(&0) {
        bytes.retain(|&b| b != 0);
    }
    match Literal::try_from(bytes) {
        Ok(literal) => NString(Some(IString::Literal(literal))),
        Err(_) => NString(None),
    }
}

fn internal_date(secs: u64) -> Option<DateTime> {
    let utc = chrono::DateTime::from_timestamp(secs as i64, 0)?;
    DateTime::try_from(utc.fixed_offset()).ok()
}

/// The flags a client asks STORE or APPEND to set, or the first it may not: `\\Recent`,
/// which only the server gives, and any other `\\`-flag RFC 3501 does not define.
pub(in crate::imap) fn flag_names(flags: &[Flag<'_>]) -> Result<Vec<String>, String> {
    match flags.iter().find(|f| matches!(f, Flag::Extension(_))) {
        Some(flag) => Err(format!("Invalid system flag {flag}")),
        None => Ok(flags.iter().map(|f| f.to_string()).collect()),
    }
}
