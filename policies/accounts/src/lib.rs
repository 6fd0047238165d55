//! Account creation, chatmail's rules (SPEC §1): accounts appear on first login when the
//! address is well-formed for this relay, and `/new` hands out random credentials. Both stop
//! when the operator closes registration or the machine is short of resources; existing
//! accounts keep working either way.

use ferrymail_policy::*;
use serde::Deserialize;

pub struct Accounts;

#[derive(Deserialize)]
#[serde(default)]
struct Config {
    mail_domain: String,
    username_min_length: usize,
    username_max_length: usize,
    password_min_length: u32,
    /// The operator's kill switch for new accounts.
    accept_new_accounts: bool,
    max_load_1m: f64,
    min_available_memory: u64,
    min_free_disk_space: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mail_domain: String::new(),
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
            accept_new_accounts: true,
            max_load_1m: 5.0,
            min_available_memory: 200 * 1024 * 1024,
            min_free_disk_space: 1024 * 1024 * 1024,
        }
    }
}

const LOCAL_PART_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const PASSWORD_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl Policy for Accounts {
    const NAME: &'static str = "accounts";

    fn create_account(request: AccountRequest) -> Verdict {
        let config: Config = config().unwrap_or_default();
        if let Some(refusal) = closed(&config, &request.resources) {
            return refusal;
        }
        let (local, domain) = request.address.rsplit_once('@').unwrap_or((&request.address, ""));
        if !domain.eq_ignore_ascii_case(&config.mail_domain) {
            return Verdict::reject(535, "5.7.8", "Not an address of this relay");
        }
        let length_ok = (config.username_min_length..=config.username_max_length).contains(&local.len());
        let chars_ok = local.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !length_ok || !chars_ok {
            return Verdict::reject(535, "5.7.8", "Invalid user name for a new account");
        }
        if request.password_length < config.password_min_length {
            return Verdict::reject(535, "5.7.8", "Password too short for a new account");
        }
        Verdict::Accept
    }

    fn new_account(request: NewAccountRequest) -> NewAccountVerdict {
        let config: Config = config().unwrap_or_default();
        if let Some(Verdict::Reject(reply) | Verdict::Defer(reply)) = closed(&config, &request.resources) {
            return NewAccountVerdict::Refuse(reply);
        }
        let local = random_string(config.username_max_length.max(config.username_min_length), LOCAL_PART_CHARS);
        let password = random_string(config.password_min_length as usize + 3, PASSWORD_CHARS);
        NewAccountVerdict::Credentials(Credentials { address: format!("{local}@{}", request.domain), password })
    }
}

#[cfg(feature = "export")]
export_policy!(Accounts, hooks: [create_account, new_account]);

/// Why no account may be created right now, if that is so.
fn closed(config: &Config, resources: &Resources) -> Option<Verdict> {
    if !config.accept_new_accounts {
        return Some(Verdict::reject(550, "5.7.1", "This relay does not accept new accounts"));
    }
    let short = resources.load_1m > config.max_load_1m
        || resources.available_memory < config.min_available_memory
        || resources.free_disk < config.min_free_disk_space;
    short.then(|| Verdict::defer(451, "4.3.2", "No new accounts while the relay is short of resources"))
}
