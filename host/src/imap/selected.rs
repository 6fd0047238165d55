//! The selected mailbox as one session knows it: messages in sequence order with their flags,
//! and how to bring that knowledge up to date (EXISTS, EXPUNGE and FLAGS updates) when other
//! sessions or deliveries changed the mailbox.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::store::{Mailbox, MessageEntry};

/// Keywords a session lists in FLAGS at most: twice what one mailbox may use at once.
const MAX_ANNOUNCED_KEYWORDS: usize = 2 * crate::store::limits::KEYWORDS;

#[derive(Debug, Clone)]
pub struct Known {
    pub uid: u32,
    pub entry: MessageEntry,
}

pub struct Selected {
    pub mailbox_id: u32,
    pub name: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    /// In sequence order (ascending UID).
    pub messages: Vec<Known>,
    /// The keywords (flags other than the system flags) the session announced in FLAGS: those
    /// in use when it selected the mailbox and any it has seen appear since.
    pub keywords: Vec<String>,
    /// UIDs recent to this session (RFC 3501 `\\Recent`), as half-open ranges in ascending
    /// order: what it claimed when it selected the mailbox and as new messages came.
    pub recent: Vec<(u32, u32)>,
}

/// What changed since the session last looked, in the order it must be told.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Sequence number of an expunged message (highest first, so none renumbers another).
    Expunge(u32),
    Exists(u32),
    /// Index of a message whose flags changed.
    Flags(usize),
    /// Keywords new to the session are in use: FLAGS (and PERMANENTFLAGS) again, first.
    Keywords,
}

impl Selected {
    pub fn new(mailbox: &Mailbox, read_only: bool, entries: Vec<(u32, MessageEntry)>) -> Selected {
        let mut selected = Selected {
            mailbox_id: mailbox.id,
            name: mailbox.name.clone(),
            read_only,
            uidvalidity: mailbox.uidvalidity,
            uidnext: mailbox.uidnext,
            highest_modseq: mailbox.highest_modseq,
            messages: entries.into_iter().map(|(uid, entry)| Known { uid, entry }).collect(),
            keywords: Vec::new(),
            recent: Vec::new(),
        };
        for index in 0..selected.messages.len() {
            selected.learn_keywords(index);
        }
        selected
    }

    /// UIDs from `from` below `to` are recent to this session.
    pub fn add_recent(&mut self, from: u32, to: u32) {
        if from < to {
            self.recent.push((from, to));
        }
    }

    pub fn is_recent(&self, uid: u32) -> bool {
        in_ranges(&self.recent, uid)
    }

    /// How many of the messages the session knows are recent to it.
    pub fn recent_count(&self) -> u32 {
        match self.recent.is_empty() {
            true => 0,
            false => self.messages.iter().filter(|m| self.is_recent(m.uid)).count() as u32,
        }
    }

    /// Note the keywords of a message; true if one was new to the session.
    pub fn learn_keywords(&mut self, index: usize) -> bool {
        let Some(known) = self.messages.get(index) else { return false };
        let mut learned = false;
        for flag in &known.entry.flags {
            // Keywords only (no `\\`-flags), and a bounded list however many a client cycles
            // through a mailbox (it may hold 64 at a time).
            let keyword = crate::store::is_keyword(flag) && !flag.starts_with('\\');
            if keyword && self.keywords.len() < MAX_ANNOUNCED_KEYWORDS && !self.keywords.iter().any(|k| k.eq_ignore_ascii_case(flag)) {
                self.keywords.push(flag.clone());
                learned = true;
            }
        }
        learned
    }

    /// Learn the keywords of the messages at these indices; `Change::Keywords` first if any
    /// was new.
    fn with_keywords(&mut self, mut changes: Vec<Change>, indices: impl Iterator<Item = usize>) -> Vec<Change> {
        let mut learned = false;
        for index in indices {
            learned |= self.learn_keywords(index);
        }
        if learned {
            changes.insert(0, Change::Keywords);
        }
        changes
    }

    pub fn exists(&self) -> u32 {
        self.messages.len() as u32
    }

    /// Take in the mailbox as stored now; returns what to announce.
    pub fn sync(&mut self, mailbox: &Mailbox, entries: Vec<(u32, MessageEntry)>) -> Vec<Change> {
        let mut changes = Vec::new();
        let current: std::collections::HashMap<u32, &MessageEntry> = entries.iter().map(|(uid, e)| (*uid, e)).collect();
        for index in (0..self.messages.len()).rev() {
            if !current.contains_key(&self.messages[index].uid) {
                changes.push(Change::Expunge(index as u32 + 1));
            }
        }
        // One pass: removing one by one would move the rest of the mailbox for every expunge.
        self.messages.retain(|known| current.contains_key(&known.uid));
        for (index, known) in self.messages.iter_mut().enumerate() {
            if let Some(entry) = current.get(&known.uid)
                && entry.flags != known.entry.flags
            {
                known.entry = (*entry).clone();
                changes.push(Change::Flags(index));
            }
        }
        let highest = self.messages.last().map_or(0, |m| m.uid);
        let before = self.messages.len();
        self.messages.extend(entries.into_iter().filter(|(uid, _)| *uid > highest).map(|(uid, entry)| Known { uid, entry }));
        if self.messages.len() != before {
            changes.push(Change::Exists(self.exists()));
        }
        self.uidnext = mailbox.uidnext;
        self.highest_modseq = mailbox.highest_modseq;
        let touched: Vec<usize> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Flags(index) => Some(*index),
                _ => None,
            })
            .chain(before..self.messages.len())
            .collect();
        self.with_keywords(changes, touched.into_iter())
    }

    /// Take in messages that were only added since the session looked.
    pub fn append(&mut self, mailbox: &Mailbox, new: Vec<(u32, MessageEntry)>) -> Vec<Change> {
        let highest = self.messages.last().map_or(0, |m| m.uid);
        let before = self.messages.len();
        self.messages.extend(new.into_iter().filter(|(uid, _)| *uid > highest).map(|(uid, entry)| Known { uid, entry }));
        self.uidnext = mailbox.uidnext;
        self.highest_modseq = mailbox.highest_modseq;
        let changes = if self.messages.len() == before { Vec::new() } else { vec![Change::Exists(self.exists())] };
        self.with_keywords(changes, before..self.messages.len())
    }

    /// The indices of the messages a sequence set names, in ascending order. Linear in the
    /// set and the answer, not in their product: a client may send thousands of ranges.
    pub fn resolve(&self, set: &SequenceSet, by_uid: bool) -> Vec<usize> {
        let mut indices = Vec::new();
        for &(lo, hi) in &self.ranges(set, by_uid).0 {
            let (start, end) = match by_uid {
                true => (self.messages.partition_point(|m| m.uid < lo), self.messages.partition_point(|m| m.uid <= hi)),
                false => ((lo.max(1) - 1) as usize, (hi as usize).min(self.messages.len())),
            };
            indices.extend(start..end.max(start));
        }
        indices
    }

    /// The set as sorted, disjoint ranges; `*` is the largest sequence number or UID in use.
    pub fn ranges(&self, set: &SequenceSet, by_uid: bool) -> Ranges {
        let largest = if by_uid { self.messages.last().map_or(0, |m| m.uid) } else { self.exists() };
        let value = |v: &SeqOrUid| match v {
            SeqOrUid::Value(n) => n.get(),
            SeqOrUid::Asterisk => largest,
        };
        let mut ranges: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|sequence| match sequence {
                Sequence::Single(v) => (value(v), value(v)),
                Sequence::Range(a, b) => {
                    let (a, b) = (value(a), value(b));
                    (a.min(b), a.max(b))
                }
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some((_, end)) if lo <= end.saturating_add(1) => *end = (*end).max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ranges(merged)
    }

    /// The index of the message with this UID.
    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }
}

/// Whether `uid` is in one of these ascending, disjoint, half-open ranges.
pub fn in_ranges(ranges: &[(u32, u32)], uid: u32) -> bool {
    let after = ranges.partition_point(|&(from, _)| from <= uid);
    after > 0 && uid < ranges[after - 1].1
}

/// Sorted, disjoint, inclusive ranges of sequence numbers or UIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    pub fn contains(&self, n: u32) -> bool {
        let after = self.0.partition_point(|&(lo, _)| lo <= n);
        after > 0 && self.0[after - 1].1 >= n
    }
}

/// Ascending UIDs as runs of consecutive numbers.
fn runs(uids: &[u32]) -> Vec<(NonZeroU32, NonZeroU32)> {
    let mut runs: Vec<(NonZeroU32, NonZeroU32)> = Vec::new();
    for uid in uids.iter().copied().filter_map(NonZeroU32::new) {
        match runs.last_mut() {
            Some((_, end)) if end.get().checked_add(1) == Some(uid.get()) => *end = uid,
            _ => runs.push((uid, uid)),
        }
    }
    runs
}

/// A sequence set of UIDs (for the MODIFIED code), from ascending UIDs.
pub fn uid_set(uids: &[u32]) -> Option<SequenceSet> {
    let sequences: Vec<Sequence> = runs(uids)
        .into_iter()
        .map(|(start, end)| match start == end {
            true => Sequence::Single(SeqOrUid::Value(start)),
            false => Sequence::Range(SeqOrUid::Value(start), SeqOrUid::Value(end)),
        })
        .collect();
    SequenceSet::try_from(sequences).ok()
}

/// A UIDPLUS set (for COPYUID), from UIDs in the order the copies were made.
pub fn uidplus_set(uids: &[u32]) -> Option<UidSet> {
    let elements: Vec<UidElement> = runs(uids)
        .into_iter()
        .map(|(start, end)| if start == end { UidElement::Single(start) } else { UidElement::Range(start, end) })
        .collect();
    Vec1::try_from(elements).ok().map(UidSet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(flags: &[&str]) -> MessageEntry {
        MessageEntry { blob_id: 1, size: 1, received: 0, flags: flags.iter().map(|f| f.to_string()).collect(), modseq: 1 }
    }

    fn mailbox() -> Mailbox {
        Mailbox { id: 1, name: "INBOX".into(), uidvalidity: 7, uidnext: 10, highest_modseq: 5, legacy_subscribed: false }
    }

    #[test]
    fn sync_reports_expunges_new_mail_and_flags() {
        let mut selected = Selected::new(&mailbox(), false, vec![(2, entry(&[])), (4, entry(&[])), (6, entry(&[]))]);
        let changes = selected.sync(&mailbox(), vec![(4, entry(&["\\Seen"])), (7, entry(&[])), (8, entry(&[]))]);
        assert_eq!(changes, [Change::Expunge(3), Change::Expunge(1), Change::Flags(0), Change::Exists(3)]);
        assert_eq!(selected.messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [4, 7, 8]);
        assert!(selected.sync(&mailbox(), vec![(4, entry(&["\\Seen"])), (7, entry(&[])), (8, entry(&[]))]).is_empty());
    }

    #[test]
    fn new_keywords_are_announced_first() {
        let mut selected = Selected::new(&mailbox(), false, vec![(2, entry(&["$Label1", "\\Seen"])), (4, entry(&[]))]);
        assert_eq!(selected.keywords, ["$Label1"]);
        let changes = selected.sync(&mailbox(), vec![(2, entry(&["$label1"])), (4, entry(&["Work"]))]);
        assert_eq!(changes, [Change::Keywords, Change::Flags(0), Change::Flags(1)]);
        let changes = selected.append(&mailbox(), vec![(5, entry(&["work", "Home"]))]);
        assert_eq!(changes, [Change::Keywords, Change::Exists(3)]);
        assert_eq!(selected.keywords, ["$Label1", "Work", "Home"], "case-insensitively once");
        assert_eq!(selected.append(&mailbox(), vec![(6, entry(&["home"]))]), [Change::Exists(4)]);
    }

    #[test]
    fn recent_ranges() {
        let mut selected = Selected::new(&mailbox(), false, vec![(2, entry(&[])), (4, entry(&[])), (6, entry(&[])), (9, entry(&[]))]);
        selected.add_recent(4, 7);
        selected.add_recent(8, 8);
        selected.add_recent(9, 10);
        assert_eq!(selected.recent, [(4, 7), (9, 10)]);
        assert!(!selected.is_recent(2) && selected.is_recent(4) && selected.is_recent(6) && !selected.is_recent(7) && selected.is_recent(9));
        assert_eq!(selected.recent_count(), 3);
    }

    #[test]
    fn sequence_sets() {
        let selected = Selected::new(&mailbox(), false, vec![(2, entry(&[])), (4, entry(&[])), (9, entry(&[]))]);
        let set = |s: &str| SequenceSet::try_from(s).unwrap();
        assert_eq!(selected.resolve(&set("2:*"), false), [1, 2]);
        assert_eq!(selected.resolve(&set("3:5"), true), [1]);
        assert_eq!(selected.resolve(&set("*"), true), [2]);
        assert_eq!(selected.resolve(&set("10:4294967295"), true), Vec::<usize>::new());
        assert_eq!(selected.resolve(&set("9:1"), true), [0, 1, 2], "reversed ranges count");
        assert_eq!(selected.resolve(&set("4,1:2,2,9:4,3"), true), [0, 1, 2], "overlaps count once");
        assert_eq!(selected.resolve(&set("3,1,5:7"), false), [0, 2]);
        let ranges = selected.ranges(&set("7:9,1,3:4,5"), true);
        assert_eq!(ranges, Ranges(vec![(1, 1), (3, 5), (7, 9)]), "sorted, adjacent ones merged");
        assert!(ranges.contains(3) && ranges.contains(9) && ranges.contains(1) && ranges.contains(5));
        assert!(!ranges.contains(2) && !ranges.contains(6) && !ranges.contains(10) && !ranges.contains(0));
        assert_eq!(runs(&[1, 2, 3, 5, 7, 8]).iter().map(|(a, b)| (a.get(), b.get())).collect::<Vec<_>>(), [(1, 3), (5, 5), (7, 8)]);
        assert!(uid_set(&[]).is_none() && uidplus_set(&[4]).is_some());
    }
}
