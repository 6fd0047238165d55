//! The read-only message view. The host parses a message once; a policy asks only for what
//! it needs, and bodies are copied into the policy only on request.

use crate::{Armored, Part};

/// What a policy can ask about a message. The relay's view implements it inside Wasm; tests
/// and native benchmarks provide their own.
pub trait MessageView {
    fn size(&self) -> u64;
    fn headers(&self) -> Vec<(String, String)>;
    fn header(&self, name: &str) -> Option<String>;
    fn addresses(&self, name: &str) -> Vec<String>;
    fn parts(&self) -> Vec<Part>;
    fn part_header(&self, part: u32, name: &str) -> Option<String>;
    fn body(&self, part: u32, max_bytes: u64) -> Option<Vec<u8>>;
    fn armor(&self, part: u32) -> Result<Armored, String>;
}

/// The message handed to [`crate::Policy::check_message`].
pub struct Message<'a> {
    view: &'a dyn MessageView,
}

impl<'a> Message<'a> {
    pub fn new(view: &'a dyn MessageView) -> Self {
        Message { view }
    }

    /// Size of the raw message in bytes.
    pub fn size(&self) -> u64 {
        self.view.size()
    }
    /// Top-level header fields in order: (name as written, unfolded raw value).
    pub fn headers(&self) -> Vec<(String, String)> {
        self.view.headers()
    }
    /// The unfolded raw value of the first top-level field with this name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.view.header(name)
    }
    /// The addresses of an address field (From, To, Cc, ...), lower case.
    pub fn addresses(&self, name: &str) -> Vec<String> {
        self.view.addresses(name)
    }
    /// Every MIME part; part 0 is the message itself.
    pub fn parts(&self) -> Vec<Part> {
        self.view.parts()
    }
    /// The first field with this name in a part's headers.
    pub fn part_header(&self, part: u32, name: &str) -> Option<String> {
        self.view.part_header(part, name)
    }
    /// A leaf part's decoded body, cut at `max_bytes`.
    pub fn body(&self, part: u32, max_bytes: u64) -> Option<Vec<u8>> {
        self.view.body(part, max_bytes)
    }
    /// A leaf part's body read as an ASCII-armored OpenPGP message.
    pub fn armor(&self, part: u32) -> Result<Armored, String> {
        self.view.armor(part)
    }
}

impl MessageView for crate::bindings::chatmail::policy::message::Message {
    fn size(&self) -> u64 {
        self.size()
    }
    fn headers(&self) -> Vec<(String, String)> {
        self.headers()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.header(name)
    }
    fn addresses(&self, name: &str) -> Vec<String> {
        self.addresses(name)
    }
    fn parts(&self) -> Vec<Part> {
        self.parts()
    }
    fn part_header(&self, part: u32, name: &str) -> Option<String> {
        self.part_header(part, name)
    }
    fn body(&self, part: u32, max_bytes: u64) -> Option<Vec<u8>> {
        self.body(part, max_bytes)
    }
    fn armor(&self, part: u32) -> Result<Armored, String> {
        self.armor(part)
    }
}
