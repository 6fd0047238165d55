//! SEARCH and UID SEARCH: flags, dates, sizes, UID and sequence sets, header and text
//! matches (case-insensitive substrings), combined with NOT, OR and AND.
//!
//! A search may read every message of a 500 MB mailbox: it runs on the blocking pool, never
//! on the threads that serve sessions, and in time linear in what it reads. The criteria are
//! first compiled into a [`Query`] (sets into sorted ranges, strings into lower-case
//! substring finders), within bounds a client cannot push: the work per message is then
//! proportional to the message's size, not to the product of its size and a needle's.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::{Atom, Charset, Tag, Vec1};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::search::SearchKey;
use memchr::memmem::Finder;

use super::mailboxes::has_flag;
use crate::imap::respond::code;
use crate::imap::selected::{Known, Ranges, in_ranges};
use crate::imap::session::Session;
use crate::message::header::{body_start, field_name, field_value, split_header};
use crate::store::Store;

/// Bytes of all search strings of one SEARCH together.
const MAX_KEY_BYTES: usize = 1024;
/// Search keys (each AND, OR, NOT, flag, set, string...) in one SEARCH.
const MAX_KEYS: usize = 1024;

impl Session {
    pub(in crate::imap) async fn search(&mut self, tag: &Tag<'static>, charset: Option<&Charset<'static>>, criteria: &Vec1<SearchKey<'static>>, by_uid: bool) {
        // Strings are matched as bytes, which is right for ASCII and UTF-8 only (RFC 3501 §6.4.4).
        if let Some(charset) = charset
            && !["US-ASCII", "UTF-8"].iter().any(|known| charset.as_ref().eq_ignore_ascii_case(known))
        {
            let allowed = ["US-ASCII", "UTF-8"].iter().filter_map(|c| Atom::try_from(*c).ok()).map(Charset::from).collect();
            return self.out.no(tag, Some(Code::BadCharset { allowed }), "Charset not supported");
        }
        let Some(selected) = &self.selected else { return };
        let mut budget = Budget { keys: MAX_KEYS, bytes: MAX_KEY_BYTES };
        let query = match Query::compile_all(criteria.as_ref(), selected, &mut budget) {
            Some(query) => query,
            None => return self.out.no(tag, Some(code("LIMIT")), "Search too complex"),
        };
        let uses_modseq = query.uses_modseq();
        let (messages, recent) = (selected.messages.clone(), selected.recent.clone());
        let store = self.relay.store.clone();
        let hits = store.run(move |s| query.run(s, &messages, &recent, by_uid)).await;
        match hits {
            Ok((hits, gone)) => {
                // RFC 7162 §3.1.5: a search by MODSEQ answers with the highest one it found.
                let modseq = match uses_modseq {
                    true => hits.iter().map(|(_, modseq)| *modseq).max().and_then(std::num::NonZeroU64::new),
                    false => None,
                };
                if uses_modseq {
                    self.condstore = true;
                }
                self.out.data(Data::Search(hits.into_iter().filter_map(|(n, _)| NonZeroU32::new(n)).collect(), modseq));
                // A message whose content went with an expunge elsewhere could not be judged:
                // say so (RFC 5530) rather than answer as if it did not match.
                match gone {
                    true => self.out.no(tag, Some(code("EXPUNGEISSUED")), crate::imap::respond::EXPUNGE_ISSUED),
                    false => self.out.ok(tag, None, "Search completed"),
                }
            }
            Err(e) => self.store_failed(tag, e),
        }
    }
}

/// What a client may still spend on the criteria of one SEARCH.
struct Budget {
    keys: usize,
    bytes: usize,
}

impl Budget {
    fn key(&mut self) -> Option<()> {
        self.keys = self.keys.checked_sub(1)?;
        Some(())
    }

    /// A lower-case finder for `needle`, charged to the budget.
    fn needle(&mut self, needle: &[u8]) -> Option<Finder<'static>> {
        self.bytes = self.bytes.checked_sub(needle.len())?;
        Some(Finder::new(&needle.to_ascii_lowercase()).into_owned())
    }
}

/// Search criteria, compiled.
enum Query {
    All(Vec<Query>),
    Any(Box<Query>, Box<Query>),
    Not(Box<Query>),
    Const(bool),
    Flag(String, bool),
    /// Sequence numbers or (with `true`) UIDs.
    Set(Ranges, bool),
    Larger(u64),
    Smaller(u64),
    Received(std::cmp::Ordering, chrono::NaiveDate),
    Sent(std::cmp::Ordering, chrono::NaiveDate),
    ModSeq(u64),
    /// Recent to this session (its ranges go with the candidates).
    Recent,
    /// A header field of this (lower-case) name whose value contains the needle.
    Header(Vec<u8>, Finder<'static>),
    /// An address field of this name: its value as written, or any address in it as parsed
    /// (display names with encoded words decoded, comments and obsolete syntax undone).
    Address(&'static str, Finder<'static>),
    Body(Finder<'static>),
    Text(Finder<'static>),
}

impl Query {
    fn compile_all(keys: &[SearchKey<'_>], selected: &crate::imap::selected::Selected, budget: &mut Budget) -> Option<Query> {
        let compiled = keys.iter().map(|k| Query::compile(k, selected, budget)).collect::<Option<Vec<_>>>()?;
        Some(Query::All(compiled))
    }

    fn compile(key: &SearchKey<'_>, selected: &crate::imap::selected::Selected, budget: &mut Budget) -> Option<Query> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        budget.key()?;
        let flag = |name: &str, set: bool| Some(Query::Flag(name.to_string(), set));
        let day = |d: &imap_codec::imap_types::datetime::NaiveDate| *d.as_ref();
        match key {
            SearchKey::And(keys) => Query::compile_all(keys.as_ref(), selected, budget),
            SearchKey::Not(key) => Some(Query::Not(Box::new(Query::compile(key, selected, budget)?))),
            SearchKey::Or(a, b) => {
                let a = Query::compile(a, selected, budget)?;
                Some(Query::Any(Box::new(a), Box::new(Query::compile(b, selected, budget)?)))
            }
            SearchKey::All => Some(Query::Const(true)),
            // RFC 3501: NEW is RECENT UNSEEN, OLD is NOT RECENT.
            SearchKey::Recent => Some(Query::Recent),
            SearchKey::Old => Some(Query::Not(Box::new(Query::Recent))),
            SearchKey::New => Some(Query::All(vec![Query::Recent, Query::Flag("\\Seen".to_string(), false)])),
            SearchKey::SequenceSet(set) => Some(Query::Set(selected.ranges(set, false), false)),
            SearchKey::Uid(set) => Some(Query::Set(selected.ranges(set, true), true)),
            SearchKey::Answered => flag("\\Answered", true),
            SearchKey::Unanswered => flag("\\Answered", false),
            SearchKey::Deleted => flag("\\Deleted", true),
            SearchKey::Undeleted => flag("\\Deleted", false),
            SearchKey::Draft => flag("\\Draft", true),
            SearchKey::Undraft => flag("\\Draft", false),
            SearchKey::Flagged => flag("\\Flagged", true),
            SearchKey::Unflagged => flag("\\Flagged", false),
            SearchKey::Seen => flag("\\Seen", true),
            SearchKey::Unseen => flag("\\Seen", false),
            SearchKey::Keyword(k) => {
                budget.bytes = budget.bytes.checked_sub(k.as_ref().len())?;
                flag(k.as_ref(), true)
            }
            SearchKey::Unkeyword(k) => {
                budget.bytes = budget.bytes.checked_sub(k.as_ref().len())?;
                flag(k.as_ref(), false)
            }
            SearchKey::Larger(n) => Some(Query::Larger(u64::from(*n))),
            SearchKey::Smaller(n) => Some(Query::Smaller(u64::from(*n))),
            SearchKey::Before(d) => Some(Query::Received(Less, day(d))),
            SearchKey::On(d) => Some(Query::Received(Equal, day(d))),
            SearchKey::Since(d) => Some(Query::Received(Greater, day(d))),
            SearchKey::SentBefore(d) => Some(Query::Sent(Less, day(d))),
            SearchKey::SentOn(d) => Some(Query::Sent(Equal, day(d))),
            SearchKey::SentSince(d) => Some(Query::Sent(Greater, day(d))),
            SearchKey::Bcc(s) => Some(Query::Address("bcc", budget.needle(s.as_ref())?)),
            SearchKey::Cc(s) => Some(Query::Address("cc", budget.needle(s.as_ref())?)),
            SearchKey::From(s) => Some(Query::Address("from", budget.needle(s.as_ref())?)),
            SearchKey::To(s) => Some(Query::Address("to", budget.needle(s.as_ref())?)),
            SearchKey::Subject(s) => Some(Query::Header(b"subject".to_vec(), budget.needle(s.as_ref())?)),
            SearchKey::Header(name, s) => {
                budget.bytes = budget.bytes.checked_sub(name.as_ref().len())?;
                Some(Query::Header(name.as_ref().to_ascii_lowercase(), budget.needle(s.as_ref())?))
            }
            SearchKey::Body(s) => Some(Query::Body(budget.needle(s.as_ref())?)),
            SearchKey::Text(s) => Some(Query::Text(budget.needle(s.as_ref())?)),
            SearchKey::ModSequence { modseq, .. } => Some(Query::ModSeq(*modseq)),
            #[allow(unreachable_patterns)]
            _ => Some(Query::Const(false)),
        }
    }

    fn uses_modseq(&self) -> bool {
        match self {
            Query::All(queries) => queries.iter().any(Query::uses_modseq),
            Query::Any(a, b) => a.uses_modseq() || b.uses_modseq(),
            Query::Not(q) => q.uses_modseq(),
            Query::ModSeq(_) => true,
            _ => false,
        }
    }

    /// Whether answering needs the message itself, not only what the index knows.
    fn needs_message(&self) -> bool {
        match self {
            Query::All(queries) => queries.iter().any(Query::needs_message),
            Query::Any(a, b) => a.needs_message() || b.needs_message(),
            Query::Not(q) => q.needs_message(),
            Query::Header(..) | Query::Address(..) | Query::Body(_) | Query::Text(_) | Query::Sent(..) => true,
            _ => false,
        }
    }

    /// The sequence numbers (or UIDs) of the matching messages with their modseqs, and
    /// whether the content of any was gone (expunged meanwhile). Blocking: reads messages.
    fn run(&self, store: &Store, messages: &[Known], recent: &[(u32, u32)], by_uid: bool) -> Result<(Vec<(u32, u64)>, bool), crate::store::StoreError> {
        let needs_message = self.needs_message();
        let mut hits = Vec::new();
        let mut gone = false;
        for (index, known) in messages.iter().enumerate() {
            let message = match needs_message {
                true => store.blob(known.entry.blob_id)?.map(Content::new),
                false => None,
            };
            gone |= needs_message && message.is_none();
            let candidate = Candidate { index, recent: in_ranges(recent, known.uid), known, message: message.as_ref() };
            if candidate.matches(self) {
                hits.push((if by_uid { known.uid } else { index as u32 + 1 }, known.entry.modseq));
            }
        }
        Ok((hits, gone))
    }
}

/// A message's bytes and their ASCII lower-case copy, which the finders search; and its
/// address fields as parsed (lower-case field name, display name and address), when asked.
struct Content {
    raw: Vec<u8>,
    lower: Vec<u8>,
    addresses: std::cell::OnceCell<Vec<(String, String)>>,
}

impl Content {
    fn new(raw: Vec<u8>) -> Content {
        let lower = raw.to_ascii_lowercase();
        Content { raw, lower, addresses: std::cell::OnceCell::new() }
    }
}

struct Candidate<'a> {
    index: usize,
    recent: bool,
    known: &'a Known,
    message: Option<&'a Content>,
}

impl Candidate<'_> {
    fn matches(&self, query: &Query) -> bool {
        let entry = &self.known.entry;
        let received = || chrono::DateTime::from_timestamp(entry.received as i64, 0).map(|d| d.date_naive());
        match query {
            Query::All(queries) => queries.iter().all(|q| self.matches(q)),
            Query::Any(a, b) => self.matches(a) || self.matches(b),
            Query::Not(q) => !self.matches(q),
            Query::Const(value) => *value,
            Query::Flag(name, set) => has_flag(entry, name) == *set,
            Query::Set(ranges, by_uid) => ranges.contains(if *by_uid { self.known.uid } else { self.index as u32 + 1 }),
            Query::Larger(n) => entry.size > *n,
            Query::Smaller(n) => entry.size < *n,
            Query::Received(order, day) => received().is_some_and(|d| on_side(d, *order, *day)),
            Query::Sent(order, day) => self.sent().is_some_and(|d| on_side(d, *order, *day)),
            Query::ModSeq(modseq) => entry.modseq >= *modseq,
            Query::Recent => self.recent,
            Query::Header(name, needle) => self.header_contains(name, needle),
            Query::Address(name, needle) => self.header_contains(name.as_bytes(), needle) || self.address_contains(name, needle),
            Query::Body(needle) => {
                self.message.is_some_and(|m| needle.find(&m.lower[body_start(&m.raw)..]).is_some())
            }
            Query::Text(needle) => self.message.is_some_and(|m| needle.find(&m.lower).is_some()),
        }
    }

    /// Whether a field of this name contains `needle` (an empty needle: whether it exists).
    fn header_contains(&self, name: &[u8], needle: &Finder<'_>) -> bool {
        let Some(message) = self.message else { return false };
        let (fields, _) = split_header(&message.raw);
        fields.into_iter().any(|field| {
            field_name(&message.lower[field.clone()]) == name && needle.find(field_value(&message.lower[field])).is_some()
        })
    }

    /// Whether an address in a field of this name, as parsed, contains `needle`: its display
    /// name (decoded, lower-cased) or its address. The header is parsed once per message,
    /// however many keys ask.
    fn address_contains(&self, name: &str, needle: &Finder<'_>) -> bool {
        let Some(message) = self.message else { return false };
        let addresses = message.addresses.get_or_init(|| {
            let Some(parsed) = mail_parser::MessageParser::new().parse(&message.raw[..body_start(&message.raw)]) else { return Vec::new() };
            let mut out = Vec::new();
            for header in parsed.headers() {
                let mail_parser::HeaderValue::Address(list) = &header.value else { continue };
                for addr in list.iter() {
                    let text = format!("{} <{}>", addr.name.as_deref().unwrap_or(""), addr.address.as_deref().unwrap_or(""));
                    out.push((header.name.as_str().to_ascii_lowercase(), text.to_lowercase()));
                }
            }
            out
        });
        addresses.iter().any(|(field, text)| field == name && needle.find(text.as_bytes()).is_some())
    }

    /// The Date: header's day.
    fn sent(&self) -> Option<chrono::NaiveDate> {
        let raw = &self.message?.raw;
        let (fields, _) = split_header(raw);
        let field = fields.into_iter().map(|f| &raw[f]).find(|f| field_name(f).eq_ignore_ascii_case(b"date"))?;
        let value = std::str::from_utf8(field_value(field)).ok()?.split_whitespace().collect::<Vec<_>>().join(" ");
        chrono::DateTime::parse_from_rfc2822(&value).ok().map(|d| d.date_naive())
    }
}

/// BEFORE (`Less`: earlier than), ON (`Equal`) and SINCE (`Greater`: on or after).
fn on_side(date: chrono::NaiveDate, order: std::cmp::Ordering, day: chrono::NaiveDate) -> bool {
    match order {
        std::cmp::Ordering::Less => date < day,
        std::cmp::Ordering::Equal => date == day,
        std::cmp::Ordering::Greater => date >= day,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finders_match_case_insensitively_in_linear_time() {
        let mut budget = Budget { keys: 4, bytes: 16 };
        let finder = budget.needle(b"HeLLo").unwrap();
        let content = Content::new(b"Subject: x\r\n\r\nsay hello".to_vec());
        assert!(finder.find(&content.lower).is_some());
        // The worst case of a naive scan (a long run of near-matches) is one pass here.
        let haystack = Content::new([vec![b'a'; 1 << 20], b"b".to_vec()].concat());
        let mut budget = Budget { keys: 4, bytes: 1024 };
        assert!(budget.needle(&[b'A'; 1000]).unwrap().find(&haystack.lower).is_some());
        assert!(budget.needle(&[b'a'; 100]).is_none(), "over the byte budget");
    }
}
