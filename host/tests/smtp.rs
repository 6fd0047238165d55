//! SMTP over real sockets and TLS: submission (465, 587 with STARTTLS) and MX (25), each
//! command and reply of SPEC §2–§4, against a whole relay with the default bundle.

mod common;

use base64::Engine;
use common::client::Client;
use common::mail::{PASSWORD, account, encrypted, plain_auth, send_message, submit_session};
use common::relay::{DOMAIN, TestRelay};

/// The messages in an account's INBOX, as stored.
fn inbox(relay: &TestRelay, address: &str) -> Vec<Vec<u8>> {
    let store = &relay.relay.store;
    let account = store.account(address).unwrap().unwrap();
    let inbox = store.mailbox(account.id, "INBOX").unwrap().unwrap();
    store.messages(account.id, inbox.id).unwrap().iter().map(|(_, e)| store.blob(e.blob_id).unwrap().unwrap()).collect()
}

#[tokio::test]
async fn ehlo_advertises_what_each_port_offers() {
    let relay = TestRelay::start("").await;
    let mut implicit = Client::tls(relay.submissions).await;
    implicit.reply().await;
    implicit.send("EHLO me").await;
    let lines = implicit.reply().await;
    let caps: Vec<&str> = lines.iter().skip(1).map(|l| &l[4..]).collect();
    assert_eq!(caps, ["PIPELINING", "SIZE 31457280", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"]);
    assert_eq!(lines[0], format!("250-{DOMAIN}"));

    let mut starttls = Client::plain(relay.submission).await;
    starttls.reply().await;
    starttls.send("EHLO me").await;
    let before = starttls.reply().await.join("\n");
    assert!(before.contains("STARTTLS") && !before.contains("AUTH"), "no AUTH before TLS: {before}");
    assert_eq!(starttls.cmd(&format!("AUTH PLAIN {}", plain_auth("x@y", "z"))).await, "530 5.7.0 Must issue a STARTTLS command first");
    assert_eq!(starttls.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    starttls.start_tls().await;
    starttls.send("EHLO me").await;
    let after = starttls.reply().await.join("\n");
    assert!(after.contains("AUTH PLAIN LOGIN") && !after.contains("STARTTLS"), "{after}");

    let mut mx = Client::plain(relay.smtp).await;
    mx.reply().await;
    mx.send("EHLO other.test").await;
    let mx_caps = mx.reply().await.join("\n");
    assert!(mx_caps.contains("STARTTLS") && !mx_caps.contains("AUTH"), "{mx_caps}");
}

#[tokio::test]
async fn first_login_creates_the_account_and_wrong_passwords_fail() {
    let relay = TestRelay::start("").await;
    let address = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &address).await;
    assert!(relay.relay.store.account(&address).unwrap().is_some(), "created on first login");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", plain_auth(&address, PASSWORD))).await, "503 5.5.1 Error: already authenticated");

    let mut wrong = Client::tls(relay.submissions).await;
    wrong.reply().await;
    wrong.cmd("EHLO me").await;
    assert_eq!(wrong.cmd(&format!("AUTH PLAIN {}", plain_auth(&address, "not-the-password"))).await, "535 5.7.8 Error: authentication failed");
    // Addresses are case-insensitive: the same account answers.
    let upper = address.to_uppercase().replace(&DOMAIN.to_uppercase(), DOMAIN);
    assert_eq!(wrong.cmd(&format!("AUTH PLAIN {}", plain_auth(&upper, PASSWORD))).await, "235 2.7.0 Authentication successful");
    let mut wrong = Client::tls(relay.submissions).await;
    wrong.reply().await;
    wrong.cmd("EHLO me").await;
    // A name the accounts policy refuses is no account at all.
    let bad = format!("plus+0001@{DOMAIN}");
    assert_eq!(wrong.cmd(&format!("AUTH PLAIN {}", plain_auth(&bad, PASSWORD))).await, "535 5.7.8 Error: authentication failed");
    assert!(relay.relay.store.account(&bad).unwrap().is_none());

    // AUTH LOGIN, step by step.
    let mut login = Client::tls(relay.submissions).await;
    login.reply().await;
    login.cmd("EHLO me").await;
    assert_eq!(login.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(login.cmd(&b64(&address)).await, "334 UGFzc3dvcmQ6");
    assert_eq!(login.cmd(&b64(PASSWORD)).await, "235 2.7.0 Authentication successful");
}

#[tokio::test]
async fn an_encrypted_message_reaches_the_local_inbox_scrubbed() {
    let relay = TestRelay::start("").await;
    let bob = account(&relay, "bob000001").await;
    let alice = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &alice).await;
    let mut message = b"Received: from [192.0.2.7] by somewhere\r\nUser-Agent: Delta Chat\r\n".to_vec();
    message.extend(encrypted(&alice));
    assert_eq!(send_message(&mut c, &alice, &[&bob], &message).await, "250 2.0.0 Ok: queued");

    let stored = inbox(&relay, &bob);
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8(stored[0].clone()).unwrap();
    assert!(text.contains("\r\nSubject: [...]\r\n") || text.starts_with("Subject: [...]\r\n"), "{text}");
    for gone in ["Received:", "User-Agent:", "192.0.2.7", "DKIM-Signature"] {
        assert!(!text.contains(gone), "{gone} in:\n{text}");
    }
    assert!(text.contains("-----BEGIN PGP MESSAGE-----"));
}

#[tokio::test]
async fn cleartext_gets_523_and_a_forged_from_500() {
    let relay = TestRelay::start("").await;
    let bob = account(&relay, "bob000001").await;
    let alice = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &alice).await;
    let plain = format!("From: <{alice}>\r\nTo: <{bob}>\r\nSubject: hi\r\n\r\nhello\r\n");
    assert_eq!(send_message(&mut c, &alice, &[&bob], plain.as_bytes()).await, "523 Encryption Needed: Invalid Unencrypted Mail");
    let forged = encrypted(&bob);
    assert_eq!(send_message(&mut c, &alice, &[&bob], &forged).await, format!("500 Invalid FROM <{bob}> for <{alice}>"));
    assert!(inbox(&relay, &bob).is_empty());
}

#[tokio::test]
async fn sender_must_be_the_login_and_login_comes_first() {
    let relay = TestRelay::start("").await;
    let bob = account(&relay, "bob000001").await;
    let mut anonymous = Client::tls(relay.submissions).await;
    anonymous.reply().await;
    anonymous.cmd("EHLO me").await;
    assert_eq!(anonymous.cmd(&format!("MAIL FROM:<{bob}>")).await, "530 5.7.0 Authentication required");

    let alice = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &alice).await;
    assert_eq!(c.cmd(&format!("MAIL FROM:<{bob}>")).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, format!("553 5.7.1 <{bob}>: Sender address rejected: not owned by user {alice}"));
}

#[tokio::test]
async fn the_rate_limit_shows_at_rcpt() {
    let relay = TestRelay::start("").await;
    let bob = account(&relay, "bob000001").await;
    let alice = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &alice).await;
    let message = encrypted(&alice);
    for _ in 0..10 {
        assert_eq!(send_message(&mut c, &alice, &[&bob], &message).await, "250 2.0.0 Ok: queued");
    }
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}>")).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, format!("450 4.7.1: Too much mail from <{alice}>"));
    c.cmd("RSET").await;
    relay.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(send_message(&mut c, &alice, &[&bob], &message).await, "250 2.0.0 Ok: queued");
    assert_eq!(inbox(&relay, &bob).len(), 11);
}

#[tokio::test]
async fn size_limits() {
    let relay = TestRelay::start("max_message_size = 20000").await;
    let bob = account(&relay, "bob000001").await;
    let alice = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &alice).await;
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}> SIZE=20001")).await, "552 5.3.4 Message exceeds maximum size");
    let mut big = encrypted(&alice);
    big.extend(std::iter::repeat_n(b"x".repeat(70).into_iter().chain(*b"\r\n"), 400).flatten());
    assert_eq!(send_message(&mut c, &alice, &[&bob], &big).await, "552 5.3.4 Message exceeds maximum size");
    // The session goes on.
    assert_eq!(send_message(&mut c, &alice, &[&bob], &encrypted(&alice)).await, "250 2.0.0 Ok: queued");
}

#[tokio::test]
async fn recipients_vrfy_and_unknown_users() {
    let relay = TestRelay::start("").await;
    let alice = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &alice).await;
    assert_eq!(c.cmd("VRFY bob").await, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}>")).await, "250 2.1.0 Ok");
    let nobody = TestRelay::address("nobody001");
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{nobody}>")).await,
        format!("550 5.1.1 <{nobody}>: Recipient address rejected: User unknown in local recipient table")
    );
    assert_eq!(c.cmd("DATA").await, "554 5.5.1 Error: no valid recipients");
    // Remote recipients are accepted for the outbound queue.
    assert_eq!(c.cmd("RCPT TO:<carol@other.test>").await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.write(&encrypted(&alice)).await;
    assert_eq!(c.cmd(".").await, "250 2.0.0 Ok: queued");
    let queue = relay.relay.store.queue().unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!((queue[0].mail_from.as_str(), queue[0].recipients.as_slice()), (alice.as_str(), &["carol@other.test".to_string()][..]));
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let relay = TestRelay::start("").await;
    let bob = account(&relay, "bob000001").await;
    let alice = TestRelay::address("alice0001");
    let mut c = submit_session(&relay, &alice).await;
    c.write(format!("MAIL FROM:<{alice}> BODY=8BITMIME\r\nRCPT TO:<{bob}>\r\nDATA\r\n").as_bytes()).await;
    assert_eq!(c.reply().await, ["250 2.1.0 Ok"]);
    assert_eq!(c.reply().await, ["250 2.1.5 Ok"]);
    assert!(c.reply().await[0].starts_with("354"));
    let mut data = encrypted(&alice);
    // A line that starts with a dot travels dot-stuffed and arrives unstuffed.
    data.extend(b"..starts with a dot\r\n.\r\nNOOP\r\nQUIT\r\n");
    c.write(&data).await;
    assert_eq!(c.reply().await, ["250 2.0.0 Ok: queued"]);
    assert_eq!(c.reply().await, ["250 2.0.0 Ok"]);
    assert_eq!(c.reply().await, ["221 2.0.0 Bye"]);
    let stored = String::from_utf8(inbox(&relay, &bob).remove(0)).unwrap();
    assert!(stored.ends_with("\r\n.starts with a dot\r\n"), "{stored}");
}

#[tokio::test]
async fn plaintext_sent_after_starttls_is_discarded() {
    let relay = TestRelay::start("").await;
    let mut c = Client::plain(relay.submission).await;
    c.reply().await;
    c.cmd("EHLO me").await;
    // An injected command in the same packet as STARTTLS must not be executed after TLS.
    c.write(b"STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, ["220 2.0.0 Ready to start TLS"]);
    c.start_tls().await;
    // The first reply after the handshake answers EHLO, not the smuggled NOOP.
    c.send("EHLO me").await;
    assert_eq!(c.reply().await[0], format!("250-{DOMAIN}"));
}

#[tokio::test]
async fn the_mx_port_requires_tls_and_takes_local_recipients_only() {
    let relay = TestRelay::start("").await;
    let bob = account(&relay, "bob000001").await;
    let mut mx = Client::plain(relay.smtp).await;
    mx.reply().await;
    mx.cmd("EHLO other.test").await;
    assert_eq!(mx.cmd("MAIL FROM:<carol@other.test>").await, "530 5.7.0 Must issue a STARTTLS command first");
    assert_eq!(mx.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    mx.start_tls().await;
    mx.cmd("EHLO other.test").await;
    assert_eq!(mx.cmd("AUTH PLAIN AGFAYg==").await, "503 5.5.1 Error: authentication not enabled");
    assert_eq!(mx.cmd("MAIL FROM:<carol@other.test>").await, "250 2.1.0 Ok");
    assert_eq!(mx.cmd("RCPT TO:<dave@elsewhere.test>").await, "554 5.7.1 <dave@elsewhere.test>: Relay access denied");
    assert_eq!(mx.cmd(&format!("RCPT TO:<{bob}>")).await, "250 2.1.5 Ok");
    assert!(mx.cmd("DATA").await.starts_with("354"));
    mx.write(&encrypted("carol@other.test")).await;
    // No DKIM verification on this path yet: incoming mail without a valid signature is refused.
    assert_eq!(mx.cmd(".").await, "554 5.7.1 No DKIM signature found");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let relay = TestRelay::start("").await;
    let mut c = Client::tls(relay.submissions).await;
    c.reply().await;
    assert_eq!(c.cmd("MAIL FROM:<a@b>").await, "503 5.5.1 Error: send HELO/EHLO first");
    assert_eq!(c.cmd("FROBNICATE").await, "500 5.5.2 Error: command not recognized");
    c.send(&format!("NOOP {}", "x".repeat(5000))).await;
    assert_eq!(c.reply().await, ["500 5.5.2 Error: line too long"]);
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok", "the session goes on");
    assert_eq!(c.cmd("RCPT TO:<a@b>").await, "503 5.5.1 Error: need MAIL command");
    for _ in 0..20 {
        c.send("FROBNICATE").await;
    }
    let rest = c.rest().await;
    assert!(rest.contains("421 4.7.0 Error: too many errors"), "{rest}");
}

#[tokio::test]
async fn connections_per_port_are_bounded() {
    let relay = TestRelay::start("max_smtp_connections = 2").await;
    let mut first = Client::plain(relay.smtp).await;
    let mut second = Client::plain(relay.smtp).await;
    first.reply().await;
    second.reply().await;
    let mut third = Client::plain(relay.smtp).await;
    assert_eq!(third.line().await.unwrap(), "421 4.7.0 Too many connections, try again later");
    first.cmd("QUIT").await;
    drop(first);
    // A slot is free again once a session has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut again = Client::plain(relay.smtp).await;
        if again.line().await.unwrap().starts_with("220") {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tls_versions_per_port() {
    let relay = TestRelay::start("").await;
    let tls12 = common::client::tls_config(&[&rustls::version::TLS12], &[]);
    assert!(Client::tls_with(relay.submissions, tls12.clone()).await.is_err(), "client ports speak TLS 1.3 only");
    // ALPN `smtp` is accepted on the submission port.
    let alpn = common::client::tls_config(&[&rustls::version::TLS13], &[b"smtp"]);
    let mut c = Client::tls_with(relay.submissions, alpn).await.unwrap();
    assert!(c.reply().await[0].starts_with("220"));
}
