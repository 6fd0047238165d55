//! One message, parsed once by the relay: the read-only view every policy asks questions of.
//! The policy SDK's test helpers use the same code natively, so a policy's unit tests see a
//! message exactly as the relay shows it.
//!
//! Parsing happens once per message whatever the number of policies; bodies stay in the raw
//! buffer (or, when a transfer encoding had to be undone, in one decoded copy) and reach a
//! policy only when it asks for them.

pub mod armor;

use std::ops::Range;
use std::sync::OnceLock;

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

pub use armor::{Armored, PacketInfo};

/// A header field: its name as written and its unfolded raw value.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub value: String,
    /// Lower-case addresses, for fields mail-parser reads as address lists.
    addresses: Option<Vec<String>>,
}

#[derive(Debug)]
enum Body {
    Multipart,
    /// A range of the raw message (no transfer encoding to undo).
    Raw(Range<usize>),
    Decoded(Vec<u8>),
}

#[derive(Debug)]
pub struct Part {
    pub parent: Option<u32>,
    /// Lower-case `type/subtype`.
    pub content_type: String,
    pub children: Vec<u32>,
    pub fields: Vec<Field>,
    body: Body,
    armor: OnceLock<Result<Armored, String>>,
}

/// A parsed message: the raw bytes and where each part lies in them. Share it in an `Arc`.
#[derive(Debug)]
pub struct ParsedMessage {
    raw: Vec<u8>,
    parts: Vec<Part>,
}

#[derive(Debug)]
pub struct Unparseable;

impl std::fmt::Display for Unparseable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("message could not be parsed")
    }
}

impl std::error::Error for Unparseable {}

/// MIME parts a message may have, and how deep they may nest (Postfix's mime_nesting_limit).
/// Real mail stays far below; a message beyond is refused as unparseable, rather than making
/// every policy walk thousands of parts within its deadline.
pub const MAX_PARTS: usize = 1000;
pub const MAX_DEPTH: usize = 100;

impl ParsedMessage {
    /// Parse `raw`, keeping it as it is: a `Vec` is taken over, not copied (a message may be
    /// 30 MB; share the parsed message in an `Arc`).
    pub fn parse(raw: impl Into<Vec<u8>>) -> Result<ParsedMessage, Unparseable> {
        let raw: Vec<u8> = raw.into();
        let message = MessageParser::new().parse(&raw[..]).ok_or(Unparseable)?;
        if message.parts.is_empty() || message.parts.len() > MAX_PARTS {
            return Err(Unparseable);
        }
        let base = raw.as_ptr() as usize;
        let mut parts: Vec<Part> = message
            .parts
            .iter()
            .map(|part| {
                let (children, body) = match &part.body {
                    PartType::Multipart(children) => (children.clone(), Body::Multipart),
                    PartType::Text(text) | PartType::Html(text) => (Vec::new(), body_of(base, raw.len(), text.as_bytes())),
                    PartType::Binary(bytes) | PartType::InlineBinary(bytes) => (Vec::new(), body_of(base, raw.len(), bytes)),
                    // A nested message is a leaf here: its body is the message as it was sent.
                    PartType::Message(_) => (Vec::new(), Body::Raw(part.offset_body as usize..part.offset_end as usize)),
                };
                let content_type = part
                    .content_type()
                    .map(|ct| match ct.subtype() {
                        Some(sub) => format!("{}/{}", ct.ctype(), sub),
                        None => ct.ctype().to_string(),
                    })
                    .unwrap_or_else(|| "text/plain".to_string())
                    .to_ascii_lowercase();
                let fields = part
                    .headers
                    .iter()
                    .map(|h| field_of(&raw, h.offset_field as usize, h.offset_start as usize, h.offset_end as usize, &h.value))
                    .collect();
                Part {
                    parent: None,
                    content_type,
                    children,
                    fields,
                    body,
                    armor: OnceLock::new(),
                }
            })
            .collect();
        for index in 0..parts.len() {
            for child in parts[index].children.clone() {
                if let Some(part) = parts.get_mut(child as usize) {
                    part.parent = Some(index as u32);
                }
            }
        }
        let parsed = ParsedMessage { raw, parts };
        if (0..parsed.parts.len()).any(|part| parsed.depth(part) > MAX_DEPTH) {
            return Err(Unparseable);
        }
        Ok(parsed)
    }

    /// How many ancestors a part has (stops counting past MAX_DEPTH).
    fn depth(&self, part: usize) -> usize {
        let mut depth = 0;
        let mut at = self.parts[part].parent;
        while let Some(parent) = at {
            depth += 1;
            if depth > MAX_DEPTH {
                break;
            }
            at = self.parts.get(parent as usize).and_then(|p| p.parent);
        }
        depth
    }

    /// The raw bytes back, without a copy.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn size(&self) -> u64 {
        self.raw.len() as u64
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Top-level header fields.
    pub fn fields(&self) -> &[Field] {
        &self.parts[0].fields
    }

    /// The first top-level field with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.part_header(0, name)
    }

    pub fn part_header(&self, part: u32, name: &str) -> Option<&str> {
        let part = self.parts.get(part as usize)?;
        part.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value.as_str())
    }

    /// The addresses of the first top-level field with this name.
    pub fn addresses(&self, name: &str) -> Vec<String> {
        self.fields()
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .and_then(|f| f.addresses.clone())
            .unwrap_or_default()
    }

    /// A leaf part's decoded body.
    pub fn body(&self, part: u32) -> Option<&[u8]> {
        match &self.parts.get(part as usize)?.body {
            Body::Multipart => None,
            Body::Raw(range) => self.raw.get(range.clone()),
            Body::Decoded(bytes) => Some(bytes),
        }
    }

    /// A leaf part's decoded body, cut at `max_bytes` (what a policy's `body` call gets).
    pub fn body_prefix(&self, part: u32, max_bytes: u64) -> Option<&[u8]> {
        let body = self.body(part)?;
        Some(&body[..body.len().min(usize::try_from(max_bytes).unwrap_or(usize::MAX))])
    }

    /// A leaf part's body read as OpenPGP armor; computed once, shared by all policies.
    pub fn armor(&self, part: u32) -> Result<&Armored, String> {
        let body = self.body(part).ok_or_else(|| format!("part {part} has no body"))?;
        let slot = &self.parts[part as usize].armor;
        slot.get_or_init(|| armor::read(body)).as_ref().map_err(Clone::clone)
    }
}

/// A body mail-parser borrowed from the raw message stays there; a decoded one is kept.
fn body_of(base: usize, len: usize, bytes: &[u8]) -> Body {
    let start = (bytes.as_ptr() as usize).wrapping_sub(base);
    if start <= len && bytes.len() <= len - start && !bytes.is_empty() {
        Body::Raw(start..start + bytes.len())
    } else {
        Body::Decoded(bytes.to_vec())
    }
}

fn field_of(raw: &[u8], field: usize, start: usize, end: usize, value: &HeaderValue<'_>) -> Field {
    let name = String::from_utf8_lossy(raw.get(field..start).unwrap_or_default());
    let name = name.trim_end().trim_end_matches(':').trim_end().to_string();
    let text = String::from_utf8_lossy(raw.get(start..end).unwrap_or_default());
    let lower = |addr: &mail_parser::Addr<'_>| addr.address.as_deref().map(str::to_ascii_lowercase);
    let addresses = match value {
        HeaderValue::Address(Address::List(list)) => Some(list.iter().filter_map(lower).collect()),
        HeaderValue::Address(Address::Group(groups)) => {
            Some(groups.iter().flat_map(|g| g.addresses.iter()).filter_map(lower).collect())
        }
        _ => None,
    };
    Field { name, value: unfold(&text), addresses }
}

/// RFC 5322 unfolding: line breaks inside a field value are removed.
fn unfold(text: &str) -> String {
    text.split(['\r', '\n']).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = "From: \"Alice\" <Alice@Example.org>\r\nTo: \"hidden-recipients\": ;\r\nSubject: a\r\n long one\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
        --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n";

    #[test]
    fn fields_parts_and_bodies() {
        let m = ParsedMessage::parse(MIXED.as_bytes().to_vec()).unwrap();
        assert_eq!(m.header("subject"), Some("a long one"));
        assert_eq!(m.addresses("From"), ["alice@example.org"]);
        assert!(m.addresses("to").is_empty(), "an empty group has no addresses");
        let types: Vec<_> = m.parts().iter().map(|p| p.content_type.as_str()).collect();
        assert_eq!(types, ["multipart/mixed", "text/plain", "application/octet-stream"]);
        assert_eq!(m.parts()[0].children, [1, 2]);
        assert_eq!(m.parts()[2].parent, Some(0));
        assert_eq!(m.body(1), Some(&b"hello"[..]));
        assert_eq!(m.body(2), Some(&b"hi"[..]), "transfer encoding undone");
        assert_eq!(m.body(0), None, "multipart parts have no body");
        assert!(m.armor(1).is_err());
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut text = String::from("From: a@c.test\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
        for level in 1..depth {
            text.push_str(&format!("--b{}\r\nContent-Type: multipart/mixed; boundary=b{level}\r\n\r\n", level - 1));
        }
        text.into_bytes()
    }

    #[test]
    fn too_many_or_too_deeply_nested_parts_are_unparseable() {
        assert!(ParsedMessage::parse(nested(MAX_DEPTH)).is_ok());
        assert!(ParsedMessage::parse(nested(MAX_DEPTH + 2)).is_err());
        let mut wide = String::from("From: a@c.test\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n");
        wide.push_str(&"--w\r\n\r\nx\r\n".repeat(MAX_PARTS + 1));
        wide.push_str("--w--\r\n");
        assert!(ParsedMessage::parse(wide.into_bytes()).is_err());
    }
}
