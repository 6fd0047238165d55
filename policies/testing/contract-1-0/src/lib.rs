//! A policy as a guest of contract 1.0.0 would have been written: straight against
//! `wit/policy.wit` as released then (kept here, frozen), with no SDK in between. It uses a
//! host function, the key-value store and the message resource, so that loading and running
//! it exercises every interface a 1.0.0 guest imports.
//!
//! - `mail-from`: defers a sender's second message within a minute (`451 4.7.1 Slow down`);
//! - `check-message`: rejects a message whose Subject is "1.0.0" (`550 5.7.1 <size> bytes`).

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "wit", world: "policy" });

use chatmail::policy::message::Message;
use chatmail::policy::types::*;
use chatmail::policy::{host, kv};
use exports::chatmail::policy::hooks::Guest;

struct Contract10;

fn reply(code: u16, enhanced: &str, text: String) -> Reply {
    Reply { code, enhanced: enhanced.into(), text }
}

impl Guest for Contract10 {
    fn describe() -> PolicyInfo {
        PolicyInfo { name: "contract-1-0".into(), hooks: vec!["mail-from".into(), "check-message".into()] }
    }

    fn create_account(_request: AccountRequest) -> Verdict {
        Verdict::Accept
    }

    fn new_account(_request: NewAccountRequest) -> NewAccountVerdict {
        NewAccountVerdict::Accept
    }

    fn mail_from(envelope: Envelope) -> Verdict {
        let key = format!("seen/{}", envelope.mail_from);
        if kv::get(&key).is_some() {
            host::log(host::Level::Info, "second message within a minute");
            return Verdict::Defer(reply(451, "4.7.1", "Slow down".into()));
        }
        kv::set(&key, &host::now_millis().to_be_bytes(), Some(60));
        Verdict::Accept
    }

    fn rcpt_to(_envelope: Envelope, _recipient: Recipient) -> Verdict {
        Verdict::Accept
    }

    fn check_message(_envelope: Envelope, message: &Message, _dkim: Vec<DkimResult>) -> MessageVerdict {
        let verdict = match message.header("Subject").as_deref() {
            Some("1.0.0") => Verdict::Reject(reply(550, "5.7.1", format!("{} bytes", message.size()))),
            _ => Verdict::Accept,
        };
        let none = || HeaderEdits { remove: Vec::new(), set: Vec::new() };
        MessageVerdict { verdict, edits: none(), delivery_edits: none(), mail_from: None }
    }

    fn retention(_now: u64, _account: AccountState, _batch: Vec<StoredMessage>) -> RetentionDecision {
        RetentionDecision { delete_account: false, delete: Vec::new() }
    }
}

export!(Contract10);
