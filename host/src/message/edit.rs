//! Header edits: what the policies' verdicts do to a message before it is stored or sent.
//!
//! The header block is split into fields with [`super::header`] rather than the MIME parser,
//! so that an edit touches exactly the bytes of the fields it names and leaves the rest as sent.

use std::borrow::Cow;

use super::header::{field_name, split_header};

/// Edits accumulated over a policy chain. Names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }

    /// Add later edits: a later `set` of a name replaces an earlier one.
    pub fn extend(&mut self, other: Edits) {
        self.remove.extend(other.remove);
        for (name, value) in other.set {
            self.set.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            self.set.push((name, value));
        }
    }
}

/// Why an edit a policy asked for cannot be applied.
pub fn check_name(name: &str) -> Result<(), String> {
    // RFC 5322 field names: printable ASCII except ':'.
    if name.is_empty() || name.len() > 76 || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok(())
}

pub fn check_value(value: &str) -> Result<(), String> {
    if value.len() > 900 || value.contains(['\r', '\n', '\0']) {
        return Err("header value too long or containing a line break".to_string());
    }
    Ok(())
}

/// Apply `edits` to a raw message. Removals first; then each `set` replaces the first field
/// of its name in place (dropping any others) or is added at the end of the header block.
/// Without edits the message is lent back, not copied (it may be 30 MiB).
pub fn apply<'a>(raw: &'a [u8], edits: &Edits) -> Cow<'a, [u8]> {
    if edits.is_empty() {
        return Cow::Borrowed(raw);
    }
    let (fields, body_start) = split_header(raw);
    // Added fields use the message's own line ending.
    let eol: &[u8] = match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i == 0 || raw[i - 1] != b'\r' => b"\n",
        _ => b"\r\n",
    };
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut set_done = vec![false; edits.set.len()];
    for field in &fields {
        let name = field_name(&raw[field.clone()]);
        if edits.remove.iter().any(|r| r.as_bytes().eq_ignore_ascii_case(name)) {
            continue;
        }
        match edits.set.iter().position(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name)) {
            Some(i) if set_done[i] => {}
            Some(i) => {
                set_done[i] = true;
                push_field(&mut out, &edits.set[i], eol);
            }
            None => out.extend_from_slice(&raw[field.clone()]),
        }
    }
    for (i, done) in set_done.iter().enumerate() {
        if !done {
            push_field(&mut out, &edits.set[i], eol);
        }
    }
    out.extend_from_slice(&raw[body_start..]);
    Cow::Owned(out)
}

/// Apply several sets of edits, one after the other, to a message handed over: the header is
/// edited and put back in place, the body stays where it is (a 30 MB message is not copied).
pub fn apply_in_place(mut raw: Vec<u8>, edits: &[&Edits]) -> Vec<u8> {
    if edits.iter().all(|e| e.is_empty()) {
        return raw;
    }
    let (_, body_start) = split_header(&raw);
    let mut header = raw[..body_start].to_vec();
    for edits in edits {
        header = apply(&header, edits).into_owned();
    }
    raw.splice(..body_start, header);
    raw
}

fn push_field(out: &mut Vec<u8>, (name, value): &(String, String), eol: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(eol);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Received: from x\r\n by y\r\nFrom: a@x.org\r\nSubject: secret\r\nX-Mailer: Foo\r\nsubject: twice\r\n\r\nbody\r\nSubject: not a header\r\n";

    #[test]
    fn remove_set_and_add() {
        let edits = Edits {
            remove: vec!["received".into(), "X-MAILER".into()],
            set: vec![("Subject".into(), "[...]".into()), ("X-New".into(), "1".into())],
        };
        let out = String::from_utf8(apply(MESSAGE, &edits).into_owned()).unwrap();
        assert_eq!(out, "From: a@x.org\r\nSubject: [...]\r\nX-New: 1\r\n\r\nbody\r\nSubject: not a header\r\n");
    }

    #[test]
    fn edits_in_place_are_edits_one_after_the_other() {
        let first = Edits { remove: vec!["received".into()], set: vec![("Subject".into(), "[...]".into())] };
        let second = Edits { remove: vec!["subject".into()], set: vec![("X-New".into(), "1".into())] };
        let one_by_one = apply(&apply(MESSAGE, &first), &second).into_owned();
        assert_eq!(apply_in_place(MESSAGE.to_vec(), &[&first, &second]), one_by_one);
        assert_eq!(apply_in_place(MESSAGE.to_vec(), &[&first, &Edits::default()]), apply(MESSAGE, &first).into_owned());
        assert_eq!(apply_in_place(MESSAGE.to_vec(), &[&Edits::default()]), MESSAGE);
    }

    #[test]
    fn no_edits_no_change() {
        assert!(matches!(apply(MESSAGE, &Edits::default()), Cow::Borrowed(m) if m == MESSAGE));
    }

    #[test]
    fn bare_lf_messages_keep_their_line_endings() {
        let out = apply(b"A: 1\nB: 2\n\nbody\n", &Edits { remove: vec!["a".into()], set: vec![("C".into(), "3".into())] });
        assert_eq!(&*out, b"B: 2\nC: 3\n\nbody\n");
    }

    #[test]
    fn names_and_values_are_checked() {
        assert!(check_name("X-Ok").is_ok());
        assert!(check_name("Bad Name").is_err());
        assert!(check_name("Bad:Name").is_err());
        assert!(check_value("fine").is_ok());
        assert!(check_value("two\r\nlines").is_err());
    }
}
