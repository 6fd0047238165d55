//! Slows password guessing per account, without knowing who guesses: no IP address is kept.
//!
//! The first few wrong passwords for an account cost nothing (typos). After that, every
//! password check for the account (that is not an already verified login, see auth.rs) waits
//! its turn: turns are spaced by a delay that doubles with each further failure, and attempts
//! from many connections at once queue up behind each other instead of running in parallel.
//! A correct password clears the account's record. Records live in memory only and are
//! forgotten an hour after the last failure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Wrong passwords allowed before checks are spaced out.
pub const FREE_FAILURES: u32 = 5;
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A caller that would wait longer than this is told to come back later instead of holding a
/// connection open.
const MAX_WAIT: Duration = Duration::from_secs(120);
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Accounts tracked at most; when full, the ones that have been quiet longest go first.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    accounts: HashMap<String, Failures>,
}

struct Failures {
    count: u32,
    last: Instant,
    /// The earliest moment the next password check for this account may run.
    next_turn: Instant,
}

/// What a password check for an account has to do first.
#[derive(Debug, PartialEq)]
pub enum Turn {
    Now,
    /// Wait this long, then check.
    After(Duration),
    /// The queue is too long: refuse for now, without checking.
    TryLater,
}

impl LoginThrottle {
    /// Take a turn for checking a password of `address`.
    pub fn turn(&mut self, address: &str, now: Instant) -> Turn {
        let Some(failures) = self.accounts.get_mut(address) else { return Turn::Now };
        if now.saturating_duration_since(failures.last) >= FORGET_AFTER {
            self.accounts.remove(address);
            return Turn::Now;
        }
        if failures.count < FREE_FAILURES {
            return Turn::Now;
        }
        let start = failures.next_turn.max(now);
        let wait = start - now;
        if wait > MAX_WAIT {
            return Turn::TryLater;
        }
        failures.next_turn = start + delay(failures.count);
        if wait.is_zero() { Turn::Now } else { Turn::After(wait) }
    }

    pub fn failed(&mut self, address: &str, now: Instant) {
        if !self.accounts.contains_key(address) && self.accounts.len() >= MAX_TRACKED {
            self.forget_quiet(now);
        }
        let failures = self.accounts.entry(address.to_string()).or_insert(Failures { count: 0, last: now, next_turn: now });
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        if failures.count >= FREE_FAILURES {
            failures.next_turn = failures.next_turn.max(now + delay(failures.count));
        }
    }

    pub fn succeeded(&mut self, address: &str) {
        self.accounts.remove(address);
    }

    /// Drop records an hour old; if that frees nothing, the older half.
    fn forget_quiet(&mut self, now: Instant) {
        self.accounts.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        if self.accounts.len() >= MAX_TRACKED {
            let mut lasts: Vec<Instant> = self.accounts.values().map(|f| f.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.accounts.retain(|_, f| f.last > cut);
        }
    }
}

/// The spacing after `count` failures: 1 s after the free ones, doubling up to a minute.
fn delay(count: u32) -> Duration {
    let doublings = count.saturating_sub(FREE_FAILURES).min(16);
    (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice@c.test";

    #[test]
    fn free_failures_then_spaced_turns() {
        let mut throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            assert_eq!(throttle.turn(ALICE, t0), Turn::Now);
            throttle.failed(ALICE, t0);
        }
        assert_eq!(throttle.turn(ALICE, t0), Turn::Now);
        throttle.failed(ALICE, t0);
        // Five failures: the next check waits a second, the one after that two more.
        assert_eq!(throttle.turn(ALICE, t0), Turn::After(Duration::from_secs(1)));
        throttle.failed(ALICE, t0 + Duration::from_secs(1));
        assert_eq!(throttle.turn(ALICE, t0 + Duration::from_secs(1)), Turn::After(Duration::from_secs(2)));
        // Other accounts are not affected.
        assert_eq!(throttle.turn("bob@c.test", t0), Turn::Now);
    }

    #[test]
    fn parallel_guesses_queue_up() {
        let mut throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            throttle.failed(ALICE, t0);
        }
        // Ten connections guessing at once get turns one second apart, not ten checks now.
        let waits: Vec<Turn> = (0..10).map(|_| throttle.turn(ALICE, t0)).collect();
        for (i, turn) in waits.iter().enumerate() {
            assert_eq!(*turn, Turn::After(Duration::from_secs(1 + i as u64)));
        }
        // A queue longer than MAX_WAIT is refused outright.
        for _ in 0..200 {
            throttle.turn(ALICE, t0);
        }
        assert_eq!(throttle.turn(ALICE, t0), Turn::TryLater);
    }

    #[test]
    fn delays_are_capped_and_success_clears() {
        let mut throttle = LoginThrottle::default();
        let mut now = Instant::now();
        for _ in 0..40 {
            if let Turn::After(wait) = throttle.turn(ALICE, now) {
                assert!(wait <= MAX_DELAY, "{wait:?}");
                now += wait;
            }
            throttle.failed(ALICE, now);
        }
        assert_eq!(delay(40), MAX_DELAY);
        throttle.succeeded(ALICE);
        assert_eq!(throttle.turn(ALICE, now), Turn::Now);
    }

    #[test]
    fn failures_are_forgotten_after_an_hour() {
        let mut throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES + 3 {
            throttle.failed(ALICE, t0);
        }
        assert!(matches!(throttle.turn(ALICE, t0), Turn::After(_)));
        assert_eq!(throttle.turn(ALICE, t0 + FORGET_AFTER), Turn::Now);
        assert!(throttle.accounts.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            throttle.failed(&format!("u{i}@c.test"), t0 + Duration::from_millis(i as u64));
        }
        assert!(throttle.accounts.len() <= MAX_TRACKED);
        assert!(throttle.accounts.contains_key(&format!("u{}@c.test", MAX_TRACKED + 9)), "the latest is kept");
    }
}
