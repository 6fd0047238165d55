//! Invite-only registration: `/new` hands out an account only with a valid invite token, and
//! a first login creates no account. Existing accounts are not affected.
//!
//! The operator manages the tokens in the policy's config; each token says how many accounts
//! it may create:
//!
//! ```toml
//! [[policy]]
//! path = "/etc/ferrymail/policies/invite_only_policy.wasm"
//! name = "invite-only"
//! [policy.config]
//! invites = { "spring-7f3k9q2m" = 25, "family-x8w2pd4n" = 5 }
//! ```
//!
//! Hand a token out as the QR code of `DCACCOUNT:https://<domain>/new?invite=<token>` (the
//! Delta Chat app scans it and signs up). Removing a token from the config and reloading
//! (`ferrymail policy reload`) revokes it; how often each was used is kept in the policy's
//! key-value store, across reloads and restarts.
//!
//! It replaces the built-in `accounts` policy in the bundle and builds on it: a valid token
//! gets credentials from chatmail's own rules (the kill switch `accept_new_accounts`, the
//! resource checks, the user name and password lengths), and a use is counted only when
//! credentials are handed out. Counters: `invite_used`, `invite_missing`, `invite_unknown`,
//! `invite_used_up`, `login_refused`.

use std::collections::BTreeMap;

use accounts_policy::Accounts;
use ferrymail_policy::*;
use serde::Deserialize;

pub struct InviteOnly;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    /// Token -> how many accounts it may create.
    invites: BTreeMap<String, u32>,
}

impl Policy for InviteOnly {
    const NAME: &'static str = "invite-only";

    fn create_account(_request: AccountRequest) -> Verdict {
        count("login_refused", 1);
        Verdict::reject(535, "5.7.8", "Accounts on this relay are created by invitation only")
    }

    fn new_account(request: NewAccountRequest) -> NewAccountVerdict {
        let config: Config = match config() {
            Ok(config) => config,
            Err(e) => {
                log(Level::Error, &e);
                return refuse(451, "4.3.0", "Invitations cannot be checked right now, try again later");
            }
        };
        let Some(token) = request.invite.clone() else {
            count("invite_missing", 1);
            return refuse(550, "5.7.1", "This relay hands out accounts only with an invitation");
        };
        let Some(&allowed) = config.invites.get(&token) else {
            count("invite_unknown", 1);
            return refuse(550, "5.7.1", "This invitation is not valid");
        };
        if uses(&token) >= allowed {
            count("invite_used_up", 1);
            return refuse(550, "5.7.1", "This invitation has been used up");
        }
        // chatmail's rules make the credentials, or refuse (registration closed, short of resources).
        let verdict = Accounts::new_account(request);
        if !matches!(verdict, NewAccountVerdict::Credentials(_)) {
            return verdict;
        }
        if !take_use(&token, allowed) {
            // Another request took the last use since we looked.
            count("invite_used_up", 1);
            return refuse(550, "5.7.1", "This invitation has been used up");
        }
        count("invite_used", 1);
        verdict
    }
}

export_policy!(InviteOnly, hooks: [create_account, new_account]);

fn refuse(code: u16, enhanced: &str, text: &str) -> NewAccountVerdict {
    NewAccountVerdict::Refuse(Reply::new(code, enhanced, text))
}

fn uses_key(token: &str) -> String {
    format!("uses/{token}")
}

/// How many accounts this token has created.
pub fn uses(token: &str) -> u32 {
    decode_uses(kv::get(&uses_key(token)).as_ref().map(|e| e.value.as_slice()))
}

fn decode_uses(stored: Option<&[u8]>) -> u32 {
    stored.and_then(|v| v.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0)
}

/// Count one use, unless the token is used up (compare-and-swap: two requests racing for the
/// last use cannot both get it).
fn take_use(token: &str, allowed: u32) -> bool {
    kv::update(&uses_key(token), |stored| {
        let used = decode_uses(stored);
        if used >= allowed {
            return (None, false);
        }
        (Some(((used + 1).to_be_bytes().to_vec(), None)), true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(invite: Option<&str>) -> NewAccountRequest {
        NewAccountRequest {
            domain: "chat.example.org".into(),
            invite: invite.map(str::to_string),
            resources: Resources { load_1m: 0.1, available_memory: 8 << 30, free_disk: 100 << 30 },
        }
    }

    fn refusal(verdict: NewAccountVerdict) -> String {
        match verdict {
            NewAccountVerdict::Refuse(reply) => format!("{} {}", reply.code, reply.text),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn setup() {
        testing::reset();
        testing::set_config(r#"{"mail_domain": "chat.example.org", "invites": {"friends-2x7q": 2}}"#);
    }

    #[test]
    fn a_token_creates_as_many_accounts_as_it_allows() {
        setup();
        let mut addresses = Vec::new();
        for _ in 0..2 {
            match InviteOnly::new_account(request(Some("friends-2x7q"))) {
                NewAccountVerdict::Credentials(c) => addresses.push(c.address),
                other => panic!("expected credentials, got {other:?}"),
            }
        }
        assert!(addresses.iter().all(|a| a.ends_with("@chat.example.org") && a.len() == 9 + 17), "{addresses:?}");
        assert_ne!(addresses[0], addresses[1]);
        assert_eq!(refusal(InviteOnly::new_account(request(Some("friends-2x7q")))), "550 This invitation has been used up");
        assert_eq!((testing::counter("invite_used"), testing::counter("invite_used_up")), (2, 1));
    }

    #[test]
    fn no_account_without_a_valid_token() {
        setup();
        assert_eq!(refusal(InviteOnly::new_account(request(None))), "550 This relay hands out accounts only with an invitation");
        assert_eq!(refusal(InviteOnly::new_account(request(Some("guess")))), "550 This invitation is not valid");
        let login = InviteOnly::create_account(AccountRequest {
            address: "abcdefghi@chat.example.org".into(),
            password_length: 20,
            resources: request(None).resources,
        });
        assert_eq!(login, Verdict::reject(535, "5.7.8", "Accounts on this relay are created by invitation only"));
        assert_eq!(testing::kv_keys(), Vec::<String>::new(), "nothing counted");
    }

    #[test]
    fn chatmails_own_refusals_do_not_cost_a_use() {
        setup();
        testing::set_config(
            r#"{"mail_domain": "chat.example.org", "accept_new_accounts": false, "invites": {"friends-2x7q": 2}}"#,
        );
        assert_eq!(refusal(InviteOnly::new_account(request(Some("friends-2x7q")))), "550 This relay does not accept new accounts");
        assert_eq!(uses("friends-2x7q"), 0);
    }

    #[test]
    fn revoking_a_token_is_removing_it_from_the_config() {
        setup();
        assert!(matches!(InviteOnly::new_account(request(Some("friends-2x7q"))), NewAccountVerdict::Credentials(_)));
        testing::set_config(r#"{"mail_domain": "chat.example.org", "invites": {}}"#);
        assert_eq!(refusal(InviteOnly::new_account(request(Some("friends-2x7q")))), "550 This invitation is not valid");
    }
}
