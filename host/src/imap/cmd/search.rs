//! SEARCH and UID SEARCH: flags, dates, sizes, UID and sequence sets, header and text
//! matches (case-insensitive substrings), combined with NOT, OR and AND.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::search::SearchKey;

use super::mailboxes::has_flag;
use crate::imap::selected::Selected;
use crate::imap::session::Session;
use crate::message::header::{body_start, field_name, field_value, split_header};

impl Session {
    pub(in crate::imap) async fn search(&mut self, tag: &Tag<'static>, criteria: &Vec1<SearchKey<'static>>, by_uid: bool) {
        let Some(selected) = &self.selected else { return };
        let needs_text = criteria.as_ref().iter().any(needs_message);
        let mut hits = Vec::new();
        for index in 0..selected.messages.len() {
            let raw = if needs_text {
                let (store, blob_id) = (self.relay.store.clone(), selected.messages[index].entry.blob_id);
                match store.run(move |s| s.blob(blob_id)).await {
                    Ok(raw) => raw,
                    Err(e) => return self.store_failed(tag, e),
                }
            } else {
                None
            };
            let Some(selected) = &self.selected else { return };
            let message = Candidate { selected, index, raw: raw.as_deref() };
            if criteria.as_ref().iter().all(|key| message.matches(key)) {
                let known = &selected.messages[index];
                hits.push(if by_uid { known.uid } else { index as u32 + 1 });
            }
        }
        let hits: Vec<NonZeroU32> = hits.into_iter().filter_map(NonZeroU32::new).collect();
        self.out.data(Data::Search(hits, None));
        self.out.ok(tag, None, "Search completed");
    }
}

fn needs_message(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_message),
        SearchKey::Not(key) => needs_message(key),
        SearchKey::Or(a, b) => needs_message(a) || needs_message(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        _ => false,
    }
}

struct Candidate<'a> {
    selected: &'a Selected,
    index: usize,
    raw: Option<&'a [u8]>,
}

impl Candidate<'_> {
    fn matches(&self, key: &SearchKey<'_>) -> bool {
        let entry = &self.selected.messages[self.index].entry;
        let flag = |name: &str| has_flag(entry, name);
        let received = chrono::DateTime::from_timestamp(entry.received as i64, 0).map(|d| d.date_naive());
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.matches(k)),
            SearchKey::Not(key) => !self.matches(key),
            SearchKey::Or(a, b) => self.matches(a) || self.matches(b),
            SearchKey::All => true,
            SearchKey::SequenceSet(set) => self.selected.contains(set, false, self.index),
            SearchKey::Uid(set) => self.selected.contains(set, true, self.index),
            SearchKey::Answered => flag("\\Answered"),
            SearchKey::Unanswered => !flag("\\Answered"),
            SearchKey::Deleted => flag("\\Deleted"),
            SearchKey::Undeleted => !flag("\\Deleted"),
            SearchKey::Draft => flag("\\Draft"),
            SearchKey::Undraft => !flag("\\Draft"),
            SearchKey::Flagged => flag("\\Flagged"),
            SearchKey::Unflagged => !flag("\\Flagged"),
            SearchKey::Seen => flag("\\Seen"),
            SearchKey::Unseen => !flag("\\Seen"),
            SearchKey::Keyword(k) => flag(k.as_ref()),
            SearchKey::Unkeyword(k) => !flag(k.as_ref()),
            // Nothing is \Recent here.
            SearchKey::New | SearchKey::Recent => false,
            SearchKey::Old => true,
            SearchKey::Larger(n) => entry.size > u64::from(*n),
            SearchKey::Smaller(n) => entry.size < u64::from(*n),
            SearchKey::Before(date) => received.is_some_and(|d| d < *date.as_ref()),
            SearchKey::On(date) => received.is_some_and(|d| d == *date.as_ref()),
            SearchKey::Since(date) => received.is_some_and(|d| d >= *date.as_ref()),
            SearchKey::SentBefore(date) => self.sent().is_some_and(|d| d < *date.as_ref()),
            SearchKey::SentOn(date) => self.sent().is_some_and(|d| d == *date.as_ref()),
            SearchKey::SentSince(date) => self.sent().is_some_and(|d| d >= *date.as_ref()),
            SearchKey::Bcc(s) => self.header_contains(b"bcc", s.as_ref()),
            SearchKey::Cc(s) => self.header_contains(b"cc", s.as_ref()),
            SearchKey::From(s) => self.header_contains(b"from", s.as_ref()),
            SearchKey::To(s) => self.header_contains(b"to", s.as_ref()),
            SearchKey::Subject(s) => self.header_contains(b"subject", s.as_ref()),
            SearchKey::Header(name, s) => self.header_contains(name.as_ref(), s.as_ref()),
            SearchKey::Body(s) => self.raw.is_some_and(|raw| contains(&raw[body_start(raw)..], s.as_ref())),
            SearchKey::Text(s) => self.raw.is_some_and(|raw| contains(raw, s.as_ref())),
            SearchKey::ModSequence { modseq, .. } => entry.modseq >= *modseq,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether a field of this name contains `needle` (an empty needle: whether it exists).
    fn header_contains(&self, name: &[u8], needle: &[u8]) -> bool {
        let Some(raw) = self.raw else { return false };
        let (fields, _) = split_header(raw);
        fields.into_iter().map(|f| &raw[f]).any(|field| {
            field_name(field).eq_ignore_ascii_case(name) && contains(field_value(field), needle)
        })
    }

    /// The Date: header's day.
    fn sent(&self) -> Option<chrono::NaiveDate> {
        let raw = self.raw?;
        let (fields, _) = split_header(raw);
        let field = fields.into_iter().map(|f| &raw[f]).find(|f| field_name(f).eq_ignore_ascii_case(b"date"))?;
        let value = std::str::from_utf8(field_value(field)).ok()?.split_whitespace().collect::<Vec<_>>().join(" ");
        chrono::DateTime::parse_from_rfc2822(&value).ok().map(|d| d.date_naive())
    }
}

/// Case-insensitive (ASCII) substring search.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}
