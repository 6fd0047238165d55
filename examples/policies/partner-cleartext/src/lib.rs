//! chatmail's encryption rules, with one exception for a transition period: cleartext mail to
//! and from listed partner domains passes. Everything else is as strict as the built-in
//! `encryption` policy, which this one replaces in the bundle (and builds on):
//!
//! ```toml
//! [[policy]]
//! path = "/etc/ferrymail/policies/partner_cleartext_policy.wasm"
//! name = "partner-cleartext"
//! [policy.config]
//! partner_domains = ["legacy-mail.example", "partner.example"]
//! partners_until = "2027-06-30"     # optional: the last day (UTC) the exception holds
//! ```
//!
//! Outgoing, a cleartext message passes when every recipient is at a partner domain. Incoming,
//! when its `From:` is at a partner domain and carries that domain's valid DKIM signature (the
//! built-in rules check the signature first). Counters: `partner_cleartext` for each message
//! let through, `transition_over` for one the exception would have let through after
//! `partners_until`.

use encryption_policy::{ENCRYPTION_NEEDED, Encryption};
use ferrymail_policy::*;
use serde::Deserialize;

pub struct PartnerCleartext;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    partner_domains: Vec<String>,
    /// "YYYY-MM-DD", inclusive.
    partners_until: Option<String>,
}

impl Config {
    fn is_partner(&self, address: &str) -> bool {
        let domain = domain_of(address);
        !domain.is_empty() && self.partner_domains.iter().any(|p| p.eq_ignore_ascii_case(&domain))
    }
}

impl Policy for PartnerCleartext {
    const NAME: &'static str = "partner-cleartext";

    fn check_message(envelope: Envelope, message: &Message<'_>, dkim: Vec<DkimResult>) -> MessageVerdict {
        let verdict = Encryption::check_message(envelope.clone(), message, dkim);
        let encryption_needed = matches!(&verdict.verdict, Verdict::Reject(r) if r.code == ENCRYPTION_NEEDED.0);
        if !encryption_needed {
            return verdict;
        }
        let config: Config = match config() {
            Ok(config) => config,
            Err(e) => {
                log(Level::Error, &e);
                return verdict;
            }
        };
        let from = message.addresses("from").into_iter().next().unwrap_or_default();
        let partner = match envelope.direction {
            Direction::Outgoing => {
                !envelope.rcpt_to.is_empty() && envelope.rcpt_to.iter().all(|r| config.is_partner(r))
            }
            Direction::Incoming => config.is_partner(&from),
        };
        if !partner {
            return verdict;
        }
        match config.partners_until.as_deref().map(day_number) {
            Some(Ok(last_day)) if today() > last_day => {
                count("transition_over", 1);
                return verdict;
            }
            Some(Err(e)) => {
                // A typo must not open the exception for ever: stay strict, and say why.
                log(Level::Error, &format!("partners_until: {e}"));
                return verdict;
            }
            _ => {}
        }
        count("partner_cleartext", 1);
        let mut accepted = MessageVerdict::accept();
        if envelope.direction == Direction::Incoming && !envelope.mail_from.is_empty() && !envelope.mail_from.eq_ignore_ascii_case(&from) {
            // As the built-in rules do: the recipient must not see a forged envelope sender.
            accepted.mail_from = Some(String::new());
        }
        accepted
    }
}

export_policy!(PartnerCleartext, hooks: [check_message]);

/// "YYYY-MM-DD" as days since 1970-01-01, the unit of [`today`].
pub fn day_number(date: &str) -> Result<u32, String> {
    let bad = || format!("`{date}` is not a date like 2027-06-30");
    let mut fields = date.trim().splitn(3, '-').map(|f| f.parse::<i64>().map_err(|_| bad()));
    let (y, m, d) = (fields.next().ok_or_else(bad)??, fields.next().ok_or_else(bad)??, fields.next().ok_or_else(bad)??);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from civil (proleptic Gregorian), counting years from March so leap days come last.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Ok((era * 146_097 + day_of_era - 719_468) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymail_policy::testing::{TestMessage, check_message, dkim_pass, incoming, outgoing};

    const CLEARTEXT: &str = "From: alice@chat.example.org\r\nTo: bob@partner.example\r\nSubject: hi\r\n\r\nhello\r\n";
    const FROM_PARTNER: &str = "From: bob@partner.example\r\nTo: alice@chat.example.org\r\nSubject: re\r\n\r\nhi\r\n";

    fn setup(until: Option<&str>) {
        testing::reset(); // 2026-01-01
        let until = until.map(|u| format!(r#", "partners_until": "{u}""#)).unwrap_or_default();
        testing::set_config(&format!(r#"{{"partner_domains": ["Partner.example"]{until}}}"#));
    }

    fn first_word(verdict: MessageVerdict) -> String {
        match verdict.verdict {
            Verdict::Accept => "accept".into(),
            Verdict::Reject(r) | Verdict::Defer(r) => r.code.to_string(),
        }
    }

    #[test]
    fn cleartext_to_partners_only() {
        setup(None);
        let message = TestMessage::parse(CLEARTEXT);
        let to_partner = outgoing("alice@chat.example.org", &["bob@partner.example"]);
        assert_eq!(first_word(check_message::<PartnerCleartext>(to_partner, &message, vec![])), "accept");
        let mixed = outgoing("alice@chat.example.org", &["bob@partner.example", "carol@elsewhere.example"]);
        assert_eq!(first_word(check_message::<PartnerCleartext>(mixed, &message, vec![])), "523");
        let forged = outgoing("mallory@chat.example.org", &["bob@partner.example"]);
        assert_eq!(first_word(check_message::<PartnerCleartext>(forged, &message, vec![])), "500", "the From rule stays");
        assert_eq!(testing::counter("partner_cleartext"), 1);
    }

    #[test]
    fn cleartext_from_partners_needs_their_signature() {
        setup(None);
        let message = TestMessage::parse(FROM_PARTNER);
        let envelope = || incoming("bounces@partner.example", &["alice@chat.example.org"]);
        assert_eq!(first_word(check_message::<PartnerCleartext>(envelope(), &message, vec![])), "554");
        let signed = check_message::<PartnerCleartext>(envelope(), &message, vec![dkim_pass("partner.example")]);
        assert_eq!(signed.mail_from, Some(String::new()), "an envelope sender other than From is reset");
        assert_eq!(first_word(signed), "accept");
        let other = TestMessage::parse(FROM_PARTNER.replace("partner.example", "other.example"));
        let envelope = incoming("bob@other.example", &["alice@chat.example.org"]);
        assert_eq!(first_word(check_message::<PartnerCleartext>(envelope, &other, vec![dkim_pass("other.example")])), "523");
    }

    #[test]
    fn the_transition_ends() {
        let to_partner = || outgoing("alice@chat.example.org", &["bob@partner.example"]);
        let message = TestMessage::parse(CLEARTEXT);
        setup(Some("2026-01-01"));
        assert_eq!(first_word(check_message::<PartnerCleartext>(to_partner(), &message, vec![])), "accept", "the last day counts");
        testing::advance_millis(86_400_000);
        assert_eq!(first_word(check_message::<PartnerCleartext>(to_partner(), &message, vec![])), "523");
        assert_eq!(testing::counter("transition_over"), 1);
        setup(Some("2026-13-01"));
        assert_eq!(first_word(check_message::<PartnerCleartext>(to_partner(), &message, vec![])), "523");
        assert!(testing::logs().iter().any(|(_, line)| line.contains("not a date")));
    }

    #[test]
    fn dates() {
        assert_eq!(day_number("1970-01-01"), Ok(0));
        assert_eq!(day_number("2026-01-01"), Ok(20_454));
        assert_eq!(day_number("2024-03-01").unwrap() - day_number("2024-02-28").unwrap(), 2, "a leap year");
        assert!(day_number("30.06.2027").is_err());
    }
}
