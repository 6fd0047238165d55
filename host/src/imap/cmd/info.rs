//! ENABLE and NAMESPACE.

use imap_codec::imap_types::core::{QuotedChar, Tag, Vec1};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::response::Data;

use crate::imap::respond;
use crate::imap::session::{Session, istring};

/// Mailbox names are flat here, but clients expect a hierarchy delimiter.
pub const DELIMITER: char = '/';

impl Session {
    pub(in crate::imap) fn enable(&mut self, tag: &Tag<'static>, capabilities: Vec1<CapabilityEnable<'static>>) {
        let mut enabled = Vec::new();
        for capability in capabilities.into_inner() {
            if capability == CapabilityEnable::CondStore {
                self.condstore = true;
                enabled.push(capability);
            }
        }
        self.out.data(Data::Enabled { capabilities: enabled });
        self.out.ok(tag, None, respond::DONE);
    }

    pub(in crate::imap) fn namespace(&mut self, tag: &Tag<'static>) {
        let personal = vec![Namespace::new(istring(""), Some(QuotedChar::unvalidated(DELIMITER)))];
        self.out.data(Data::Namespace { personal, other: Vec::new(), shared: Vec::new() });
        self.out.ok(tag, None, respond::DONE);
    }
}
