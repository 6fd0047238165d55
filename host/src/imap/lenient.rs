//! Be liberal in what is accepted, as Dovecot is: a command whose lines end in a bare LF (a
//! hand-typed session, a script), or with spaces where the grammar has none (`( a b )`, two
//! spaces between arguments, a space at the end of the line), is read as the command it
//! plainly is. What the relay sends stays strictly RFC 3501.
//!
//! Only a command that failed to decode is tidied: its lines (never its literals, never the
//! inside of quoted strings) are rewritten and decoded once more.

use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LineEnding};

/// The message tidied, or `None` when tidying changes nothing.
pub fn normalized(message: &[u8]) -> Option<Vec<u8>> {
    let mut fragmentizer = Fragmentizer::without_max_message_size();
    fragmentizer.enqueue_bytes(message);
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut changed = false;
    while let Some(fragment) = fragmentizer.progress() {
        match fragment {
            FragmentInfo::Line { start, end, ending, announcement } => {
                let cut = match ending {
                    LineEnding::CrLf => 2,
                    LineEnding::Lf => 1,
                };
                let line = &message[start..end.saturating_sub(cut).max(start)];
                // A literal's announcement ends the line: the spaces before it stay as they are.
                let tidied = if announcement.is_some() { line.to_vec() } else { tidy(line) };
                changed |= ending == LineEnding::Lf || tidied != line;
                out.extend_from_slice(&tidied);
                out.extend_from_slice(b"\r\n");
            }
            FragmentInfo::Literal { start, end } => out.extend_from_slice(&message[start..end]),
        }
        if fragmentizer.is_message_complete() {
            break;
        }
    }
    changed.then_some(out)
}

/// One line without its ending: outside quoted strings, no space after `(` or before `)`,
/// one space between words, none at the end. A space at the start stays: on the line after
/// a literal it separates the literal from the next argument.
fn tidy(line: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(line.len());
    let (mut quoted, mut escaped) = (false, false);
    for &byte in line {
        if quoted {
            out.push(byte);
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b' ' if matches!(out.last(), Some(b' ' | b'(')) => {}
            b')' => {
                while out.last() == Some(&b' ') {
                    out.pop();
                }
                out.push(byte);
            }
            b'"' => {
                quoted = true;
                out.push(byte);
            }
            _ => out.push(byte),
        }
    }
    while out.last() == Some(&b' ') && !quoted {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(message: &str) -> Option<String> {
        normalized(message.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn bare_line_feeds_and_stray_spaces() {
        assert_eq!(fixed("a NOOP\n").as_deref(), Some("a NOOP\r\n"));
        assert_eq!(fixed("a NOOP\r\n"), None, "nothing to tidy");
        assert_eq!(
            fixed("a SETMETADATA INBOX ( /private/devicetoken \"t  ( x )\" )\r\n").as_deref(),
            Some("a SETMETADATA INBOX (/private/devicetoken \"t  ( x )\")\r\n"),
            "quoted strings untouched"
        );
        assert_eq!(fixed("a  SELECT   INBOX \r\n").as_deref(), Some("a SELECT INBOX\r\n"));
        assert_eq!(fixed("a LOGIN {3}\nb\"c \"x\\\" ) \"\n").as_deref(), Some("a LOGIN {3}\r\nb\"c \"x\\\" ) \"\r\n"), "literals untouched");
    }
}
