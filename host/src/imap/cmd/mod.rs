//! The IMAP commands, one group per file. Each is a method on the session.

mod append;
mod auth;
mod copy;
mod fetch;
mod flags;
mod info;
pub(super) mod list;
mod mailboxes;
mod metadata;
mod quota;
mod search;

use imap_codec::imap_types::mailbox::Mailbox;

/// Whether a mailbox name a client wants to create is RFC 3501 §5.1.3's modified UTF-7:
/// printable ASCII, with `&` opening a modified-base64 run of UTF-16 that `-` closes (`&-`
/// is `&` itself). Anything else (raw 8-bit, control characters, broken runs) is refused
/// rather than stored as a name no other client could show.
pub(super) fn is_modified_utf7(name: &[u8]) -> bool {
    let mut rest = name;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'&' {
            if !(0x20..=0x7e).contains(&byte) {
                return false;
            }
            continue;
        }
        let Some(end) = rest.iter().position(|&b| b == b'-') else { return false };
        let (run, tail) = (&rest[..end], &rest[end + 1..]);
        rest = tail;
        if !run.is_empty() && !utf16_run(run) {
            return false;
        }
    }
    true
}

/// One modified-base64 run: whole UTF-16 code units of valid UTF-16, zero padding bits.
fn utf16_run(run: &[u8]) -> bool {
    let value = |b: u8| match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b',' => Some(63),
        _ => None,
    };
    let (mut bits, mut width, mut bytes) = (0u32, 0u32, Vec::with_capacity(run.len()));
    for &b in run {
        let Some(v) = value(b) else { return false };
        bits = (bits << 6) | u32::from(v);
        width += 6;
        if width >= 8 {
            width -= 8;
            bytes.push((bits >> width) as u8);
            bits &= (1 << width) - 1;
        }
    }
    // Leftover bits: fewer than a character's worth, and zero.
    if width >= 6 || bits != 0 || bytes.is_empty() || bytes.len() % 2 != 0 {
        return false;
    }
    let units = bytes.chunks(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
    char::decode_utf16(units).all(|c| c.is_ok())
}

/// A mailbox name as stored: INBOX in upper case, others as the client wrote them.
pub(super) fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(other) => {
            let name = String::from_utf8_lossy(other.inner().as_ref()).into_owned();
            if name.eq_ignore_ascii_case("INBOX") { "INBOX".to_string() } else { name }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_modified_utf7;

    #[test]
    fn modified_utf7_names() {
        for good in ["INBOX", "Archive/2026", "Tom &- Jerry", "&ZeVnLIqe-", "Entw&APw-rfe", "a b"] {
            assert!(is_modified_utf7(good.as_bytes()), "{good}");
        }
        for bad in ["Entw\u{fc}rfe", "tab\there", "&", "&ZeVnLIqe", "&A-", "&2D3-", "&Z!-", "new\nline"] {
            assert!(!is_modified_utf7(bad.as_bytes()), "{bad:?}");
        }
    }
}
