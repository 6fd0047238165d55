//! One message, parsed once (the `ferrymail-message` crate, shared with the policy SDK's test
//! helpers), and what the relay does with raw messages besides: header edits and field access.

pub mod edit;
pub mod header;

pub use ferrymail_message::*;
