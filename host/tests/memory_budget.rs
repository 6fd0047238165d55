//! One budget for the message bytes held in memory, all sessions together: once it is spent,
//! new messages hear "try again later" on every path (SMTP `452 4.3.1`, `/mxdeliv` 503, IMAP
//! `NO [LIMIT]`), what was accepted is delivered, and the retry succeeds once room is back.

mod common;

use common::client::{Client, tls_config};
use common::mail::{account, encrypted, inbox, submit_session};
use common::relay::TestRelay;

/// Messages of at most 1 MB, and room for two of them.
const TIGHT: &str = "max_message_size = \"1M\"\nmax_bytes_in_flight = \"2M\"";

/// A message of about `size` bytes that the encryption policy accepts.
fn message_of(from: &str, size: usize) -> Vec<u8> {
    let mut message = encrypted(from);
    let padding = format!("X-Padding: {}\r\n", "p".repeat(900));
    while message.len() < size {
        message.splice(..0, padding.bytes());
    }
    message
}

/// A submission session with MAIL FROM (announcing `size`) and RCPT TO accepted.
async fn envelope(relay: &TestRelay, from: &str, to: &str, size: usize) -> Client {
    let mut c = submit_session(relay, from).await;
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}> SIZE={size}")).await, "250 2.1.0 Ok");
    assert!(c.cmd(&format!("RCPT TO:<{to}>")).await.starts_with("250"));
    c
}

/// An IMAP session logged in as `user`.
async fn imap_session(relay: &TestRelay, user: &str) -> Client {
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    c.imap("l", &format!("LOGIN \"{user}\" \"{}\"", common::mail::PASSWORD)).await;
    c
}

/// The head of a `/mxdeliv` POST announcing 900 000 bytes for `to`, with `extra` header lines.
fn mxdeliv_head(to: &str, extra: &str) -> String {
    format!("POST /mxdeliv HTTP/1.1\r\nHost: relay.test\r\nX-Mail-From: <carol@other.test>\r\nX-Mail-To: {to}\r\nContent-Length: 900000\r\n{extra}\r\n")
}

#[tokio::test]
async fn a_spent_budget_says_try_later_and_loses_nothing() {
    let relay = TestRelay::start(TIGHT).await;
    let alice = account(&relay, "alice0001").await;
    let bob = account(&relay, "bob000001").await;

    // Two sessions hold the budget: two messages of nearly 1 MB on their way.
    let big = message_of(&alice, 950_000);
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut a = envelope(&relay, &alice, &bob, 1_000_000).await;
        assert!(a.cmd("DATA").await.starts_with("354"));
        a.write(&big[..big.len() - 10]).await;
        holding.push(a);
    }
    // What they send is held as it arrives: wait until the relay has read it.
    wait_for_held(&relay, 2 * 900_000).await;

    // A third announces as much: told to come back at DATA, before sending anything.
    let mut b = envelope(&relay, &alice, &bob, 1_000_000).await;
    assert_eq!(b.cmd("DATA").await, "452 4.3.1 Insufficient system resources, try again later");

    // IMAP APPEND of a message that size: NO [LIMIT] instead of the continuation.
    let mut c = imap_session(&relay, &bob).await;
    c.send("p APPEND INBOX {900000}").await;
    assert_eq!(c.imap_line().await, "p NO [LIMIT] Insufficient system resources, try again later");
    assert_eq!(c.imap("n", "NOOP").await.pop().unwrap(), "n OK Completed", "the session goes on");

    // /mxdeliv: 503 with the SMTP reply.
    let mut h = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"http/1.1"])).await.unwrap();
    h.write(mxdeliv_head(&bob, "Connection: close\r\n").as_bytes()).await;
    let answer = h.rest().await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.ends_with("452 4.3.1 Insufficient system resources, try again later"), "{answer}");

    // The two finish and are delivered; then the third one's retry goes through.
    for mut a in holding {
        a.write(&big[big.len() - 10..]).await;
        assert_eq!(a.cmd(".").await, "250 2.0.0 Ok: queued");
    }
    assert!(b.cmd("DATA").await.starts_with("354"));
    b.write(&big).await;
    assert_eq!(b.cmd(".").await, "250 2.0.0 Ok: queued");
    assert_eq!(inbox(&relay, &bob).len(), 3, "every message, once each");
    assert_eq!(relay.relay.in_flight.used_bytes(), 0, "everything given back");
    assert!(relay.relay.metrics.get("ferrymail_in_flight_refused_total", &[("via", "smtp")]) >= 1);
}

/// Wait until the relay holds at least `bytes` of the budget.
async fn wait_for_held(relay: &TestRelay, bytes: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while relay.relay.in_flight.used_bytes() < bytes {
        assert!(std::time::Instant::now() < deadline, "held {} of {bytes}", relay.relay.in_flight.used_bytes());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn announcing_a_size_and_sending_nothing_holds_little() {
    let relay = TestRelay::start(TIGHT).await;
    let alice = account(&relay, "alice0002").await;
    let bob = account(&relay, "bob000002").await;

    // Many clients announce the largest message, get their 354 (or continuation, or send a
    // header) and then send nothing: each holds a first step at most, not what it announced.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut a = envelope(&relay, &alice, &bob, 1_000_000).await;
        assert!(a.cmd("DATA").await.starts_with("354"));
        idle.push(a);
    }
    let mut c = imap_session(&relay, &bob).await;
    c.send("p APPEND INBOX {900000}").await;
    assert!(c.imap_line().await.starts_with('+'), "the continuation");
    let mut h = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"http/1.1"])).await.unwrap();
    h.write(mxdeliv_head(&bob, "").as_bytes()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(relay.relay.in_flight.used_bytes() <= 4 * 256 * 1024 + 256 * 1024, "held {}", relay.relay.in_flight.used_bytes());

    // A real message still gets through.
    let message = message_of(&alice, 300_000);
    let mut b = envelope(&relay, &alice, &bob, message.len()).await;
    assert!(b.cmd("DATA").await.starts_with("354"));
    b.write(&message).await;
    assert_eq!(b.cmd(".").await, "250 2.0.0 Ok: queued");
    assert_eq!(inbox(&relay, &bob).len(), 1);
    drop((idle, c, h));
}
