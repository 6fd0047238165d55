//! Send rate limit per sender, chatmail's rule (SPEC §2): GCRA with
//! `max_user_send_per_minute` (60) and a burst of `max_user_send_burst_size` (10).
//!
//! The SDK's [`rate::allow`] does the work: one number per sender in the policy's key-value
//! store, updated with compare-and-swap so that concurrent sessions of one sender cannot both
//! take the last slot.

use ferrymail_policy::*;
use serde::Deserialize;

pub struct RateLimit;

#[derive(Deserialize)]
#[serde(default)]
struct Config {
    max_user_send_per_minute: u64,
    max_user_send_burst_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_user_send_per_minute: 60, max_user_send_burst_size: 10 }
    }
}

impl Policy for RateLimit {
    const NAME: &'static str = "ratelimit";

    fn mail_from(envelope: Envelope) -> Verdict {
        if envelope.direction != Direction::Outgoing {
            return Verdict::Accept;
        }
        let config: Config = config().unwrap_or_default();
        let sender = envelope.mail_from.to_ascii_lowercase();
        if gcra_allow(&sender, config.max_user_send_per_minute, config.max_user_send_burst_size) {
            Verdict::Accept
        } else {
            // The exact text of chatmail's filtermail; clients show it to the user.
            Verdict::defer(450, "", format!("4.7.1: Too much mail from <{}>", envelope.mail_from))
        }
    }
}

export_policy!(RateLimit, hooks: [mail_from]);

/// One GCRA step for `key` ([`ferrymail_policy::rate`]): true (and the slot taken) when a
/// message may pass now.
pub fn gcra_allow(key: &str, per_minute: u64, burst: u64) -> bool {
    // More than one a millisecond is an interval of 0: no limit at all.
    per_minute > 0 && rate::allow(key, 60_000 / per_minute, burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_beyond_one_per_millisecond_is_no_limit() {
        testing::reset();
        testing::set_now_millis(1_001);
        assert!(gcra_allow("a@x.org", 100_000_000, 1));
        // Another session read the clock a millisecond earlier.
        testing::set_now_millis(1_000);
        assert!(gcra_allow("a@x.org", 100_000_000, 1));
    }

    #[test]
    fn burst_then_one_per_interval() {
        testing::reset();
        let allowed: Vec<bool> = (0..11).map(|_| gcra_allow("a@x.org", 60, 10)).collect();
        assert_eq!(allowed, [true; 10].into_iter().chain([false]).collect::<Vec<_>>());
        testing::advance_millis(999);
        assert!(!gcra_allow("a@x.org", 60, 10));
        testing::advance_millis(1);
        assert!(gcra_allow("a@x.org", 60, 10));
        assert!(!gcra_allow("a@x.org", 60, 10));
        assert!(gcra_allow("b@x.org", 60, 10), "senders are limited separately");
    }
}
