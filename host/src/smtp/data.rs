//! Reading a message after DATA, the one way every inbound path agrees on (SMTP smuggling:
//! a sender and a receiver that disagree on where a message ends let a client hide a
//! second message inside the first).
//!
//! - The message ends only at `<CRLF>.<CRLF>`: `<LF>.<LF>`, `<CR>.<CR>`, `<CRLF>.<LF>` and the
//!   like are content.
//! - Bare CR and bare LF are normalised to CRLF before anything else sees the message, as
//!   Postfix 3.9 does by default (`smtpd_forbid_bare_newline = normalize`): the parser, the
//!   policies, DKIM and the outbound writer all see one kind of line end.
//! - A line's leading dot is removed (RFC 5321 §4.5.2) only on a line that a CRLF began; a
//!   dot followed directly by a bare CR or LF is kept, so `<CRLF>.<LF>` keeps its dot.

use memchr::memchr2;

/// Where in the input the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a CRLF (or the 354 reply): a dot here is special.
    LineStart,
    /// After `<CRLF>.`.
    Dot,
    /// After `<CRLF>.<CR>`.
    DotCr,
    /// Inside a line.
    Text,
    /// After a CR inside a line.
    Cr,
}

/// The DATA state machine. Feed it what arrives; it writes the message, unstuffed and
/// normalised, into the caller's buffer (or nowhere, to read past a message already refused).
pub struct DataReader {
    state: State,
}

impl Default for DataReader {
    fn default() -> Self {
        DataReader { state: State::LineStart }
    }
}

impl DataReader {
    /// Take bytes from the front of `input` until the end of the message: returns how many
    /// were taken and whether the message ended (the rest of `input` is the next command).
    pub fn ingest(&mut self, input: &[u8], mut out: Option<&mut Vec<u8>>) -> (usize, bool) {
        let mut emit = |bytes: &[u8]| {
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(bytes);
            }
        };
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            match self.state {
                State::Text => {
                    // The common case: copy up to the next line end at once.
                    let run = memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    emit(&input[i..i + run]);
                    i += run;
                    match input.get(i) {
                        Some(b'\r') => self.state = State::Cr,
                        // A bare LF: a line end, but not one a dot may follow specially.
                        Some(_) => emit(b"\r\n"),
                        None => return (i, false),
                    }
                }
                State::Cr => match byte {
                    b'\n' => {
                        emit(b"\r\n");
                        self.state = State::LineStart;
                    }
                    // A bare CR, then another CR: still looking for the LF.
                    b'\r' => emit(b"\r\n"),
                    _ => {
                        emit(b"\r\n");
                        self.state = State::Text;
                        continue;
                    }
                },
                State::LineStart => {
                    self.state = if byte == b'.' { State::Dot } else { State::Text };
                    if byte != b'.' {
                        continue;
                    }
                }
                State::Dot => match byte {
                    b'\r' => self.state = State::DotCr,
                    // `<CRLF>.<LF>`: content, and the dot stays.
                    b'\n' => {
                        emit(b".\r\n");
                        self.state = State::Text;
                    }
                    // A stuffed dot (or any other first character) loses the leading dot.
                    _ => {
                        self.state = State::Text;
                        continue;
                    }
                },
                State::DotCr => {
                    if byte == b'\n' {
                        self.state = State::LineStart;
                        return (i + 1, true);
                    }
                    // `<CRLF>.<CR>` then something else: the dot stays, the CR becomes a line end.
                    emit(b".\r\n");
                    self.state = State::Text;
                    continue;
                }
            }
            i += 1;
        }
        (i, false)
    }
}

/// How many bare CRs and bare LFs `raw` has: what making them CRLF adds.
pub fn bare_line_ends(raw: &[u8]) -> usize {
    let (mut rest, mut bare) = (raw, 0);
    while let Some(at) = memchr2(b'\r', b'\n', rest) {
        match (rest[at], rest.get(at + 1)) {
            (b'\r', Some(b'\n')) => rest = &rest[at + 2..],
            _ => {
                bare += 1;
                rest = &rest[at + 1..];
            }
        }
    }
    bare
}

/// A message that came without SMTP's framing (`POST /mxdeliv`), with every bare CR and
/// bare LF made a CRLF, as [`DataReader`] does for DATA. Copies only when it has to, into
/// a buffer of exactly the size needed.
pub fn normalize_line_ends(raw: Vec<u8>) -> Vec<u8> {
    let bare = bare_line_ends(&raw);
    if bare == 0 {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + bare);
    let mut rest = raw.as_slice();
    while let Some(at) = memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"\r\n");
        rest = match (rest[at], rest.get(at + 1)) {
            (b'\r', Some(b'\n')) => &rest[at + 2..],
            _ => &rest[at + 1..],
        };
    }
    out.extend_from_slice(rest);
    out
}

/// `message` as DATA's wire form: every line ended by CRLF (bare CR and LF made CRLF), every
/// line that starts with a dot given a second one, and the final `.<CRLF>`. Whatever the
/// stored message holds, the peer sees exactly one message with exactly this content.
pub fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut rest = message;
    let mut line_start = true;
    while !rest.is_empty() {
        if line_start && rest[0] == b'.' {
            wire.push(b'.');
        }
        match memchr2(b'\r', b'\n', rest) {
            None => {
                wire.extend_from_slice(rest);
                rest = &[];
                line_start = false;
            }
            Some(at) => {
                wire.extend_from_slice(&rest[..at]);
                wire.extend_from_slice(b"\r\n");
                rest = match (rest[at], rest.get(at + 1)) {
                    (b'\r', Some(b'\n')) => &rest[at + 2..],
                    _ => &rest[at + 1..],
                };
                line_start = true;
            }
        }
    }
    if !line_start {
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything up to the end of data, fed in pieces of `chunk` bytes: (message, rest).
    fn read(input: &[u8], chunk: usize) -> (Vec<u8>, Vec<u8>) {
        let mut reader = DataReader::default();
        let mut message = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let end = (offset + chunk).min(input.len());
            let (taken, done) = reader.ingest(&input[offset..end], Some(&mut message));
            offset += taken;
            if done {
                return (message, input[offset..].to_vec());
            }
        }
        panic!("no end of data in {input:?}");
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_message() {
        let smuggled: &[&[u8]] = &[b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r", b"\r\n.\rX"];
        for variant in smuggled {
            let input = [b"a".as_slice(), variant, b"MAIL FROM:<x>\r\n.\r\nQUIT\r\n"].concat();
            for chunk in [1, 2, 3, 7, 1000] {
                let (message, rest) = read(&input, chunk);
                assert_eq!(rest, b"QUIT\r\n", "{variant:?} in chunks of {chunk}");
                assert!(message.windows(9).any(|w| w == b"MAIL FROM"), "{variant:?}: the rest stays content");
                assert!(!message.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || message[i - 1] != b'\r')), "no bare LF in {message:?}");
                assert!(!message.iter().enumerate().any(|(i, &b)| b == b'\r' && message.get(i + 1) != Some(&b'\n')), "no bare CR in {message:?}");
            }
        }
        assert_eq!(read(b"a\r\n.\nb\r\n.\r\n", 1).0, b"a\r\n.\r\nb\r\n", "<CRLF>.<LF> keeps its dot");
        assert_eq!(read(b"a\r\n.\r\n", 3).0, b"a\r\n");
        assert_eq!(read(b".\r\n", 1).0, b"", "an empty message");
    }

    #[test]
    fn dots_are_unstuffed_and_line_ends_normalised() {
        assert_eq!(read(b"..one\r\n...\r\ntwo\nthree\rfour\r\r\n.\r\n", 1).0, b".one\r\n..\r\ntwo\r\nthree\r\nfour\r\n\r\n");
        assert_eq!(read(b"x\r\n.y\r\n.\r\n", 4).0, b"x\r\ny\r\n", "RFC 5321: a leading dot is removed");
        let mut reader = DataReader::default();
        assert_eq!(reader.ingest(b"skipped\r\n.\r\nNOOP\r\n", None), (12, true), "reading past a refused message");
    }

    #[test]
    fn normalised_and_stuffed_for_the_wire() {
        assert_eq!(normalize_line_ends(b"a\r\nb".to_vec()), b"a\r\nb");
        assert_eq!(normalize_line_ends(b"a\nb\rc\r\r\nd\n".to_vec()), b"a\r\nb\r\nc\r\n\r\nd\r\n");
        assert_eq!((bare_line_ends(b"a\nb\rc\r\r\nd\n"), bare_line_ends(b"a\r\n")), (4, 0));
        assert_eq!(dot_stuffed(b".a\r\nb\n.\n.c\r.\r\nend"), b"..a\r\nb\r\n..\r\n..c\r\n..\r\nend\r\n.\r\n");
        assert_eq!(dot_stuffed(b"x\r\n"), b"x\r\n.\r\n");
        assert_eq!(dot_stuffed(b""), b".\r\n");
        // What the writer sends, the reader takes back unchanged.
        let message = b"a\r\n.\r\n..\r\nb\r\n".to_vec();
        assert_eq!(read(&dot_stuffed(&message), 5).0, message);
    }
}
