//! Uses what contract 1.1.0 added: `mail-from` defers senders whose account is younger than
//! a day (`451 4.7.1 created on day <n>`) and counts `young-sender`; senders without a local
//! account pass and count `no-account`.

use ferrymail_policy::*;

pub struct Current;

impl Policy for Current {
    const NAME: &'static str = "current";

    fn mail_from(envelope: Envelope) -> Verdict {
        match account(&envelope.mail_from) {
            Some(info) if info.created_day >= today() => {
                count("young-sender", 1);
                Verdict::defer(451, "4.7.1", format!("created on day {}", info.created_day))
            }
            Some(_) => Verdict::Accept,
            None => {
                count("no-account", 1);
                Verdict::Accept
            }
        }
    }
}

export_policy!(Current, hooks: [mail_from]);

#[cfg(test)]
mod tests {
    use super::*;

    fn from(sender: &str) -> Envelope {
        Envelope { direction: Direction::Outgoing, mail_from: sender.into(), rcpt_to: vec![], authenticated_as: None }
    }

    #[test]
    fn young_accounts_wait_old_ones_pass() {
        testing::reset();
        testing::add_account("new@c.test", today());
        testing::add_account("old@c.test", today() - 3);
        assert!(!Current::mail_from(from("NEW@c.test")).is_accept());
        assert!(Current::mail_from(from("old@c.test")).is_accept());
        assert!(Current::mail_from(from("far@away.test")).is_accept());
        assert_eq!((testing::counter("young-sender"), testing::counter("no-account")), (1, 1));
    }
}
