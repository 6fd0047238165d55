//! The raw header block of a message, split into fields byte for byte: for header edits and
//! for IMAP's `BODY[HEADER...]` sections, which must return the fields exactly as stored.

use std::ops::Range;

/// The byte ranges of the header fields (each with its continuation lines and line ending)
/// and where the rest (the blank line and the body) starts.
pub fn split_header(raw: &[u8]) -> (Vec<Range<usize>>, usize) {
    let mut fields: Vec<Range<usize>> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let line_end = raw[pos..].iter().position(|&b| b == b'\n').map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.end = line_end,
            _ => fields.push(pos..line_end),
        }
        pos = line_end;
    }
    (fields, pos)
}

/// The name of a raw field (`Subject` of `Subject: hi\r\n`).
pub fn field_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    field[..end].trim_ascii_end()
}

/// The value of a raw field, after its colon (empty for a line without one).
pub fn field_value(field: &[u8]) -> &[u8] {
    field.iter().position(|&b| b == b':').map_or(&[], |colon| &field[colon + 1..])
}

/// Where the body starts: after the blank line that ends the header (or at the end).
pub fn body_start(raw: &[u8]) -> usize {
    let (_, rest) = split_header(raw);
    match &raw[rest..] {
        [b'\r', b'\n', ..] => rest + 2,
        [b'\n', ..] => rest + 1,
        _ => rest,
    }
}

/// The header fields whose names are (or, with `exclude`, are not) in `names`, followed by
/// the blank line, as IMAP's `HEADER.FIELDS` and `HEADER.FIELDS.NOT` return them.
pub fn select_fields(raw: &[u8], names: &[&[u8]], exclude: bool) -> Vec<u8> {
    let (fields, _) = split_header(raw);
    // A client may name thousands of fields, a message hold a hundred thousand: look names up.
    let wanted: std::collections::HashSet<Vec<u8>> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    for field in fields {
        let name = field_name(&raw[field.clone()]);
        if wanted.contains(&name.to_ascii_lowercase()) != exclude {
            out.extend_from_slice(&raw[field]);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &[u8] = b"From: a@x\r\nSubject: one\r\n two\r\nX-Other: 3\r\n\r\nbody\r\n";

    #[test]
    fn fields_and_body() {
        assert_eq!(select_fields(RAW, &[b"subject", b"FROM"], false), b"From: a@x\r\nSubject: one\r\n two\r\n\r\n");
        assert_eq!(select_fields(RAW, &[b"subject"], true), b"From: a@x\r\nX-Other: 3\r\n\r\n");
        assert_eq!(&RAW[body_start(RAW)..], b"body\r\n");
        assert_eq!(body_start(b"No-Body: here\r\n"), 15);
    }
}
