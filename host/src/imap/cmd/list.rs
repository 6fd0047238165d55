//! LIST and LSUB, with the special-use attributes of RFC 6154 (Drafts, Junk, Trash, Sent).
//! imap-codec does not parse LIST-EXTENDED (`LIST (SPECIAL-USE) "" *`), which clients use
//! to find those folders: such commands are rewritten to a plain LIST first.

use std::collections::HashSet;

use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{Atom, QuotedChar, Tag};
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::Data;

use super::info::DELIMITER;
use crate::imap::respond;
use crate::imap::session::{Session, decode_command};
use crate::store::DEFAULT_MAILBOXES;

/// What a LIST asks for beyond names matching a pattern: LSUB, and LIST-EXTENDED's selection
/// and return options (RFC 5258) that clients send, SPECIAL-USE (RFC 6154) and SUBSCRIBED.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(in crate::imap) struct Selection {
    /// LSUB: subscribed names, answered with `* LSUB`.
    pub lsub: bool,
    /// `LIST (SUBSCRIBED)`: subscribed names, with `\Subscribed` (and `\NonExistent`).
    pub subscribed: bool,
    /// `LIST (SPECIAL-USE)`: only mailboxes with a special use.
    pub special_use: bool,
    /// `RETURN (SUBSCRIBED)`: mark the subscribed ones.
    pub return_subscribed: bool,
}

impl Session {
    pub(in crate::imap) async fn list(&mut self, tag: &Tag<'static>, reference: &Mailbox<'static>, wildcard: &ListMailbox<'static>, selection: Selection) {
        let Some(account_id) = self.account.as_ref().map(|a| a.id) else { return };
        let reference = match reference {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
        };
        let pattern = match wildcard {
            ListMailbox::Token(token) => String::from_utf8_lossy(token.as_ref()).into_owned(),
            ListMailbox::String(string) => String::from_utf8_lossy(string.as_ref()).into_owned(),
        };
        let delimiter = Some(QuotedChar::unvalidated(DELIMITER));
        let done = if selection.lsub { "Lsub completed" } else { "List completed" };
        if pattern.is_empty() {
            // `LIST "" ""` asks for the hierarchy delimiter.
            let mailbox = Mailbox::try_from("").unwrap_or(Mailbox::Inbox);
            let items = vec![FlagNameAttribute::Noselect];
            self.out.data(if selection.lsub { Data::Lsub { items, delimiter, mailbox } } else { Data::List { items, delimiter, mailbox } });
            return self.out.ok(tag, None, done);
        }
        let pattern = format!("{reference}{pattern}");
        // Matching is quadratic in the pattern and the name (a client's pattern may be 64 KiB):
        // on the blocking pool, with the pattern first made as short as it can be.
        let pattern = simplify(&pattern);
        let store = self.relay.store.clone();
        let listed = store
            .run(move |s| -> Result<Vec<(String, Vec<&'static str>)>, crate::store::StoreError> {
                let existing: Vec<String> = s.mailboxes(account_id)?.into_iter().map(|m| m.name).collect();
                let subscribed = s.subscriptions(account_id)?;
                let names = if selection.lsub || selection.subscribed { &subscribed } else { &existing };
                let (existing, subscribed): (HashSet<&String>, HashSet<&String>) = (existing.iter().collect(), subscribed.iter().collect());
                Ok(names
                    .iter()
                    .filter(|name| matches(&pattern, name))
                    .filter_map(|name| {
                        let exists = existing.contains(name);
                        let use_ = special_use(name).filter(|_| exists);
                        if selection.special_use && use_.is_none() {
                            return None;
                        }
                        let mut attributes: Vec<&'static str> = use_.into_iter().collect();
                        match exists {
                            false if selection.lsub => attributes.push("Noselect"),
                            false => attributes.push("NonExistent"),
                            true => {}
                        }
                        if (selection.subscribed || selection.return_subscribed) && subscribed.contains(name) {
                            attributes.push("Subscribed");
                        }
                        Some((name.clone(), attributes))
                    })
                    .collect())
            })
            .await;
        let mut names = match listed {
            Ok(names) => names,
            Err(e) => return self.store_failed(tag, e),
        };
        // INBOX first, then by name.
        names.sort_by_key(|(name, _)| (name != "INBOX", name.clone()));
        for (name, attributes) in names {
            let items = attributes.into_iter().filter_map(|a| Atom::try_from(a).ok()).map(FlagNameAttribute::from).collect();
            let Ok(mailbox) = Mailbox::try_from(name) else { continue };
            let data = if selection.lsub {
                Data::Lsub { items, delimiter, mailbox }
            } else {
                Data::List { items, delimiter, mailbox }
            };
            self.out.data(data);
        }
        self.out.ok(tag, None, done);
    }

    /// A LIST-EXTENDED command, rewritten by [`extended_list`].
    pub(in crate::imap) async fn list_extended(&mut self, command: Command<'static>, selection: Selection) {
        let tag = command.tag;
        if self.account.is_none() {
            return self.out.no(&tag, None, respond::NOT_AUTHENTICATED);
        }
        match command.body {
            CommandBody::List { reference, mailbox_wildcard } => self.list(&tag, &reference, &mailbox_wildcard, selection).await,
            _ => self.out.bad(Some(&tag), None, respond::BAD_COMMAND),
        }
    }
}

/// The special-use attribute of the default folders.
fn special_use(name: &str) -> Option<&'static str> {
    DEFAULT_MAILBOXES.iter().find(|(n, _)| *n == name).and_then(|(_, use_)| use_.map(|u| u.trim_start_matches('\\')))
}

/// IMAP list patterns: `*` matches anything, `%` anything but the hierarchy delimiter.
/// INBOX matches case-insensitively.
/// Pattern x name steps at most, whatever the client sends (a backtracking matcher would
/// take exponential time on a pattern of many stars).
/// A pattern that matches the same names: runs of wildcards as one (`*` if the run has one).
fn simplify(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len().min(4096));
    let mut run: Option<char> = None;
    for c in pattern.chars() {
        match c {
            '*' | '%' => run = Some(if c == '*' || run == Some('*') { '*' } else { '%' }),
            _ => {
                out.extend(run.take());
                out.push(c);
            }
        }
    }
    out.extend(run);
    out
}

fn matches(pattern: &str, name: &str) -> bool {
    if name == "INBOX" && pattern.eq_ignore_ascii_case("INBOX") {
        return true;
    }
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // More literal characters than the name has: no match, and no work.
    if p.iter().filter(|&&c| c != b'*' && c != b'%').count() > n.len() {
        return false;
    }
    // `rest[j]`: whether the pattern from the current position on matches `n[j..]`.
    let mut rest = vec![false; n.len() + 1];
    rest[n.len()] = true;
    for &c in p.iter().rev() {
        let mut here = vec![false; n.len() + 1];
        for j in (0..=n.len()).rev() {
            let next = n.get(j);
            here[j] = match c {
                b'*' => rest[j] || (next.is_some() && here[j + 1]),
                b'%' => rest[j] || (next.is_some_and(|&b| b != DELIMITER as u8) && here[j + 1]),
                c => next == Some(&c) && rest[j + 1],
            };
        }
        rest = here;
    }
    rest[0]
}

/// `tag LIST [(selection)] reference pattern [RETURN (options)]` as a plain LIST command,
/// and what its options ask for.
pub(in crate::imap) fn extended_list(message: &[u8]) -> Option<(Command<'static>, Selection)> {
    let text = std::str::from_utf8(message).ok()?.trim_end();
    let (tag, rest) = text.split_once(' ')?;
    let (command, rest) = rest.split_once(' ')?;
    let mut rest = rest.trim_start();
    if !command.eq_ignore_ascii_case("LIST") {
        return None;
    }
    let has = |options: &str, name: &str| options.split_whitespace().any(|o| o.eq_ignore_ascii_case(name));
    let mut selection = Selection::default();
    let selects = rest.starts_with('(');
    if selects {
        let close = rest.find(')')?;
        selection.special_use = has(&rest[1..close], "SPECIAL-USE");
        selection.subscribed = has(&rest[1..close], "SUBSCRIBED");
        rest = &rest[close + 1..];
    }
    let mut arguments = rest.trim().to_string();
    match arguments.to_ascii_uppercase().rfind(" RETURN (") {
        Some(at) => {
            selection.return_subscribed = has(arguments[at + 9..].trim_end_matches(')'), "SUBSCRIBED");
            arguments.truncate(at);
        }
        // Neither a selection nor return options: not LIST-EXTENDED, just bad.
        None if !selects => return None,
        None => {}
    }
    let command = decode_command(format!("{tag} LIST {arguments}\r\n").as_bytes())?;
    Some((command, selection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_simplified_without_changing_what_they_match() {
        assert_eq!(simplify("a**%*b%%c*"), "a*b%c*");
        let long = format!("{}x", "*%".repeat(30_000));
        assert_eq!(simplify(&long), "*x");
        assert!(matches(&simplify(&long), "Archive/x"));
        assert!(!matches(&"y".repeat(2000), "Archive"));
    }

    #[test]
    fn patterns() {
        assert!(matches("*", "INBOX"));
        assert!(matches("inbox", "INBOX"));
        assert!(matches("%", "Sent"));
        assert!(!matches("%", "Archive/2024"));
        assert!(matches("Archive/%", "Archive/2024"));
        assert!(matches("*24", "Archive/2024"));
        assert!(!matches("Trash", "Junk"));
        assert!(matches("A%c", "Abc") && !matches("A%c", "A/c") && matches("A*c", "A/c"));
        assert!(!matches(&format!("{}x", "*".repeat(5000)), "Trash"), "quickly");
    }

    #[test]
    fn extended_list_is_rewritten() {
        let (command, selection) = extended_list(b"a1 LIST (SPECIAL-USE) \"\" \"*\"\r\n").unwrap();
        assert!(selection.special_use && !selection.subscribed);
        assert!(matches!(command.body, CommandBody::List { .. }));
        let (_, selection) = extended_list(b"a2 LIST () \"\" \"%\" RETURN (SPECIAL-USE)\r\n").unwrap();
        assert_eq!(selection, Selection::default());
        let (_, selection) = extended_list(b"a3 LIST (subscribed) \"\" \"*\"\r\n").unwrap();
        assert!(selection.subscribed);
        let (_, selection) = extended_list(b"a4 LIST \"\" \"*\" RETURN (CHILDREN SUBSCRIBED)\r\n").unwrap();
        assert!(selection.return_subscribed && !selection.subscribed);
        assert!(extended_list(b"a5 LIST () \"\" \"*\"\r\n").is_some());
        assert!(extended_list(b"a6 LIST \"\" \"*\" EXTRA\r\n").is_none(), "not LIST-EXTENDED");
    }
}
