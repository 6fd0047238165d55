//! ASCII armor and the OpenPGP packet stream inside it, read the way chatmail reads them.
//!
//! The armor is taken apart here (it is line-oriented text and chatmail's rules about it are
//! stricter than RFC 9580's); the packet headers are parsed with sequoia-openpgp. Packet
//! bodies are skipped, never decrypted: a policy only needs to know which packets there are.

use base64::Engine;
use buffered_reader::BufferedReader;
use sequoia_openpgp::packet::Header;
use sequoia_openpgp::packet::header::{BodyLength, CTB};
use sequoia_openpgp::parse::{Cookie, Parse};

const BEGIN: &str = "-----BEGIN PGP MESSAGE-----";
const END: &str = "-----END PGP MESSAGE-----";

/// One top-level packet header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketInfo {
    pub tag: u8,
    pub legacy_format: bool,
    /// Total body length (all chunks, for partial body lengths).
    pub length: u64,
    pub partial: bool,
}

/// A dearmored message: armor headers, packets, and why the stream stopped early, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armored {
    pub headers: Vec<(String, String)>,
    pub packets: Vec<PacketInfo>,
    pub error: Option<String>,
}

/// Read `body` as `-----BEGIN PGP MESSAGE-----` armor and walk its packets.
pub fn read(body: &[u8]) -> Result<Armored, String> {
    let text = std::str::from_utf8(body).map_err(|_| "armor is not UTF-8 text".to_string())?;
    let text = text.trim_end_matches(['\r', '\n']);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));

    if lines.next() != Some(BEGIN) {
        return Err(format!("does not start with {BEGIN}"));
    }
    let mut lines: Vec<&str> = lines.collect();
    if lines.pop() != Some(END) {
        return Err(format!("does not end with {END}"));
    }

    // Armor headers ("Key: Value") follow the BEGIN line up to a blank line. Base64 has no
    // ':' so a header line cannot be mistaken for data even when the blank line is missing.
    let mut headers = Vec::new();
    let mut data_start = 0;
    for line in &lines {
        match line.split_once(':') {
            Some((key, value)) if !key.is_empty() => {
                headers.push((key.trim().to_string(), value.trim().to_string()));
                data_start += 1;
            }
            _ => break,
        }
    }
    let mut data: Vec<&str> = lines[data_start..].iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    // The optional CRC24 line: '=' and four base64 characters.
    if data.last().is_some_and(|l| l.len() == 5 && l.starts_with('=')) {
        data.pop();
    }
    let packed: String = data.concat();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(packed.as_bytes())
        .map_err(|e| format!("bad base64 in armor: {e}"))?;
    let (packets, error) = walk_packets(&bytes);
    Ok(Armored { headers, packets, error })
}

/// The top-level packets of an OpenPGP packet stream. Stops at the first malformed or
/// truncated packet and says why; the stream must end exactly after the last packet.
pub fn walk_packets(data: &[u8]) -> (Vec<PacketInfo>, Option<String>) {
    let mut reader = buffered_reader::Memory::with_cookie(data, Cookie::default());
    let mut packets = Vec::new();
    while !reader.data(1).map(|d| d.is_empty()).unwrap_or(true) {
        let header = match Header::from_buffered_reader(&mut reader) {
            Ok(header) => header,
            Err(e) => return (packets, Some(format!("bad packet header: {e}"))),
        };
        let (tag, legacy_format) = match header.ctb() {
            CTB::New(ctb) => (u8::from(ctb.tag()), false),
            CTB::Old(ctb) => (u8::from(ctb.tag()), true),
        };
        let skipped = match *header.length() {
            BodyLength::Full(len) => skip(&mut reader, len as usize).map(|()| (u64::from(len), false)),
            BodyLength::Partial(first) => skip_partial(&mut reader, first).map(|len| (len, true)),
            BodyLength::Indeterminate => Err("indeterminate packet length".to_string()),
        };
        match skipped {
            Ok((length, partial)) => packets.push(PacketInfo { tag, legacy_format, length, partial }),
            Err(e) => return (packets, Some(e)),
        }
    }
    (packets, None)
}

fn skip(reader: &mut buffered_reader::Memory<'_, Cookie>, len: usize) -> Result<(), String> {
    reader.data_consume_hard(len).map(|_| ()).map_err(|_| "truncated packet body".to_string())
}

/// Skip a body with partial lengths (RFC 9580 §4.2.1.4): chunks of 2^n bytes, each followed
/// by the next length, until a chunk with a definite length ends the body.
fn skip_partial(reader: &mut buffered_reader::Memory<'_, Cookie>, first: u32) -> Result<u64, String> {
    let mut total = 0u64;
    let mut chunk = first;
    loop {
        skip(reader, chunk as usize)?;
        total += u64::from(chunk);
        let octet = reader.data_consume_hard(1).map_err(|_| "truncated partial body length".to_string())?[0];
        match octet {
            0..=191 => return skip(reader, octet as usize).map(|()| total + u64::from(octet)),
            192..=223 => {
                let second = reader.data_consume_hard(1).map_err(|_| "truncated body length".to_string())?[0];
                let len = ((u32::from(octet) - 192) << 8) + u32::from(second) + 192;
                return skip(reader, len as usize).map(|()| total + u64::from(len));
            }
            224..=254 => chunk = 1 << (octet & 0x1F),
            255 => {
                let len = reader.read_be_u32().map_err(|_| "truncated body length".to_string())?;
                return skip(reader, len as usize).map(|()| total + u64::from(len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armor(data: &[u8], headers: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("{BEGIN}\r\n{headers}\r\n{}\r\n=abcd\r\n{END}\r\n", lines.join("\r\n"))
    }

    #[test]
    fn new_and_legacy_headers() {
        // PKESK (new format), SKESK (legacy format), SEIPD (new format: legacy tags stop at 15).
        let mut data = vec![0xC1, 3, 1, 2, 3];
        data.extend([0x8C, 2, 9, 9]); // legacy, tag 3, one-octet length 2
        data.extend([0xD2, 1, 0]); // new, tag 18, length 1
        let a = read(armor(&data, "").as_bytes()).unwrap();
        assert_eq!(a.error, None);
        let tags: Vec<_> = a.packets.iter().map(|p| (p.tag, p.legacy_format, p.length)).collect();
        assert_eq!(tags, [(1, false, 3), (3, true, 2), (18, false, 1)]);
    }

    #[test]
    fn partial_body_lengths() {
        let mut data = vec![0xD2, 0xE1]; // SEIPD, partial chunk of 2 bytes
        data.extend([7, 7]);
        data.extend([0xE0, 7]); // chunk of 1 byte
        data.extend([3, 1, 2, 3]); // final chunk of 3 bytes
        let a = read(armor(&data, "").as_bytes()).unwrap();
        assert_eq!(a.error, None);
        assert_eq!(a.packets, [PacketInfo { tag: 18, legacy_format: false, length: 6, partial: true }]);
    }

    #[test]
    fn truncation_is_reported() {
        let a = read(armor(&[0xD2, 10, 1, 2], "").as_bytes()).unwrap();
        assert!(a.packets.is_empty());
        assert!(a.error.unwrap().contains("truncated"));
        let a = read(armor(&[0xC1, 1, 0, 0xD2], "").as_bytes()).unwrap();
        assert_eq!(a.packets.len(), 1);
        assert!(a.error.is_some(), "a header cut after its first byte");
    }

    #[test]
    fn armor_headers_and_framing() {
        let a = read(armor(&[0xD2, 1, 0], "Version: Foo 1.0\r\nComment: hi\r\n").as_bytes()).unwrap();
        assert_eq!(a.headers, [("Version".into(), "Foo 1.0".into()), ("Comment".into(), "hi".into())]);
        assert!(read(b"hello").is_err());
        assert!(read(format!("{BEGIN}\r\nAAAA\r\n").as_bytes()).is_err(), "no END line");
        assert!(read(format!("{BEGIN}\r\n\r\nnot base64!\r\n{END}").as_bytes()).is_err());
        assert!(read(format!("{BEGIN}\r\n\r\nwU4D=\r\n=agR5\r\n{END}").as_bytes()).is_err(), "bad padding");
    }
}
