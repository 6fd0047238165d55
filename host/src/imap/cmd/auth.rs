//! LOGIN and AUTHENTICATE PLAIN (with SASL-IR). Both need TLS; both create the account on
//! first login through the accounts policy, like SMTP AUTH.

use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::Code;

use crate::auth::LoginError;
use crate::imap::respond::{self, capabilities, code};
use crate::imap::session::Session;

impl Session {
    pub(in crate::imap) async fn login(&mut self, tag: &Tag<'static>, user: &str, password: &str) {
        if self.account.is_some() {
            return self.out.bad(Some(tag), None, "Already logged in");
        }
        if !self.io.stream.is_tls() {
            return self.out.no(tag, Some(code("PRIVACYREQUIRED")), respond::NEED_TLS);
        }
        match self.relay.auth.login(user, password).await {
            Ok(account) => {
                self.logged_in(account);
                let caps = capabilities(true, true);
                self.out.ok(tag, Some(Code::Capability(caps)), respond::LOGIN_OK);
            }
            Err(LoginError::Temporary(reason)) => {
                tracing::debug!("IMAP login deferred: {reason}");
                self.out.no(tag, Some(code("UNAVAILABLE")), respond::AUTH_TEMPORARY);
            }
            Err(LoginError::Invalid | LoginError::Refused(_)) => {
                self.out.no(tag, Some(code("AUTHENTICATIONFAILED")), respond::AUTH_FAILED)
            }
        }
    }

    pub(in crate::imap) async fn authenticate(&mut self, tag: Tag<'static>, mechanism: AuthMechanism<'static>, initial: Option<Vec<u8>>) {
        if !matches!(mechanism, AuthMechanism::Plain) {
            return self.out.no(&tag, None, "Unsupported authentication mechanism");
        }
        if !self.io.stream.is_tls() {
            return self.out.no(&tag, Some(code("PRIVACYREQUIRED")), respond::NEED_TLS);
        }
        match initial {
            Some(response) => self.plain(&tag, &response).await,
            None => {
                self.out.continuation("");
                self.await_authenticate_data(tag);
            }
        }
    }

    pub(in crate::imap) async fn authenticate_data(&mut self, tag: Tag<'static>, data: Option<AuthenticateData<'static>>) {
        match data {
            Some(AuthenticateData::Continue(secret)) => {
                let response = secret.declassify().to_vec();
                self.plain(&tag, &response).await
            }
            Some(AuthenticateData::Cancel) => self.out.bad(Some(&tag), None, "Authentication cancelled"),
            None => self.out.bad(Some(&tag), None, "Invalid authentication data"),
        }
    }

    /// SASL PLAIN: authzid \0 authcid \0 password.
    async fn plain(&mut self, tag: &Tag<'static>, response: &[u8]) {
        let text = String::from_utf8_lossy(response);
        let mut fields = text.splitn(3, '\0');
        match (fields.next(), fields.next(), fields.next()) {
            (Some(_), Some(user), Some(password)) => self.login(tag, user, password).await,
            _ => self.out.no(tag, Some(code("AUTHENTICATIONFAILED")), respond::AUTH_FAILED),
        }
    }
}
