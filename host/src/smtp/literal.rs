//! IP-literal domains in MAIL FROM and RCPT TO (`<user@[192.0.2.1]>`, RFC 5321 §4.1.3), as
//! chatmail's relays on a bare IP address use them.
//!
//! smtp-proto's address parser takes dot-atom domains only. So a whole command line has each
//! literal swapped for a stand-in domain that the parser takes (hex of the literal under
//! `.invalid`, which no real domain can be), and the parsed address gets it back. A line that
//! already holds the stand-in's prefix is refused, so a client cannot forge one.

use std::borrow::Cow;

const PREFIX: &str = "x--ip-literal--";
const SUFFIX: &str = ".invalid";
/// `[IPv6:` + the longest IPv6 text + `]`, with room.
const MAX_LITERAL: usize = 64;

/// The command line with its address literals replaced, or `Err` for a forged stand-in.
pub fn encode(line: &[u8]) -> Result<Cow<'_, [u8]>, ()> {
    let verb = line.get(..5).map(|v| v.to_ascii_uppercase());
    if !matches!(verb.as_deref(), Some(b"MAIL ") | Some(b"RCPT ")) {
        return Ok(Cow::Borrowed(line));
    }
    if line.windows(PREFIX.len()).any(|w| w.eq_ignore_ascii_case(PREFIX.as_bytes())) {
        return Err(());
    }
    let Some(mut at) = memchr::memmem::find(line, b"@[") else { return Ok(Cow::Borrowed(line)) };
    let mut out = Vec::with_capacity(line.len() + 2 * MAX_LITERAL);
    let mut done = 0;
    loop {
        let start = at + 1;
        let literal_end = line[start..].iter().take(MAX_LITERAL).position(|&b| b == b']').map(|p| start + p + 1);
        match literal_end {
            Some(end) if line.get(end) == Some(&b'>') && line[start + 1..end - 1].iter().all(|b| b.is_ascii_alphanumeric() || b".:".contains(b)) => {
                out.extend_from_slice(&line[done..start]);
                out.extend_from_slice(PREFIX.as_bytes());
                out.extend_from_slice(hex::encode(&line[start..end]).as_bytes());
                out.extend_from_slice(SUFFIX.as_bytes());
                done = end;
            }
            // Not a literal the parser needs help with: it judges the line as it is.
            _ => {}
        }
        match memchr::memmem::find(&line[start..], b"@[") {
            Some(next) => at = start + next,
            None => break,
        }
    }
    out.extend_from_slice(&line[done..]);
    Ok(Cow::Owned(out))
}

/// The address as the client wrote it; `None` if it had a literal that is not an address.
pub fn decode(address: String) -> Option<String> {
    let Some((local, domain)) = address.rsplit_once('@') else { return Some(address) };
    let Some(hex) = domain.strip_prefix(PREFIX).and_then(|d| d.strip_suffix(SUFFIX)) else { return Some(address) };
    let literal = String::from_utf8(hex::decode(hex).ok()?).ok()?;
    crate::dns::ip_literal(&literal)?;
    Some(format!("{local}@{literal}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtp_proto::Request;
    use smtp_proto::request::receiver::RequestReceiver;

    fn parse(line: &str) -> Result<Option<String>, String> {
        let encoded = encode(line.as_bytes()).map_err(|_| "forged".to_string())?;
        let mut receiver = RequestReceiver::default();
        match receiver.ingest(&mut encoded.iter()) {
            Ok(Request::Mail { from }) => Ok(decode(from.address.to_string())),
            Ok(Request::Rcpt { to }) => Ok(decode(to.address.to_string())),
            Ok(_) => Err("other".into()),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn literals_pass_the_parser_and_come_back() {
        assert_eq!(parse("MAIL FROM:<a@[192.0.2.1]>\r\n"), Ok(Some("a@[192.0.2.1]".into())));
        assert_eq!(parse("rcpt to:<Bob@[IPv6:2001:db8::1]>\r\n"), Ok(Some("Bob@[IPv6:2001:db8::1]".into())));
        assert_eq!(parse("MAIL FROM:<a@[192.0.2.1]> SIZE=100 BODY=8BITMIME\r\n"), Ok(Some("a@[192.0.2.1]".into())));
        assert_eq!(parse("MAIL FROM:<a@example.org>\r\n"), Ok(Some("a@example.org".into())));
        // Not an address: the parser's refusal, or ours.
        assert_eq!(parse("MAIL FROM:<a@[999.1.1.1]>\r\n"), Ok(None));
        assert_eq!(parse("MAIL FROM:<a@[not literal]>\r\n").unwrap_or(None), None);
        assert_eq!(parse("MAIL FROM:<a@x--ip-literal--5b312e322e332e345d.invalid>\r\n"), Err("forged".into()));
        assert_eq!(parse("MAIL FROM:<a@X--IP-LITERAL--00.invalid>\r\n"), Err("forged".into()));
        assert!(matches!(encode(b"DATA\r\n"), Ok(Cow::Borrowed(_))));
    }
}
