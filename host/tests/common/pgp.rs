#![allow(dead_code)]
//! Real OpenPGP messages, made by sequoia, wrapped the way Delta Chat wraps them.

use std::io::Write;
use std::sync::OnceLock;

use sequoia_openpgp as openpgp;
use openpgp::cert::prelude::*;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Signer};

/// Three recipients' certificates, generated once per test binary.
pub fn certs() -> &'static [openpgp::Cert] {
    static CERTS: OnceLock<Vec<openpgp::Cert>> = OnceLock::new();
    CERTS.get_or_init(|| {
        ["alice@c.test", "bob@c.test", "carol@other.test"]
            .iter()
            .map(|uid| CertBuilder::general_purpose(Some(*uid)).generate().unwrap().0)
            .collect()
    })
}

/// The binary OpenPGP message (no armor): PKESK per recipient certificate + SEIPD.
pub fn encrypt_to(certs: &[&openpgp::Cert], plaintext: &[u8]) -> Vec<u8> {
    let policy = StandardPolicy::new();
    let recipients: Vec<_> = certs
        .iter()
        .flat_map(|c| c.keys().with_policy(&policy, None).supported().alive().revoked(false).for_transport_encryption())
        .collect();
    let mut out = Vec::new();
    let message = Message::new(&mut out);
    let message = Encryptor::for_recipients(message, recipients).build().unwrap();
    let mut literal = LiteralWriter::new(message).build().unwrap();
    literal.write_all(plaintext).unwrap();
    literal.finalize().unwrap();
    out
}

/// SKESK (password) + SEIPD.
pub fn encrypt_with_password(password: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let message = Message::new(&mut out);
    let message = Encryptor::with_passwords(message, Some(password)).build().unwrap();
    let mut literal = LiteralWriter::new(message).build().unwrap();
    literal.write_all(plaintext).unwrap();
    literal.finalize().unwrap();
    out
}

/// A literal data packet only: "armored" but not encrypted.
pub fn literal_only(plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut literal = LiteralWriter::new(Message::new(&mut out)).build().unwrap();
    literal.write_all(plaintext).unwrap();
    literal.finalize().unwrap();
    out
}

/// Signed, not encrypted: one-pass signature, literal data, signature.
pub fn signed_only(plaintext: &[u8]) -> Vec<u8> {
    let policy = StandardPolicy::new();
    let keypair = certs()[0]
        .keys()
        .unencrypted_secret()
        .with_policy(&policy, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .unwrap()
        .key()
        .clone()
        .into_keypair()
        .unwrap();
    let mut out = Vec::new();
    let signer = Signer::new(Message::new(&mut out), keypair).unwrap().build().unwrap();
    let mut literal = LiteralWriter::new(signer).build().unwrap();
    literal.write_all(plaintext).unwrap();
    literal.finalize().unwrap();
    out
}

/// ASCII armor as sequoia writes it, with optional armor header lines.
pub fn armor(binary: &[u8], headers: &[(&str, &str)]) -> String {
    let mut out = Vec::new();
    let mut armorer = Armorer::new(Message::new(&mut out)).kind(openpgp::armor::Kind::Message);
    for (k, v) in headers {
        armorer = armorer.add_header(*k, *v);
    }
    let mut writer = armorer.build().unwrap();
    writer.write_all(binary).unwrap();
    writer.finalize().unwrap();
    String::from_utf8(out).unwrap().replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Rewrite the leading session-key packets (PKESK, SKESK) with legacy (old-format) headers,
/// as GnuPG writes them. Packets with a tag above 15 cannot be legacy and stay as they are.
pub fn with_legacy_headers(binary: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < binary.len() {
        let ctb = binary[pos];
        assert_eq!(ctb & 0xC0, 0xC0, "expects new-format input");
        let tag = ctb & 0x3F;
        let (len, header_len) = new_format_length(binary, pos);
        if tag > 15 {
            out.extend_from_slice(&binary[pos..]);
            break;
        }
        let body = &binary[pos + header_len..pos + header_len + len];
        if len < 256 {
            out.extend_from_slice(&[0x80 | (tag << 2), len as u8]);
        } else {
            out.push(0x80 | (tag << 2) | 1);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(body);
        pos += header_len + len;
    }
    out
}

/// Re-encode the last packet (the SEIPD) with partial body lengths: 512-byte chunks, then
/// the rest with a definite length, as streaming encoders write large messages.
pub fn with_partial_lengths(binary: &[u8]) -> Vec<u8> {
    let mut pos = 0;
    loop {
        let (len, header_len) = new_format_length(binary, pos);
        if pos + header_len + len == binary.len() {
            let mut out = binary[..pos].to_vec();
            out.push(binary[pos]);
            let mut body = &binary[pos + header_len..];
            while body.len() > 512 {
                out.push(0xE0 | 9);
                out.extend_from_slice(&body[..512]);
                body = &body[512..];
            }
            out.extend_from_slice(&[0xFF]);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
            return out;
        }
        pos += header_len + len;
    }
}

/// Body length and header size of the new-format packet at `pos` (definite lengths only).
fn new_format_length(binary: &[u8], pos: usize) -> (usize, usize) {
    let first = binary[pos + 1];
    match first {
        0..=191 => (first as usize, 2),
        192..=223 => ((((first as usize) - 192) << 8) + binary[pos + 2] as usize + 192, 3),
        255 => (u32::from_be_bytes(binary[pos + 2..pos + 6].try_into().unwrap()) as usize, 6),
        _ => panic!("partial body length where a definite one was expected"),
    }
}

/// A Delta Chat style multipart/encrypted message around `armored`.
pub fn encrypted_mime(from: &str, armored: &str) -> Vec<u8> {
    mime(from, "Version: 1", armored, "")
}

/// The same with a chosen version part and extra parts before the closing boundary.
pub fn mime(from: &str, version: &str, armored: &str, extra_parts: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\n\
         To: \"hidden-recipients\": ;\r\n\
         Subject: [...]\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <0123456789@c.test>\r\n\
         Chat-Version: 1.0\r\n\
         Autocrypt: addr={from}; keydata=xsBNBFx\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
         boundary=\"zxcv\"\r\n\
         \r\n\
         --zxcv\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\
         \r\n\
         {version}\r\n\
         \r\n\
         --zxcv\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\";\r\n\
         \r\n\
         {armored}\r\n\
         {extra_parts}\
         --zxcv--\r\n"
    )
    .into_bytes()
}
