//! The SDK for ferrymail policies. The guide below is this crate's README.md; its Rust
//! examples run as doctests.
#![doc = include_str!("../README.md")]

extern crate self as ferrymail_policy;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The bindings generated from `wit/policy.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__export_world_policy",
        default_bindings_module: "ferrymail_policy::bindings",
        runtime_path: "ferrymail_policy::__wit_bindgen::rt",
        additional_derives: [PartialEq],
    });
}

mod host;
pub mod kv;
mod message;
pub mod rate;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

pub use bindings::chatmail::policy::message::{Armored, Packet, Part};
pub use bindings::chatmail::policy::types::{
    AccountRequest, AccountState, Credentials, Direction, DkimResult, Envelope, HeaderEdits,
    MailboxUsage, MessageVerdict, NewAccountVerdict, NewAccountRequest, PolicyInfo, Recipient, Reply,
    Resources, RetentionDecision, StoredMessage, Verdict,
};
pub use host::{AccountInfo, Level, account, config, config_json, count, log, now_millis, random_bytes, random_string, today};
pub use message::{Message, MessageView};
pub use types::{domain_of, local_part_of};

/// A policy: implement the hooks you need; the others answer "accept".
///
/// Hooks are plain functions, not methods: every call runs in a fresh instance, so state
/// that must outlive a call belongs in [`kv`].
pub trait Policy {
    /// The name in logs and metrics (the operator's config may override it).
    const NAME: &'static str;

    /// May a first login create this account?
    fn create_account(_request: AccountRequest) -> Verdict {
        Verdict::Accept
    }

    /// Credentials for `POST /new`.
    fn new_account(_request: NewAccountRequest) -> NewAccountVerdict {
        NewAccountVerdict::Accept
    }

    /// MAIL FROM.
    fn mail_from(_envelope: Envelope) -> Verdict {
        Verdict::Accept
    }

    /// One RCPT TO.
    fn rcpt_to(_envelope: Envelope, _recipient: Recipient) -> Verdict {
        Verdict::Accept
    }

    /// The whole message.
    fn check_message(
        _envelope: Envelope,
        _message: &Message<'_>,
        _dkim: Vec<DkimResult>,
    ) -> MessageVerdict {
        MessageVerdict::accept()
    }

    /// One batch of an account's stored messages, oldest first.
    fn retention(
        _now: u64,
        _account: AccountState,
        _batch: Vec<StoredMessage>,
    ) -> RetentionDecision {
        RetentionDecision::default()
    }
}

/// Export a [`Policy`] as the component's hooks.
///
/// List the hooks the type implements: the host calls only those, so a policy that cares
/// about messages costs nothing at login. A misspelt hook is a compile error.
///
/// ```ignore
/// export_policy!(Encryption, hooks: [check_message]);
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ty, hooks: [$($hook:ident),* $(,)?]) => {
        const _: () = {
            use $crate::bindings::exports::chatmail::policy::hooks as __hooks;
            use $crate::Policy as __Policy;

            // Name every listed hook once, so that a typo fails to compile.
            $(let _ = <$policy as __Policy>::$hook;)*

            struct __Export;

            impl __hooks::Guest for __Export {
                fn describe() -> $crate::PolicyInfo {
                    $crate::PolicyInfo {
                        name: <$policy as __Policy>::NAME.to_string(),
                        hooks: vec![$(stringify!($hook).replace('_', "-")),*],
                    }
                }
                fn create_account(request: $crate::AccountRequest) -> $crate::Verdict {
                    <$policy as __Policy>::create_account(request)
                }
                fn new_account(request: $crate::NewAccountRequest) -> $crate::NewAccountVerdict {
                    <$policy as __Policy>::new_account(request)
                }
                fn mail_from(envelope: $crate::Envelope) -> $crate::Verdict {
                    <$policy as __Policy>::mail_from(envelope)
                }
                fn rcpt_to(envelope: $crate::Envelope, recipient: $crate::Recipient) -> $crate::Verdict {
                    <$policy as __Policy>::rcpt_to(envelope, recipient)
                }
                fn check_message(
                    envelope: $crate::Envelope,
                    message: &$crate::bindings::chatmail::policy::message::Message,
                    dkim: Vec<$crate::DkimResult>,
                ) -> $crate::MessageVerdict {
                    <$policy as __Policy>::check_message(envelope, &$crate::Message::new(message), dkim)
                }
                fn retention(
                    now: u64,
                    account: $crate::AccountState,
                    batch: Vec<$crate::StoredMessage>,
                ) -> $crate::RetentionDecision {
                    <$policy as __Policy>::retention(now, account, batch)
                }
            }

            // Native builds (tests, benchmarks) call the policy type directly.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_world_policy!(__Export with_types_in $crate::bindings);
        };
    };
}
