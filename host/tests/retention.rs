//! Retention and quota on a running relay whose clock the tests move (SPEC §7): the daily
//! rules as `ferrymail expire` runs them, and the quota trim a delivery sets off.

mod common;

use std::time::Duration;

use common::client::Client;
use common::mail::{self, PASSWORD};
use common::pgp;
use common::relay::TestRelay;
use ferrymail::retention;

const DAY: Duration = Duration::from_secs(86_400);

/// An encrypted message from `from` with `size` bytes of plaintext.
fn message_of(from: &str, size: usize) -> Vec<u8> {
    let certs = pgp::certs();
    let armored = pgp::armor(&pgp::encrypt_to(&[&certs[1]], &vec![b'x'; size]), &[]);
    pgp::encrypted_mime(from, &armored)
}

async fn send(relay: &TestRelay, from: &str, to: &str, size: usize) -> String {
    let mut c = mail::submit_session(relay, from).await;
    let reply = mail::send_message(&mut c, from, &[to], &message_of(from, size)).await;
    c.cmd("QUIT").await;
    reply
}

async fn imap_login(relay: &TestRelay, address: &str) -> Client {
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    assert!(c.imap("l", &format!("LOGIN {address} {PASSWORD}")).await.last().unwrap().starts_with("l OK"));
    c
}

fn used_bytes(relay: &TestRelay, address: &str) -> u64 {
    relay.relay.store.account(address).unwrap().unwrap().used_bytes
}

#[tokio::test]
async fn old_messages_large_seen_ones_and_inactive_accounts_go() {
    let relay = TestRelay::start("").await;
    let alice = mail::account(&relay, "alice0001").await;
    let bob = mail::account(&relay, "bob000001").await;
    let carol = mail::account(&relay, "carol0001").await;

    assert_eq!(send(&relay, &alice, &bob, 100).await, "250 2.0.0 Ok: queued"); // 1: will be 21 days old
    relay.clock.advance(8 * DAY);
    send(&relay, &alice, &bob, 250_000).await; // 2: large, will be seen
    send(&relay, &alice, &bob, 100).await; // 3: small
    let mut imap = imap_login(&relay, &bob).await;
    imap.imap("s", "SELECT INBOX").await;
    imap.imap("f", "STORE 2 +FLAGS (\\Seen)").await;
    relay.clock.advance(13 * DAY);

    let dry = retention::run(&relay.relay, true).await.unwrap();
    assert_eq!((dry.accounts, dry.messages_deleted, dry.accounts_deleted), (3, 2, 0));
    assert_eq!(mail::inbox(&relay, &bob).len(), 3, "a dry run deletes nothing");

    let done = retention::run(&relay.relay, false).await.unwrap();
    assert_eq!(done, dry);
    let left = mail::inbox(&relay, &bob);
    assert_eq!(left.len(), 1);
    // The open session learns of the expunges.
    let noop = imap.imap("n", "NOOP").await;
    assert_eq!(noop.iter().filter(|l| l.ends_with(" EXPUNGE")).count(), 2, "{noop:?}");
    drop(imap);

    // Day 91: carol never came back (last login day 0); alice logged in on day 8, bob on day 21.
    relay.clock.advance(70 * DAY);
    let report = retention::run(&relay.relay, false).await.unwrap();
    assert_eq!((report.accounts_deleted, report.messages_deleted), (1, 1), "carol, and bob's message of day 8");
    assert!(relay.relay.store.account(&carol).unwrap().is_none());
    assert!(relay.relay.store.account(&alice).unwrap().is_some() && relay.relay.store.account(&bob).unwrap().is_some());
    assert_eq!(relay.relay.metrics.get("ferrymail_expire_runs_total", &[]), 2, "dry runs are not counted");
    assert_eq!(relay.relay.metrics.get("ferrymail_expire_removed_messages_total", &[]), 3);
    assert_eq!(relay.relay.metrics.get("ferrymail_expire_removed_accounts_total", &[]), 1);
}

/// Wait until the quota trim a delivery set off has finished.
async fn trimmed(relay: &TestRelay, address: &str, quota: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = relay.clock.now_secs();
        let account = relay.relay.store.account(address).unwrap().unwrap();
        let old_left = relay.relay.store.stored_messages(account.id).unwrap().iter().any(|m| now - m.entry.received >= 86_400);
        if account.used_bytes * 100 <= quota * 75 || !old_left {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no quota trim: {} of {quota} bytes used", account.used_bytes);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_quota_trim_removes_the_oldest_down_to_70_percent_but_nothing_younger_than_a_day() {
    let quota = 200_000u64;
    let relay = TestRelay::start(&format!("max_mailbox_size = {quota}")).await;
    let alice = mail::account(&relay, "alice0001").await;
    let bob = mail::account(&relay, "bob000001").await;

    // Five old messages fill 60-75 % of the mailbox.
    for _ in 0..5 {
        assert_eq!(send(&relay, &alice, &bob, 20_000).await, "250 2.0.0 Ok: queued");
    }
    let one = used_bytes(&relay, &bob) / 5;
    assert!((60..75).contains(&(used_bytes(&relay, &bob) * 100 / quota)), "{one} bytes per message");
    relay.clock.advance(2 * DAY);

    // Past 75 %: the oldest go until at most 70 % is used.
    send(&relay, &alice, &bob, 20_000).await;
    trimmed(&relay, &bob, quota).await;
    let used = used_bytes(&relay, &bob);
    assert!(used * 100 <= quota * 70 && used * 100 > quota * 70 - one * 100, "{used} of {quota}");
    let kept = (quota * 70 / 100 / one) as usize; // as many messages as fit in 70 %
    assert_eq!(mail::inbox(&relay, &bob).len(), kept);

    // Today's messages are never trimmed: the mailbox fills up and new mail waits.
    let mut accepted = 0;
    loop {
        let reply = send(&relay, &alice, &bob, 20_000).await;
        if reply.starts_with("452") {
            assert_eq!(reply, "452 4.2.2 Quota exceeded (mailbox for user is full)");
            break;
        }
        assert_eq!(reply, "250 2.0.0 Ok: queued");
        trimmed(&relay, &bob, quota).await;
        accepted += 1;
        assert!(accepted < 20, "the mailbox never filled");
    }
    let account = relay.relay.store.account(&bob).unwrap().unwrap();
    assert!(account.used_bytes >= quota);
    let now = relay.clock.now_secs();
    let stored = relay.relay.store.stored_messages(account.id).unwrap();
    assert!(stored.iter().all(|m| now - m.entry.received < 86_400), "the old messages went first");
    assert_eq!(relay.relay.metrics.get("ferrymail_quota_exceeded_total", &[]), 1);

    // QUOTA shows the real usage, in KiB.
    let mut imap = imap_login(&relay, &bob).await;
    let reply = imap.imap("q", "GETQUOTAROOT INBOX").await;
    let expected = format!("* QUOTA \"User quota\" (STORAGE {} {})", account.used_bytes / 1024, quota / 1024);
    assert!(reply.contains(&expected), "{reply:?}");
}
