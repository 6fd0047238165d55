//! ENVELOPE and BODYSTRUCTURE for standard IMAP clients (mail readers show lists and pick
//! attachments with them; the Delta Chat app does not use them). Computed from the stored
//! message with mail-parser.

use imap_codec::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_codec::imap_types::core::{IString, NString, Vec1};
use imap_codec::imap_types::envelope::{Address, Envelope};
use mail_parser::{Address as ParsedAddress, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};

fn istring(text: &str) -> IString<'static> {
    IString::try_from(text.to_string()).unwrap_or_else(|_| IString::try_from("").expect("an empty string is valid"))
}

fn nstring(text: Option<&str>) -> NString<'static> {
    NString(text.filter(|t| !t.is_empty()).map(istring))
}

pub fn envelope(raw: &[u8]) -> Option<Envelope<'static>> {
    Some(envelope_of(&MessageParser::new().parse(raw)?, raw))
}

pub fn body_structure(raw: &[u8]) -> Option<BodyStructure<'static>> {
    let message = MessageParser::new().parse(raw)?;
    Some(structure_of(&message, 0, raw))
}

fn raw_header<'a>(message: &Message<'_>, raw: &'a [u8], name: HeaderName<'_>) -> Option<&'a str> {
    let header = message.parts.first()?.headers.iter().find(|h| h.name == name)?;
    let value = raw.get(header.offset_start as usize..header.offset_end as usize)?;
    std::str::from_utf8(value).ok().map(str::trim)
}

fn envelope_of(message: &Message<'_>, raw: &[u8]) -> Envelope<'static> {
    let addresses = |name: HeaderName<'_>| -> Vec<Address<'static>> {
        let Some(HeaderValue::Address(address)) = message.header(name) else { return Vec::new() };
        let list: Vec<&mail_parser::Addr<'_>> = match address {
            ParsedAddress::List(list) => list.iter().collect(),
            ParsedAddress::Group(groups) => groups.iter().flat_map(|g| g.addresses.iter()).collect(),
        };
        list.into_iter()
            .filter_map(|addr| {
                let full = addr.address.as_deref()?;
                let (mailbox, host) = full.rsplit_once('@').unwrap_or((full, ""));
                Some(Address {
                    name: nstring(addr.name.as_deref()),
                    adl: NString(None),
                    mailbox: nstring(Some(mailbox)),
                    host: nstring(Some(host)),
                })
            })
            .collect()
    };
    let from = addresses(HeaderName::From);
    let or_from = |list: Vec<Address<'static>>| if list.is_empty() { from.clone() } else { list };
    Envelope {
        date: nstring(raw_header(message, raw, HeaderName::Date)),
        subject: nstring(raw_header(message, raw, HeaderName::Subject)),
        sender: or_from(addresses(HeaderName::Sender)),
        reply_to: or_from(addresses(HeaderName::ReplyTo)),
        to: addresses(HeaderName::To),
        cc: addresses(HeaderName::Cc),
        bcc: addresses(HeaderName::Bcc),
        in_reply_to: nstring(raw_header(message, raw, HeaderName::InReplyTo)),
        message_id: nstring(raw_header(message, raw, HeaderName::MessageId)),
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
            envelope: Box::new(envelope_of(nested, nested.raw_message.as_ref())),
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
