//! A size cap on the largest part of a message, per sender domain: for instance a low cap
//! for a partner whose mail arrives in cleartext, or a higher one for a domain that shares
//! large files. The largest part is what carries an attachment; in an encrypted message it is
//! the ciphertext, which is as large as what it hides.
//!
//! ```toml
//! [[policy]]
//! path = "/etc/ferrymail/policies/attachment_cap_policy.wasm"
//! name = "attachment-cap"
//! [policy.config]
//! attachment_caps = { "*" = "10M", "partner.example" = "2M", "files.example" = "50M" }
//! ```
//!
//! The sender domain is the `From:` address's (put this policy after `encryption`, which
//! checks that it is not forged), else the envelope sender's. `"*"` is the cap for every
//! other domain; without it, other domains are not capped. Sizes are bytes, or a number with
//! K, M or G (powers of 1024). Counter: `capped`.

use std::collections::BTreeMap;

use ferrymail_policy::*;
use serde::Deserialize;

pub struct AttachmentCap;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    /// Domain (or "*") -> size.
    attachment_caps: BTreeMap<String, Size>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            Size::Bytes(n) => return Ok(*n),
            Size::Text(text) => text.trim(),
        };
        let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(at) => text.split_at(at),
            None => (text, ""),
        };
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            _ => return Err(format!("`{text}` is not a size like 10M")),
        };
        let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size like 10M"))?;
        n.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl Policy for AttachmentCap {
    const NAME: &'static str = "attachment-cap";

    fn check_message(envelope: Envelope, message: &Message<'_>, _dkim: Vec<DkimResult>) -> MessageVerdict {
        let config: Config = match config() {
            Ok(config) => config,
            Err(e) => {
                log(Level::Error, &e);
                return MessageVerdict::accept();
            }
        };
        let sender = message.addresses("from").into_iter().next().unwrap_or(envelope.mail_from);
        let domain = domain_of(&sender);
        let cap = config.attachment_caps.iter().find(|(d, _)| d.eq_ignore_ascii_case(&domain)).map(|(_, size)| size);
        let Some(cap) = cap.or_else(|| config.attachment_caps.get("*")) else {
            return MessageVerdict::accept();
        };
        let cap = match cap.bytes() {
            Ok(cap) => cap,
            Err(e) => {
                log(Level::Error, &format!("attachment_caps: {e}"));
                return MessageVerdict::accept();
            }
        };
        let largest = message.parts().iter().filter(|p| p.children.is_empty()).map(|p| p.body_size).max().unwrap_or(0);
        if largest <= cap {
            return MessageVerdict::accept();
        }
        count("capped", 1);
        let shown = if domain.is_empty() { "this sender".to_string() } else { domain };
        Verdict::reject(552, "5.3.4", format!("Attachment too large: {largest} bytes, mail from {shown} may carry {cap}"))
            .into()
    }
}

export_policy!(AttachmentCap, hooks: [check_message]);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymail_policy::testing::{TestMessage, check_message, incoming};

    /// A message with a text part and a base64 attachment of `size` bytes.
    fn with_attachment(from: &str, size: usize) -> TestMessage {
        use std::fmt::Write;
        let mut base64 = String::new();
        // "AAAA" is three zero bytes.
        for line in 0..size.div_ceil(57) {
            let bytes = (size - line * 57).min(57);
            assert_eq!(bytes % 3, 0, "sizes in this test are multiples of 3");
            writeln!(base64, "{}\r", "AAAA".repeat(bytes / 3)).unwrap();
        }
        TestMessage::parse(format!(
            "From: {from}\r\nTo: alice@chat.example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
             --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{base64}--b--\r\n"
        ))
    }

    fn verdict(from: &str, size: usize) -> Verdict {
        check_message::<AttachmentCap>(incoming(from, &["alice@chat.example.org"]), &with_attachment(from, size), vec![]).verdict
    }

    #[test]
    fn caps_by_sender_domain() {
        testing::reset();
        testing::set_config(r#"{"attachment_caps": {"*": "3K", "Partner.example": 1200}}"#);
        assert!(verdict("bob@partner.example", 1200).is_accept());
        assert_eq!(
            verdict("bob@partner.example", 1203),
            Verdict::reject(552, "5.3.4", "Attachment too large: 1203 bytes, mail from partner.example may carry 1200")
        );
        assert!(verdict("carol@other.example", 3072).is_accept(), "3K is 3072 bytes");
        assert!(!verdict("carol@other.example", 3075).is_accept());
        assert_eq!(testing::counter("capped"), 2);
    }

    #[test]
    fn without_a_default_other_domains_are_not_capped() {
        testing::reset();
        testing::set_config(r#"{"attachment_caps": {"partner.example": "1K"}}"#);
        assert!(verdict("carol@other.example", 30_000).is_accept());
        assert!(!verdict("bob@partner.example", 30_000).is_accept());
    }

    #[test]
    fn sizes() {
        let size = |text: &str| Size::Text(text.into()).bytes();
        assert_eq!(size("10M"), Ok(10 << 20));
        assert_eq!(size("512 KiB"), Ok(512 << 10));
        assert_eq!(size("77"), Ok(77));
        assert!(size("10 furlongs").is_err());
        assert!(size("99999999999G").is_err());
    }
}
