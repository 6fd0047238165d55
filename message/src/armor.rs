//! ASCII armor and the OpenPGP packet stream inside it, read the way chatmail reads them.
//!
//! The armor is taken apart here (it is line-oriented text and chatmail's rules about it are
//! stricter than RFC 9580's), and so are the packet headers: a few lines of RFC 9580 §4.2, checked
//! against sequoia-openpgp's parser by host/tests/packets.rs. Packet bodies are skipped, never
//! decrypted: a policy only needs to know which packets there are.

use base64::Engine;

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

/// Read `body` as `-----BEGIN PGP MESSAGE-----` armor and walk its packets. The lines are
/// decoded as the walk needs them, a few KiB at a time: a 30 MB attachment is never held
/// decoded (nor its text copied), and eight of them checked at once cost no memory to speak of.
pub fn read(body: &[u8]) -> Result<Armored, String> {
    let text = std::str::from_utf8(body).map_err(|_| "armor is not UTF-8 text".to_string())?;
    let text = text.trim_end_matches(['\r', '\n']);
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    if unline(first) != BEGIN {
        return Err(format!("does not start with {BEGIN}"));
    }
    let (middle, last) = rest.rsplit_once('\n').unwrap_or(("", rest));
    if unline(last) != END {
        return Err(format!("does not end with {END}"));
    }
    let mut lines = middle.split('\n').peekable();

    // Armor headers ("Key: Value") follow the BEGIN line up to a blank line. Base64 has no
    // ':' so a header line cannot be mistaken for data even when the blank line is missing.
    let mut headers = Vec::new();
    while let Some((key, value)) = lines.peek().and_then(|l| l.split_once(':')).filter(|(key, _)| !key.is_empty()) {
        headers.push((key.trim().to_string(), value.trim().to_string()));
        lines.next();
    }
    let mut data = lines.map(str::trim).filter(|l| !l.is_empty()).peekable();
    let mut decoder = Decoder { pending: String::with_capacity(CHUNK + 128), failed: None };
    let mut refill = |window: &mut Vec<u8>| -> bool {
        while decoder.failed.is_none() {
            let Some(line) = data.next() else { return decoder.finish(window) };
            // The optional CRC24 line, last: '=' and four base64 characters.
            if data.peek().is_none() && line.len() == 5 && line.starts_with('=') {
                continue;
            }
            if decoder.push(line, window) {
                return true;
            }
        }
        false
    };
    let (packets, error) = walk(Input { window: Vec::with_capacity(CHUNK), at: 0, refill: &mut refill });
    // The whole armor must be base64, however early the walk stopped.
    while refill(&mut Vec::new()) {}
    if let Some(e) = decoder.failed {
        return Err(format!("bad base64 in armor: {e}"));
    }
    Ok(Armored { headers, packets, error })
}

/// A line without its CR.
fn unline(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// Base64 text decoded in chunks of whole quads, as the lines arrive.
struct Decoder {
    pending: String,
    failed: Option<String>,
}

const CHUNK: usize = 4096;

impl Decoder {
    /// Take a line; true when a chunk was decoded into `out`.
    fn push(&mut self, line: &str, out: &mut Vec<u8>) -> bool {
        self.pending.push_str(line);
        self.pending.len() >= CHUNK && self.decode(self.pending.len() / 4 * 4, out)
    }

    fn decode(&mut self, len: usize, out: &mut Vec<u8>) -> bool {
        if let Err(e) = base64::engine::general_purpose::STANDARD.decode_vec(&self.pending.as_bytes()[..len], out) {
            self.failed = Some(e.to_string());
            return false;
        }
        self.pending.drain(..len);
        true
    }

    /// The rest; false when there was none.
    fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        let len = self.pending.len();
        len > 0 && self.decode(len, out)
    }
}

/// The top-level packets of an OpenPGP packet stream. Stops at the first malformed or
/// truncated packet and says why; the stream must end exactly after the last packet.
pub fn walk_packets(data: &[u8]) -> (Vec<PacketInfo>, Option<String>) {
    walk(Input { window: data.to_vec(), at: 0, refill: &mut |_| false })
}

fn walk(mut input: Input<'_>) -> (Vec<PacketInfo>, Option<String>) {
    let mut packets = Vec::new();
    while input.more() {
        let (tag, legacy_format, length) = match header(&mut input) {
            Ok(header) => header,
            Err(e) => return (packets, Some(format!("bad packet header: {e}"))),
        };
        let skipped = match length {
            Length::Full(len) => input.skip(len).map(|()| (u64::from(len), false)),
            Length::Partial(first) => skip_partial(&mut input, first).map(|len| (len, true)),
            Length::Indeterminate => Err("indeterminate packet length".to_string()),
        };
        match skipped {
            Ok((length, partial)) => packets.push(PacketInfo { tag, legacy_format, length, partial }),
            Err(e) => return (packets, Some(e)),
        }
    }
    (packets, None)
}

/// The packet stream, a window at a time: `refill` appends the next decoded bytes to the
/// window (false at the end of the stream).
struct Input<'a> {
    window: Vec<u8>,
    at: usize,
    refill: &'a mut dyn FnMut(&mut Vec<u8>) -> bool,
}

impl Input<'_> {
    /// Whether any byte is left; makes one available when there is.
    fn more(&mut self) -> bool {
        while self.at >= self.window.len() {
            self.window.clear();
            self.at = 0;
            if !(self.refill)(&mut self.window) {
                return false;
            }
        }
        true
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut bytes = [0u8; N];
        for byte in &mut bytes {
            *byte = self.byte(what)?;
        }
        Ok(bytes)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        if !self.more() {
            return Err(format!("truncated {what}"));
        }
        self.at += 1;
        Ok(self.window[self.at - 1])
    }

    fn skip(&mut self, len: u32) -> Result<(), String> {
        let mut left = len as usize;
        while left > 0 {
            if !self.more() {
                return Err("truncated packet body".to_string());
            }
            let step = left.min(self.window.len() - self.at);
            self.at += step;
            left -= step;
        }
        Ok(())
    }
}

enum Length {
    Full(u32),
    /// The first chunk of a body with partial lengths.
    Partial(u32),
    Indeterminate,
}

/// A packet header (RFC 9580 §4.2): the tag byte, then the body length in the new (OpenPGP)
/// or the legacy format.
fn header(input: &mut Input<'_>) -> Result<(u8, bool, Length), String> {
    let ctb = input.byte("packet header")?;
    if ctb & 0x80 == 0 {
        return Err(format!("malformed CTB {ctb:#04x}"));
    }
    if ctb & 0x40 != 0 {
        let tag = ctb & 0x3F;
        let length = match input.byte("body length")? {
            octet @ 0..=191 => Length::Full(u32::from(octet)),
            octet @ 192..=223 => Length::Full(two_octet_length(octet, input.byte("body length")?)),
            octet @ 224..=254 => Length::Partial(1 << (octet & 0x1F)),
            255 => Length::Full(u32::from_be_bytes(input.bytes("body length")?)),
        };
        return Ok((tag, false, length));
    }
    let tag = (ctb >> 2) & 0x0F;
    let length = match ctb & 0x03 {
        0 => Length::Full(u32::from(input.byte("body length")?)),
        1 => Length::Full(u32::from(u16::from_be_bytes(input.bytes("body length")?))),
        2 => Length::Full(u32::from_be_bytes(input.bytes("body length")?)),
        _ => Length::Indeterminate,
    };
    Ok((tag, true, length))
}

fn two_octet_length(first: u8, second: u8) -> u32 {
    ((u32::from(first) - 192) << 8) + u32::from(second) + 192
}

/// Skip a body with partial lengths (RFC 9580 §4.2.1.4): chunks of 2^n bytes, each followed
/// by the next length, until a chunk with a definite length ends the body.
fn skip_partial(input: &mut Input<'_>, first: u32) -> Result<u64, String> {
    let mut total = 0u64;
    let mut chunk = first;
    loop {
        input.skip(chunk)?;
        total += u64::from(chunk);
        let last = match input.byte("partial body length")? {
            octet @ 0..=191 => u32::from(octet),
            octet @ 192..=223 => two_octet_length(octet, input.byte("body length")?),
            octet @ 224..=254 => {
                chunk = 1 << (octet & 0x1F);
                continue;
            }
            255 => u32::from_be_bytes(input.bytes("body length")?),
        };
        return input.skip(last).map(|()| total + u64::from(last));
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
    fn long_streams_are_walked_a_window_at_a_time() {
        // A PKESK, then a SEIPD of 100 000 bytes (five-octet length): many windows long.
        let mut data = vec![0xC1, 3, 1, 2, 3, 0xD2, 255];
        data.extend(100_000u32.to_be_bytes());
        data.extend((0..100_000u32).map(|i| i as u8));
        let a = read(armor(&data, "").as_bytes()).unwrap();
        assert_eq!(a.error, None);
        assert_eq!(a.packets.iter().map(|p| (p.tag, p.length)).collect::<Vec<_>>(), [(1, 3), (18, 100_000)]);
        // A byte short: truncated, found at the very end.
        let short = read(armor(&data[..data.len() - 1], "").as_bytes()).unwrap();
        assert_eq!(short.error.as_deref(), Some("truncated packet body"));
        // Bad base64 anywhere fails the armor, even where the walk had already stopped.
        let mut text = armor(&data, "");
        let at = text.len() - 60;
        text.replace_range(at..at + 1, "!");
        assert!(read(text.as_bytes()).unwrap_err().contains("bad base64"));
        let mut early = vec![0x01];
        early.extend(&data);
        let mut text = armor(&early, "");
        let at = text.len() - 60;
        text.replace_range(at..at + 1, "!");
        assert!(read(text.as_bytes()).unwrap_err().contains("bad base64"), "the walk stopped at the first byte");
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
