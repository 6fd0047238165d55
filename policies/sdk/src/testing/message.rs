//! Messages for tests, parsed by the relay's own parser (the `ferrymail-message` crate), so
//! that a policy sees in `cargo test` exactly what it sees in the relay.

use ferrymail_message::ParsedMessage;

use crate::{Armored, DkimResult, Direction, Envelope, Message, MessageVerdict, MessageView, Packet, Part, Policy};

/// A message to hand to a policy's [`Policy::check_message`] in a native test.
///
/// ```
/// use ferrymail_policy::testing::TestMessage;
///
/// let message = TestMessage::parse("From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n");
/// assert_eq!(message.view().addresses("from"), ["a@example.org"]);
/// ```
pub struct TestMessage {
    parsed: ParsedMessage,
}

impl TestMessage {
    /// Parse a whole message (an .eml file's bytes). Panics where the relay would refuse the
    /// message as unparseable before any policy saw it.
    pub fn parse(raw: impl AsRef<[u8]>) -> TestMessage {
        match ParsedMessage::parse(raw.as_ref().to_vec()) {
            Ok(parsed) => TestMessage { parsed },
            Err(e) => panic!("TestMessage::parse: {e}; the relay refuses such a message before any policy sees it"),
        }
    }

    /// The view a policy's `check_message` receives.
    pub fn view(&self) -> Message<'_> {
        Message::new(self)
    }
}

impl MessageView for TestMessage {
    fn size(&self) -> u64 {
        self.parsed.size()
    }
    fn headers(&self) -> Vec<(String, String)> {
        self.parsed.fields().iter().map(|f| (f.name.clone(), f.value.clone())).collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.parsed.header(name).map(str::to_string)
    }
    fn addresses(&self, name: &str) -> Vec<String> {
        self.parsed.addresses(name)
    }
    fn parts(&self) -> Vec<Part> {
        let parts = self.parsed.parts().iter().enumerate();
        parts
            .map(|(index, part)| Part {
                index: index as u32,
                parent: part.parent,
                content_type: part.content_type.clone(),
                children: part.children.clone(),
                body_size: self.parsed.body(index as u32).map_or(0, |b| b.len() as u64),
            })
            .collect()
    }
    fn part_header(&self, part: u32, name: &str) -> Option<String> {
        self.parsed.part_header(part, name).map(str::to_string)
    }
    fn body(&self, part: u32, max_bytes: u64) -> Option<Vec<u8>> {
        self.parsed.body_prefix(part, max_bytes).map(<[u8]>::to_vec)
    }
    fn armor(&self, part: u32) -> Result<Armored, String> {
        let armored = self.parsed.armor(part)?;
        let packets = armored.packets.iter();
        Ok(Armored {
            headers: armored.headers.clone(),
            packets: packets
                .map(|p| Packet { tag: p.tag, legacy_format: p.legacy_format, length: p.length, partial: p.partial })
                .collect(),
            error: armored.error.clone(),
        })
    }
}

/// The envelope of a message submitted by the local user `from` (who logged in as `from`).
pub fn outgoing(from: &str, to: &[&str]) -> Envelope {
    Envelope {
        direction: Direction::Outgoing,
        mail_from: from.to_string(),
        rcpt_to: to.iter().map(|r| r.to_string()).collect(),
        authenticated_as: Some(from.to_string()),
    }
}

/// The envelope of a message another server delivers from `from`.
pub fn incoming(from: &str, to: &[&str]) -> Envelope {
    Envelope {
        direction: Direction::Incoming,
        mail_from: from.to_string(),
        rcpt_to: to.iter().map(|r| r.to_string()).collect(),
        authenticated_as: None,
    }
}

/// A passing DKIM signature of `domain`, as the relay reports one it verified.
pub fn dkim_pass(domain: &str) -> DkimResult {
    DkimResult { domain: domain.to_ascii_lowercase(), selector: "test".to_string(), pass: true }
}

/// Ask policy `P` about `message` as the relay would after DATA.
pub fn check_message<P: Policy>(envelope: Envelope, message: &TestMessage, dkim: Vec<DkimResult>) -> MessageVerdict {
    P::check_message(envelope, &message.view(), dkim)
}
