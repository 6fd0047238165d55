//! GETMETADATA and SETMETADATA (RFC 5464): the server entries the app reads on every
//! connection, and push device tokens (`/private/devicetoken` on INBOX), several per account.
//!
//! The app's connection loop stops if GETMETADATA fails, so unknown entries are simply left
//! out of the one `* METADATA "" (...)` line rather than refused.

use imap_codec::imap_types::core::{IString, Literal, NString, NString8, Tag, Vec1};
use imap_codec::imap_types::extensions::metadata::{Entry, EntryValue, MetadataResponse};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Data;

use super::mailbox_name;
use crate::imap::respond::{self, code};
use crate::imap::session::Session;

pub const DEVICE_TOKEN: &str = "/private/devicetoken";

impl Session {
    pub(in crate::imap) async fn get_metadata(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>, entries: &Vec1<Entry<'static>>) {
        let server = mailbox_name(mailbox).is_empty();
        let mut values = Vec::new();
        for entry in entries.as_ref() {
            let key = String::from_utf8_lossy(entry.inner().as_ref()).to_ascii_lowercase();
            let value = if server { self.server_entry(&key) } else { self.account_entry(&key).await };
            // As literals, the form Dovecot sends and chatmail's own tools read.
            if let Some(value) = value.and_then(|v| Literal::try_from(v.into_bytes()).ok()).map(IString::Literal) {
                values.push(EntryValue { entry: entry.clone(), value: NString8::NString(NString(Some(value))) });
            }
        }
        if let Ok(values) = Vec1::try_from(values) {
            self.out.data(Data::Metadata { mailbox: mailbox.clone(), items: MetadataResponse::WithValues(values) });
        }
        self.out.ok(tag, None, respond::DONE);
    }

    pub(in crate::imap) async fn set_metadata(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>, entries: &Vec1<EntryValue<'static>>) {
        if mailbox_name(mailbox) != "INBOX" {
            return self.out.no(tag, Some(code("PERMISSIONDENIED")), "Only INBOX's device token can be set");
        }
        for entry_value in entries.as_ref() {
            let key = String::from_utf8_lossy(entry_value.entry.inner().as_ref()).to_ascii_lowercase();
            if key != DEVICE_TOKEN {
                return self.out.no(tag, Some(code("PERMISSIONDENIED")), "This entry cannot be set");
            }
            let token = match &entry_value.value {
                NString8::NString(NString(Some(value))) => Some(String::from_utf8_lossy(value.as_ref()).trim().to_string()),
                _ => None,
            };
            if token.as_ref().is_some_and(|t| t.len() > crate::push::MAX_TOKEN_LENGTH) {
                return self.out.no(tag, None, "Device token too long");
            }
            if let Err(e) = self.set_device_token(token).await {
                return self.store_failed(tag, e);
            }
        }
        self.out.ok(tag, None, respond::DONE);
    }

    fn server_entry(&self, key: &str) -> Option<String> {
        let config = &self.relay.config;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match key {
            "/shared/comment" => non_empty(&config.metadata_comment),
            "/shared/admin" => non_empty(&config.privacy_mail).map(|mail| format!("mailto:{mail}")),
            // Its presence tells the app this relay can push.
            "/shared/vendor/deltachat/maxsmtprecipients" => Some(crate::smtp::MAX_RECIPIENTS.to_string()),
            "/shared/vendor/deltachat/appversions" => non_empty(&config.app_versions),
            "/shared/vendor/deltachat/irohrelay" => config.iroh_relay_url(),
            // Each account its own credentials (turn.rs): none before login.
            "/shared/vendor/deltachat/turn" => self.account.as_ref().and_then(|a| crate::turn::metadata_value(&self.relay, a.id)),
            _ => None,
        }
    }

    async fn account_entry(&self, key: &str) -> Option<String> {
        if key != DEVICE_TOKEN {
            return None;
        }
        let account_id = self.account.as_ref()?.id;
        let today = self.relay.clock.today();
        let tokens = self.relay.store.run(move |s| crate::push::tokens(s, account_id, today)).await.ok()?;
        (!tokens.is_empty()).then(|| tokens.join(" "))
    }

    /// Add a device token (or, with None, forget all of this account's tokens).
    async fn set_device_token(&mut self, token: Option<String>) -> Result<(), crate::store::StoreError> {
        let Some(account_id) = self.account.as_ref().map(|a| a.id) else { return Ok(()) };
        let today = self.relay.clock.today();
        self.relay
            .store
            .run(move |s| match token.filter(|t| !t.is_empty()) {
                Some(token) => crate::push::add_token(s, account_id, &token, today),
                None => crate::push::forget_tokens(s, account_id),
            })
            .await
    }
}
