//! A stricter send rate for new accounts: accounts younger than `new_account_days` may send
//! `new_account_sends_per_hour` messages an hour (bursts of `new_account_burst`), on top of
//! the relay-wide rate limit. Spammers sign up and send at once; people rarely do.
//!
//! ```toml
//! [[policy]]
//! path = "/etc/ferrymail/policies/new_account_limit_policy.wasm"
//! name = "new-account-limit"
//! [policy.config]
//! new_account_days = 7
//! new_account_sends_per_hour = 30
//! new_account_burst = 5
//! ```
//!
//! Add it to the bundle next to the built-in `ratelimit`; both must agree for a message to
//! pass. The account's age comes from the host (`account`, contract 1.1.0); the rate state
//! lives in the policy's key-value store and expires by itself. Counter: `limited`.

use ferrymail_policy::*;
use serde::Deserialize;

pub struct NewAccountLimit;

#[derive(Deserialize)]
#[serde(default)]
struct Config {
    new_account_days: u32,
    new_account_sends_per_hour: u64,
    new_account_burst: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { new_account_days: 7, new_account_sends_per_hour: 30, new_account_burst: 5 }
    }
}

impl Policy for NewAccountLimit {
    const NAME: &'static str = "new-account-limit";

    fn mail_from(envelope: Envelope) -> Verdict {
        let Some(sender) = envelope.authenticated_as.filter(|_| envelope.direction == Direction::Outgoing) else {
            return Verdict::Accept;
        };
        let config: Config = config().unwrap_or_else(|e| {
            log(Level::Warn, &e);
            Config::default()
        });
        let Some(account) = account(&sender) else { return Verdict::Accept };
        if today().saturating_sub(account.created_day) >= config.new_account_days {
            return Verdict::Accept;
        }
        let per_hour = config.new_account_sends_per_hour;
        if per_hour > 0 && rate::allow(&sender.to_ascii_lowercase(), 3_600_000 / per_hour, config.new_account_burst) {
            return Verdict::Accept;
        }
        count("limited", 1);
        Verdict::defer(
            450,
            "4.7.1",
            format!("Too much mail from <{sender}>: new accounts may send {per_hour} messages an hour"),
        )
    }
}

export_policy!(NewAccountLimit, hooks: [mail_from]);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymail_policy::testing::outgoing;

    fn send(from: &str) -> bool {
        NewAccountLimit::mail_from(outgoing(from, &[])).is_accept()
    }

    #[test]
    fn young_accounts_wait_old_ones_do_not() {
        testing::reset();
        testing::set_config(r#"{"new_account_days": 7, "new_account_sends_per_hour": 6, "new_account_burst": 2}"#);
        testing::add_account("new@chat.example.org", today() - 6);
        testing::add_account("old@chat.example.org", today() - 7);
        let sent: Vec<bool> = (0..3).map(|_| send("New@chat.example.org")).collect();
        assert_eq!(sent, [true, true, false]);
        assert!((0..50).all(|_| send("old@chat.example.org")), "a week-old account is not limited");
        testing::advance_millis(10 * 60_000); // one message every ten minutes
        assert!(send("new@chat.example.org"));
        assert!(!send("new@chat.example.org"));
        assert_eq!(testing::counter("limited"), 2);
        let deferred = NewAccountLimit::mail_from(outgoing("new@chat.example.org", &[]));
        assert_eq!(deferred, Verdict::defer(450, "4.7.1", "Too much mail from <new@chat.example.org>: new accounts may send 6 messages an hour"));
    }

    #[test]
    fn the_limit_lifts_when_the_account_comes_of_age() {
        testing::reset();
        testing::add_account("new@chat.example.org", today());
        assert_eq!((0..6).filter(|_| send("new@chat.example.org")).count(), 5, "the default burst");
        testing::advance_millis(7 * 86_400_000 - 60_000);
        let sent = (0..6).filter(|_| send("new@chat.example.org")).count();
        assert_eq!(sent, 5, "six days and 23:59 old: still limited");
        testing::advance_millis(60_000);
        assert!((0..50).all(|_| send("new@chat.example.org")));
    }

    #[test]
    fn incoming_mail_and_unknown_senders_pass() {
        testing::reset();
        testing::set_config(r#"{"new_account_sends_per_hour": 0}"#);
        testing::add_account("new@chat.example.org", today());
        let incoming = testing::incoming("new@chat.example.org", &[]);
        assert!(NewAccountLimit::mail_from(incoming).is_accept());
        assert!(send("nobody@chat.example.org"));
        assert!(!send("new@chat.example.org"), "0 an hour: young accounts cannot send");
    }
}
