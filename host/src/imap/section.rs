//! FETCH's body sections (RFC 3501 §6.4.5, RFC 9051 §6.4.5): `BODY[2.1.HEADER]` and the
//! like, through multiparts and into encapsulated `message/rfc822` messages at any depth.
//!
//! The path is walked one number at a time. Inside a message the numbers name the parts of
//! its multipart body (or, if it is not multipart, `1` names its body); a number after a
//! `message/rfc822` part names a part of the message it encapsulates, which is parsed in turn.
//! `HEADER`, `TEXT` and `HEADER.FIELDS` after a part number need that part to be a
//! `message/rfc822`: they then address the encapsulated message.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use crate::message::header::{body_start, select_fields};

/// Part numbers deeper than this address nothing: each level into an encapsulated message
/// parses that message, and a client chooses the path.
const MAX_PATH: usize = 16;

/// What follows the part numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Specifier<'a> {
    /// The part's body (or the whole message, with no part numbers).
    Whole,
    /// The part's own MIME header.
    Mime,
    Header,
    Text,
    /// HEADER.FIELDS (`false`) or HEADER.FIELDS.NOT (`true`) with these names.
    Fields(&'a [&'a [u8]], bool),
}

/// The bytes of a section of `raw`, or `None` when the message has no such section (a part
/// number past the last part, HEADER of a part that is no message). Callers answer `NIL`.
pub fn section(raw: &[u8], path: &[u32], specifier: Specifier<'_>) -> Option<Vec<u8>> {
    if path.len() > MAX_PATH {
        return None;
    }
    // The message the next part number refers into (parsed once), and where the walk is in it.
    let mut message: &[u8] = raw;
    let mut parsed: Option<Message<'_>> = None;
    let mut part: Option<Located> = None;
    for &number in path {
        // Past a message/rfc822 part: into the message it holds.
        if let Some(located) = &part
            && located.encapsulates
        {
            message = &message[located.body.clone()];
            (part, parsed) = (None, None);
        }
        if parsed.is_none() {
            parsed = Some(MessageParser::new().parse(message)?);
        }
        part = Some(child(parsed.as_ref()?, message.len(), part.as_ref(), number)?);
    }
    let Some(part) = part else { return Some(of_message(message, specifier)) };
    match specifier {
        Specifier::Whole => Some(message[part.body].to_vec()),
        Specifier::Mime => Some(message[part.header].to_vec()),
        _ if part.encapsulates => Some(of_message(&message[part.body], specifier)),
        _ => None,
    }
}

/// A part located inside the message being walked: byte ranges within it.
#[derive(Debug, Clone)]
struct Located {
    header: std::ops::Range<usize>,
    body: std::ops::Range<usize>,
    /// Index among the message's parts as mail-parser numbers them (0: the message itself).
    index: usize,
    /// `message/rfc822` (or `message/global`): its body is a message of its own.
    encapsulates: bool,
}

/// Part `number` of `within` (a part of the parsed message of `len` bytes; `None`: the
/// message itself).
fn child(parsed: &Message<'_>, len: usize, within: Option<&Located>, number: u32) -> Option<Located> {
    let index = within.map_or(0, |w| w.index);
    let parent = parsed.parts.get(index)?;
    let chosen = match &parent.body {
        PartType::Multipart(children) => *children.get((number as usize).checked_sub(1)?)? as usize,
        // A message that is not multipart has one part, its body: the message's own header
        // is that part's header.
        _ if within.is_none() && number == 1 => 0,
        _ => return None,
    };
    let part = parsed.parts.get(chosen)?;
    let encapsulates = matches!(part.body, PartType::Message(_))
        || part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global"))
        });
    let clamp = |at: u32| (at as usize).min(len);
    let (header_start, body_start, end) = (clamp(part.offset_header), clamp(part.offset_body), clamp(part.offset_end));
    Some(Located { header: header_start..body_start.max(header_start), body: body_start..end.max(body_start), index: chosen, encapsulates })
}

/// A section of a message as a whole: HEADER, TEXT, HEADER.FIELDS, or all of it.
fn of_message(message: &[u8], specifier: Specifier<'_>) -> Vec<u8> {
    match specifier {
        Specifier::Whole | Specifier::Mime => message.to_vec(),
        Specifier::Header => message[..body_start(message)].to_vec(),
        Specifier::Text => message[body_start(message)..].to_vec(),
        Specifier::Fields(names, exclude) => select_fields(message, names, exclude),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 text; 2 an encapsulated multipart message (2.1 text, 2.2 an encapsulated single-part
    /// message); 3 an encapsulated single-part message.
    const NESTED: &str = include_str!("../../tests/data/nested-rfc822.eml");

    fn get(path: &[u32], specifier: Specifier<'_>) -> Option<String> {
        section(NESTED.as_bytes(), path, specifier).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn sections_inside_encapsulated_messages() {
        assert_eq!(get(&[1], Specifier::Whole).as_deref(), Some("first"));
        assert_eq!(get(&[1], Specifier::Mime).as_deref(), Some("Content-Type: text/plain\r\n\r\n"));
        assert_eq!(get(&[2, 1], Specifier::Whole).as_deref(), Some("middle text"));
        assert_eq!(get(&[2], Specifier::Header).as_deref(), Some("From: middle@x.test\r\nSubject: middle\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n"));
        assert!(get(&[2], Specifier::Text).unwrap().starts_with("--m\r\nContent-Type: text/plain"));
        assert!(get(&[2], Specifier::Whole).unwrap().starts_with("From: middle@x.test\r\n"));
        assert_eq!(get(&[2, 2], Specifier::Mime).as_deref(), Some("Content-Type: message/rfc822\r\nContent-Description: innermost\r\n\r\n"));
        assert_eq!(get(&[2, 2], Specifier::Header).as_deref(), Some("From: inner@x.test\r\nSubject: inner\r\n\r\n"));
        assert_eq!(get(&[2, 2], Specifier::Text).as_deref(), Some("inner body"));
        assert_eq!(get(&[2, 2, 1], Specifier::Whole).as_deref(), Some("inner body"), "part 1 of a single-part message is its body");
        let subject: &[&[u8]] = &[b"SUBJECT"];
        assert_eq!(get(&[2, 2], Specifier::Fields(subject, false)).as_deref(), Some("Subject: inner\r\n\r\n"));
        assert_eq!(get(&[2, 2], Specifier::Fields(subject, true)).as_deref(), Some("From: inner@x.test\r\n\r\n"));
        assert_eq!(get(&[3, 1], Specifier::Whole).as_deref(), Some("third body"));
        assert_eq!(get(&[3], Specifier::Header).as_deref(), Some("Subject: third\r\n\r\n"));
        assert_eq!(get(&[], Specifier::Fields(subject, false)).as_deref(), Some("Subject: outer\r\n\r\n"));
    }

    #[test]
    fn sections_that_do_not_exist() {
        assert_eq!(get(&[4], Specifier::Whole), None, "past the last part");
        assert_eq!(get(&[1, 1], Specifier::Whole), None, "a text part has no parts");
        assert_eq!(get(&[1], Specifier::Header), None, "HEADER of a part that is no message");
        assert_eq!(get(&[2, 2, 2], Specifier::Whole), None);
        assert_eq!(get(&[2; 17], Specifier::Whole), None, "too deep");
        let single = b"Subject: s\r\n\r\nbody\r\n";
        assert_eq!(section(single, &[1], Specifier::Whole).as_deref(), Some(&b"body\r\n"[..]));
        assert_eq!(section(single, &[2], Specifier::Whole), None);
    }
}
