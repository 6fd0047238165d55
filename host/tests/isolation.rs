//! Nobody reads what isn't theirs: no IMAP command reaches another account's mailboxes,
//! messages or METADATA, and guessing an account's password is slowed per account (without
//! keeping any IP address) while the account's own app keeps logging in.

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::mail::{PASSWORD, account, deliver, inbox, plain_auth};
use common::relay::TestRelay;

async fn imap_login(relay: &TestRelay, address: &str, password: &str) -> (Client, String) {
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    let reply = c.imap("l", &format!("LOGIN \"{address}\" \"{password}\"")).await;
    (c, reply.last().unwrap().clone())
}

fn tagged(reply: &[String]) -> &str {
    reply.last().unwrap()
}

#[tokio::test]
async fn no_command_reaches_another_account() {
    let relay = TestRelay::start("").await;
    let alice = account(&relay, "alice0001").await;
    let bob = account(&relay, "bob000001").await;
    deliver(&relay, &alice, &bob).await;
    let (mut b, _) = imap_login(&relay, &bob, PASSWORD).await;
    assert_eq!(tagged(&b.imap("t", "SETMETADATA INBOX (/private/devicetoken \"bobs-token\")").await), "t OK Completed");
    b.imap("c", "CREATE Secret").await;

    let (mut a, reply) = imap_login(&relay, &alice, PASSWORD).await;
    assert!(reply.starts_with("l OK"), "{reply}");
    let others = [
        bob.clone(),
        format!("{bob}/INBOX"),
        "../bob000001/INBOX".to_string(),
        format!("user/{bob}"),
        "Other Users/bob000001".to_string(),
        "Secret".to_string(),
        "INBOX/../../bob000001".to_string(),
    ];
    for (i, name) in others.iter().enumerate() {
        // (SUBSCRIBE takes any name, RFC 3501 §6.3.6: a name on Alice's own list opens nothing.)
        for command in ["SELECT", "EXAMINE", "DELETE"] {
            let reply = a.imap(&format!("s{i}"), &format!("{command} \"{name}\"")).await;
            assert!(tagged(&reply).starts_with(&format!("s{i} NO")), "{command} {name}: {reply:?}");
        }
        let status = a.imap("st", &format!("STATUS \"{name}\" (MESSAGES UIDNEXT)")).await;
        assert!(tagged(&status).starts_with("st NO"), "{name}: {status:?}");
        let append = a.imap("ap", &format!("APPEND \"{name}\" {{1+}}\r\nx")).await;
        assert!(tagged(&append).starts_with("ap NO"), "{name}: {append:?}");
        let rename = a.imap("rn", &format!("RENAME \"{name}\" Mine")).await;
        assert!(tagged(&rename).starts_with("rn NO"), "{name}: {rename:?}");
        let meta = a.imap("gm", &format!("GETMETADATA \"{name}\" (/private/devicetoken)")).await;
        assert!(!meta.concat().contains("bobs-token"), "{name}: {meta:?}");
    }
    // Alice's own view holds nothing of Bob's.
    let list = a.imap("ls", "LIST \"\" \"*\"").await;
    assert!(!list.concat().contains("Secret") && !list.concat().contains("bob"), "{list:?}");
    let list = a.imap("lo", &format!("LIST \"{bob}\" \"*\"")).await;
    assert!(!list.concat().contains("Secret"), "{list:?}");
    a.imap("se", "SELECT INBOX").await;
    for command in ["UID FETCH 1:* (BODY.PEEK[])", "FETCH 1:* (FLAGS)", "UID SEARCH ALL", "UID STORE 1:* +FLAGS (\\Deleted)", "UID MOVE 1:* Trash", "EXPUNGE"] {
        let reply = a.imap("f", command).await;
        assert!(!reply.concat().contains("PGP MESSAGE"), "{command}: {reply:?}");
        assert!(reply.len() == 1 || command.contains("SEARCH"), "{command}: nothing to show, {reply:?}");
    }
    let tokens = a.imap("m", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert!(!tokens.concat().contains("bobs-token"), "{tokens:?}");

    // Bob's message, flags, folder and token are as they were.
    assert_eq!(inbox(&relay, &bob).len(), 1);
    b.imap("s", "SELECT INBOX").await;
    let flags = b.imap("f", "FETCH 1 (FLAGS)").await;
    assert_eq!(flags[0], "* 1 FETCH (FLAGS (\\Recent))", "{flags:?}");
    let tokens = b.imap("m", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert_eq!(tokens[0], "* METADATA INBOX (/private/devicetoken {10}\r\nbobs-token)");
    assert!(tagged(&b.imap("x", "SELECT Secret").await).starts_with("x OK"));
}

#[tokio::test]
async fn password_guessing_is_slowed_per_account_and_the_app_still_logs_in() {
    let relay = TestRelay::start("").await;
    let bob = account(&relay, "bob000001").await;
    let carol = account(&relay, "carol0001").await;

    // Five wrong passwords cost nothing (typos)...
    for i in 0..5 {
        let (_, reply) = imap_login(&relay, &bob, &format!("guess-{i}")).await;
        assert_eq!(reply, "l NO [AUTHENTICATIONFAILED] Authentication failed", "{reply}");
    }
    // ...the sixth waits its turn, over IMAP and SMTP alike.
    let started = Instant::now();
    let (_, reply) = imap_login(&relay, &bob, "guess-5").await;
    assert!(reply.starts_with("l NO [AUTHENTICATIONFAILED]"), "{reply}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the sixth guess was answered without delay");
    let started = Instant::now();
    let mut c = Client::tls(relay.submissions).await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    let reply = c.cmd(&format!("AUTH PLAIN {}", plain_auth(&bob, "guess-6"))).await;
    assert!(reply.starts_with("535"), "{reply}");
    assert!(started.elapsed() >= Duration::from_secs(2), "the seventh guess was answered after its turn");

    // Bob's app, whose password the relay has verified before, is not slowed down; nor is any
    // other account.
    let delayed = relay.relay.metrics.get("ferrymail_login_checks_delayed_total", &[]);
    assert_eq!(delayed, 2);
    let (_, reply) = imap_login(&relay, &bob, PASSWORD).await;
    assert!(reply.starts_with("l OK"), "{reply}");
    let (_, reply) = imap_login(&relay, &carol, PASSWORD).await;
    assert!(reply.starts_with("l OK"), "{reply}");
    assert_eq!(relay.relay.metrics.get("ferrymail_login_checks_delayed_total", &[]), delayed, "the right password did not wait");
    assert_eq!(relay.relay.metrics.get("ferrymail_login_failures_total", &[]), 7);
}
