//! Sending mail into a test relay the way the app does: SMTP submission over TLS.

use base64::Engine;

use super::client::Client;
use super::pgp;
use super::relay::TestRelay;

pub const PASSWORD: &str = "secret-password";

pub fn plain_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// A submission session on 465 after `AUTH PLAIN` as `user`, and the reply to the AUTH.
pub async fn try_login(relay: &TestRelay, user: &str, password: &str) -> (Client, String) {
    let mut c = Client::tls(relay.submissions).await;
    assert!(c.reply().await[0].starts_with("220 "));
    c.cmd("EHLO client.test").await;
    let reply = c.cmd(&format!("AUTH PLAIN {}", plain_auth(user, password))).await;
    (c, reply)
}

/// A submission session on 465, logged in as `user`.
pub async fn submit_session(relay: &TestRelay, user: &str) -> Client {
    let (c, reply) = try_login(relay, user, PASSWORD).await;
    assert_eq!(reply, "235 2.7.0 Authentication successful");
    c
}

/// Create an account (first login) and return its address.
pub async fn account(relay: &TestRelay, local: &str) -> String {
    let address = relay.address_here(local);
    submit_session(relay, &address).await.cmd("QUIT").await;
    address
}

/// An encrypted message from `from`, as the app would send it.
pub fn encrypted(from: &str) -> Vec<u8> {
    let certs = pgp::certs();
    let armored = pgp::armor(&pgp::encrypt_to(&[&certs[1]], b"hello over SMTP"), &[]);
    pgp::encrypted_mime(from, &armored)
}

/// MAIL, RCPT..., DATA: the last reply (the first refusal, if any).
pub async fn send_message(c: &mut Client, from: &str, to: &[&str], message: &[u8]) -> String {
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await, "250 2.1.0 Ok");
    for rcpt in to {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        if !reply.starts_with("250") {
            c.cmd("RSET").await;
            return reply;
        }
    }
    assert!(c.cmd("DATA").await.starts_with("354 "));
    c.write(message).await;
    c.cmd(".").await
}

/// Log in to `from`'s account and send one encrypted message to `to`.
pub async fn deliver(relay: &TestRelay, from: &str, to: &str) {
    let mut c = submit_session(relay, from).await;
    assert_eq!(send_message(&mut c, from, &[to], &encrypted(from)).await, "250 2.0.0 Ok: queued");
    c.cmd("QUIT").await;
}

/// The messages in an account's INBOX, as stored.
pub fn inbox(relay: &TestRelay, address: &str) -> Vec<String> {
    let store = &relay.relay.store;
    let Some(account) = store.account(address).unwrap() else { return Vec::new() };
    let inbox = store.mailbox(account.id, "INBOX").unwrap().unwrap();
    store
        .messages(account.id, inbox.id)
        .unwrap()
        .iter()
        .map(|(_, e)| String::from_utf8_lossy(&store.blob(e.blob_id).unwrap().unwrap()).into_owned())
        .collect()
}

/// Wait for `count` messages in the INBOX, nudging the relays' queues meanwhile.
pub async fn wait_for_inbox(relay: &TestRelay, address: &str, count: usize, nudge: &[&TestRelay]) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let messages = inbox(relay, address);
        if messages.len() >= count {
            return messages;
        }
        assert!(std::time::Instant::now() < deadline, "{address} has {} of {count} messages", messages.len());
        for relay in nudge {
            relay.relay.outbound.wake();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
