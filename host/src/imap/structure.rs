//! ENVELOPE and BODYSTRUCTURE for standard IMAP clients (mail readers show lists and pick
//! attachments with them; the Delta Chat app does not use them). Computed from the stored
//! message with mail-parser.

use imap_codec::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_codec::imap_types::core::{IString, NString, Vec1};
use imap_codec::imap_types::envelope::{Address, Envelope};
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::address;
use crate::message::header::{field_name, field_value, split_header};

fn istring(text: &str) -> IString<'static> {
    IString::try_from(text.to_string()).unwrap_or_else(|_| IString::try_from("").expect("an empty string is valid"))
}

fn nstring(text: Option<&str>) -> NString<'static> {
    NString(text.filter(|t| !t.is_empty()).map(istring))
}

pub fn envelope(raw: &[u8]) -> Option<Envelope<'static>> {
    Some(envelope_of(raw))
}

pub fn body_structure(raw: &[u8]) -> Option<BodyStructure<'static>> {
    let message = MessageParser::new().parse(raw)?;
    Some(structure_of(&message, 0, raw))
}

/// The first field of this name among `fields` (a header split once), unfolded, as written
/// (encoded words and all).
fn raw_field(fields: &[&[u8]], name: &str) -> Option<String> {
    let field = fields.iter().find(|f| field_name(f).eq_ignore_ascii_case(name.as_bytes()))?;
    let value = String::from_utf8_lossy(field_value(field));
    Some(value.split(['\r', '\n']).collect::<String>().trim().to_string())
}

/// An encapsulated message from its header on.
fn nested_header<'a>(nested: &'a Message<'_>) -> &'a [u8] {
    let raw: &[u8] = nested.raw_message.as_ref();
    let start = nested.parts.first().map_or(0, |p| p.offset_header as usize);
    raw.get(start..).unwrap_or_default()
}

fn envelope_of(raw: &[u8]) -> Envelope<'static> {
    let (ranges, _) = split_header(raw);
    let fields: Vec<&[u8]> = ranges.into_iter().map(|f| &raw[f]).collect();
    let addresses = |name: &str| -> Vec<Address<'static>> {
        let Some(value) = raw_field(&fields, name) else { return Vec::new() };
        address::parse(&value)
            .into_iter()
            .map(|a| Address {
                name: nstring(a.name.as_deref()),
                adl: nstring(a.adl.as_deref()),
                mailbox: nstring(a.mailbox.as_deref()),
                host: nstring(a.host.as_deref()),
            })
            .collect()
    };
    let from = addresses("From");
    let or_from = |list: Vec<Address<'static>>| if list.is_empty() { from.clone() } else { list };
    let field = |name: &str| nstring(raw_field(&fields, name).as_deref());
    Envelope {
        date: field("Date"),
        subject: field("Subject"),
        sender: or_from(addresses("Sender")),
        reply_to: or_from(addresses("Reply-To")),
        to: addresses("To"),
        cc: addresses("Cc"),
        bcc: addresses("Bcc"),
        in_reply_to: field("In-Reply-To"),
        message_id: field("Message-ID"),
        from,
    }
}

fn structure_of(message: &Message<'_>, index: usize, raw: &[u8]) -> BodyStructure<'static> {
    let Some(part) = message.parts.get(index) else { return empty_text() };
    let (ctype, subtype) = part
        .content_type()
        .map(|ct| (ct.ctype().to_ascii_lowercase(), ct.subtype().unwrap_or("").to_ascii_lowercase()))
        .unwrap_or_else(|| ("text".into(), "plain".into()));
    if let PartType::Multipart(children) = &part.body {
        let bodies: Vec<BodyStructure<'static>> = children.iter().map(|&child| structure_of(message, child as usize, raw)).collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi { bodies, subtype: istring(&subtype), extension_data: None };
        }
    }
    let body_bytes = raw.get(part.offset_body as usize..part.offset_end as usize).unwrap_or_default();
    let lines = body_bytes.iter().filter(|&&b| b == b'\n').count() as u32;
    let basic = BasicFields {
        parameter_list: parameters(part),
        id: nstring(part.content_id()),
        description: nstring(part.content_description()),
        content_transfer_encoding: istring(&part.content_transfer_encoding().unwrap_or("7bit").to_ascii_uppercase()),
        size: body_bytes.len() as u32,
    };
    let specific = match (&part.body, ctype.as_str()) {
        (PartType::Message(nested), _) => SpecificFields::Message {
            // mail-parser's nested message keeps the outer buffer, with offsets into it.
            envelope: Box::new(envelope_of(nested_header(nested))),
            body_structure: Box::new(structure_of(nested, 0, nested.raw_message.as_ref())),
            number_of_lines: lines,
        },
        (_, "text") => SpecificFields::Text { subtype: istring(&subtype), number_of_lines: lines },
        _ => SpecificFields::Basic { r#type: istring(&ctype), subtype: istring(&subtype) },
    };
    BodyStructure::Single { body: Body { basic, specific }, extension_data: None }
}

fn parameters(part: &MessagePart<'_>) -> Vec<(IString<'static>, IString<'static>)> {
    part.content_type()
        .and_then(|ct| ct.attributes())
        .map(|attributes| attributes.iter().map(|a| (istring(&a.name), istring(&a.value))).collect())
        .unwrap_or_default()
}

fn empty_text() -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: Vec::new(),
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring("7BIT"),
                size: 0,
            },
            specific: SpecificFields::Text { subtype: istring("plain"), number_of_lines: 0 },
        },
        extension_data: None,
    }
}
