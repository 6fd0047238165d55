//! Conveniences on the contract's types.

use crate::{HeaderEdits, MessageVerdict, Reply, RetentionDecision, Verdict};

impl Reply {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply { code, enhanced: enhanced.to_string(), text: text.into() }
    }
}

impl Verdict {
    /// A permanent refusal: `code` must be 5xx.
    pub fn reject(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Verdict::Reject(Reply::new(code, enhanced, text))
    }
    /// A temporary refusal: `code` must be 4xx.
    pub fn defer(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Verdict::Defer(Reply::new(code, enhanced, text))
    }
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
}

impl Default for HeaderEdits {
    fn default() -> Self {
        HeaderEdits { remove: Vec::new(), set: Vec::new() }
    }
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }
}

impl MessageVerdict {
    /// Accept, no edits.
    pub fn accept() -> Self {
        MessageVerdict::from(Verdict::Accept)
    }
}

impl From<Verdict> for MessageVerdict {
    fn from(verdict: Verdict) -> Self {
        MessageVerdict {
            verdict,
            edits: HeaderEdits::default(),
            delivery_edits: HeaderEdits::default(),
            mail_from: None,
        }
    }
}

impl Default for RetentionDecision {
    /// Keep everything.
    fn default() -> Self {
        RetentionDecision { delete_account: false, delete: Vec::new() }
    }
}

/// The part after the last `@`, lower case ("" when there is none).
pub fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

/// The part before the last `@` (the whole address when there is none).
pub fn local_part_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(l, _)| l).unwrap_or(address)
}
