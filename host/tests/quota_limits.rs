//! What one free account may store over IMAP, tried as an attacker would over real sockets:
//! APPEND and COPY count against the quota exactly as delivery does, and names, mailboxes,
//! keywords and flags are bounded (RFC 9208 `[OVERQUOTA]`, RFC 5530 `[LIMIT]`).

mod common;

use common::client::Client;
use common::mail::PASSWORD;
use common::relay::TestRelay;

async fn login(relay: &TestRelay, local: &str) -> Client {
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    let reply = c.imap("l", &format!("LOGIN \"{}\" \"{PASSWORD}\"", TestRelay::address(local))).await;
    assert!(reply.last().unwrap().starts_with("l OK"), "{reply:?}");
    c
}

/// APPEND a message of `size` bytes to `mailbox`; the tagged reply.
async fn append(c: &mut Client, tag: &str, mailbox: &str, size: usize) -> String {
    c.send(&format!("{tag} APPEND {mailbox} {{{size}}}")).await;
    let line = c.imap_line().await;
    if !line.starts_with('+') {
        return line;
    }
    let mut message = b"From: <x@y.test>\r\nSubject: filler\r\n\r\n".to_vec();
    message.resize(size, b'.');
    c.write(&message).await;
    c.send("").await;
    c.imap_until(tag).await.pop().unwrap()
}

/// The account's (used, limit) in KiB, as GETQUOTAROOT tells it.
async fn quota(c: &mut Client) -> (u64, u64) {
    let reply = c.imap("q", "GETQUOTAROOT INBOX").await;
    let line = reply.iter().find(|l| l.starts_with("* QUOTA ")).expect("a QUOTA line");
    let numbers: Vec<u64> = line.trim_end_matches(')').rsplit('(').next().unwrap().split(' ').skip(1).map(|n| n.parse().unwrap()).collect();
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn append_and_copy_count_against_the_quota() {
    let relay = TestRelay::start("max_mailbox_size = \"20K\"").await;
    let mut c = login(&relay, "filler001").await;
    assert!(append(&mut c, "a1", "INBOX", 12 * 1024).await.starts_with("a1 OK [APPENDUID "));
    // Over the quota: refused, nothing stored.
    assert_eq!(append(&mut c, "a2", "INBOX", 12 * 1024).await, "a2 NO [OVERQUOTA] Quota exceeded");
    c.imap("s", "SELECT INBOX").await;
    assert_eq!(c.imap("c", "COPY 1 Trash").await.pop().unwrap(), "c NO [OVERQUOTA] Quota exceeded");
    assert_eq!(c.imap("u", "UID COPY 1:* Junk").await.pop().unwrap(), "u NO [OVERQUOTA] Quota exceeded");
    let (used, limit) = quota(&mut c).await;
    assert_eq!(limit, 20);
    assert!(used <= limit, "{used} KiB used of {limit}");
    let status = c.imap("t", "STATUS Trash (MESSAGES)").await;
    assert_eq!(status[0], "* STATUS Trash (MESSAGES 0)");
    // A move adds nothing: it works at any usage.
    assert!(c.imap("m", "MOVE 1 Trash").await.pop().unwrap().starts_with("m OK"));
    assert_eq!(quota(&mut c).await, (12, 20));
    // Smaller messages still fit, up to the limit and not beyond.
    assert!(append(&mut c, "a3", "Drafts", 6 * 1024).await.starts_with("a3 OK"));
    assert_eq!(append(&mut c, "a4", "Drafts", 3 * 1024).await, "a4 NO [OVERQUOTA] Quota exceeded");
    assert!(quota(&mut c).await.0 <= 20);
    // Freeing space makes room again.
    c.imap("s", "SELECT Trash").await;
    c.imap("f", "STORE 1 +FLAGS (\\Deleted)").await;
    assert_eq!(c.imap("e", "EXPUNGE").await.pop().unwrap(), "e OK Expunge completed");
    assert!(append(&mut c, "a5", "INBOX", 12 * 1024).await.starts_with("a5 OK"));
}

#[tokio::test]
async fn names_mailboxes_keywords_and_flags_are_bounded() {
    let relay = TestRelay::start("").await;
    let mut c = login(&relay, "hoarder01").await;
    let tagged = |reply: Vec<String>| reply.last().unwrap().clone();

    let long = "n".repeat(1025);
    assert_eq!(tagged(c.imap("n", &format!("CREATE \"{long}\"")).await), "n NO [LIMIT] Mailbox name too long");
    assert_eq!(tagged(c.imap("r", &format!("RENAME Trash \"{long}\"")).await), "r NO [LIMIT] Mailbox name too long");
    assert!(tagged(c.imap("k", &format!("CREATE \"{}\"", "k".repeat(1024))).await).starts_with("k OK"));
    // Not modified UTF-7: 8-bit bytes (the parser refuses them already, even in a literal),
    // control characters, a broken shift sequence.
    c.write(b"8 CREATE {10+}\r\nEntw\xc3\xbcrfe\r\n").await;
    let refused = c.imap_until("8").await.pop().unwrap();
    assert!(refused.starts_with("8 BAD") || refused.starts_with("8 NO"), "{refused}");
    c.write(b"t CREATE {7+}\r\ntab\there\r\n").await;
    let refused = c.imap_until("t").await.pop().unwrap();
    assert!(refused.starts_with("t BAD") || refused == "t NO Invalid mailbox name", "{refused}");
    assert_eq!(tagged(c.imap("b", "CREATE \"&Jjo\"").await), "b NO Invalid mailbox name");
    assert!(tagged(c.imap("u", "CREATE \"Entw&APw-rfe\"").await).starts_with("u OK"));
    let listed = c.imap("l", "LIST \"\" *").await;
    assert!(listed.iter().any(|l| l.ends_with("Entw&APw-rfe")) && !listed.iter().any(|l| l.contains("Jjo") || l.contains("tab")), "{listed:?}");

    // 100 mailboxes in all (5 default, 2 above), then no more.
    for i in 7..100 {
        assert!(tagged(c.imap("c", &format!("CREATE box{i}")).await).starts_with("c OK"));
    }
    assert_eq!(tagged(c.imap("x", "CREATE box100").await), "x NO [LIMIT] Too many mailboxes");
    assert_eq!(tagged(c.imap("d", "DELETE box99").await), "d OK Delete completed");
    assert!(tagged(c.imap("y", "CREATE again").await).starts_with("y OK"));

    // 64 keywords per mailbox, 1 KiB of flags per message.
    assert!(append(&mut c, "a", "INBOX", 100).await.starts_with("a OK"));
    assert!(append(&mut c, "a", "INBOX", 100).await.starts_with("a OK"));
    c.imap("s", "SELECT INBOX").await;
    let keywords: Vec<String> = (0..64).map(|i| format!("kw{i}")).collect();
    let first = tagged(c.imap("f", &format!("STORE 1 +FLAGS ({})", keywords[..32].join(" "))).await);
    assert!(first.starts_with("f OK"), "{first}");
    let second = tagged(c.imap("f", &format!("STORE 2 +FLAGS ({})", keywords[32..].join(" "))).await);
    assert!(second.starts_with("f OK"), "{second}");
    assert_eq!(tagged(c.imap("g", "STORE 1 +FLAGS (one-more)").await), "g NO [LIMIT] Too many keywords in this mailbox");
    assert!(tagged(c.imap("h", "STORE 1 +FLAGS (\\Seen KW40)").await).starts_with("h OK"), "system flags and keywords in use");
    let heavy = format!("{} {}", "a".repeat(600), "b".repeat(600));
    c.imap("z", "STORE 2 -FLAGS (kw32 kw33)").await;
    assert_eq!(tagged(c.imap("w", &format!("STORE 2 FLAGS ({heavy})")).await), "w NO [LIMIT] Too many flags on one message");
    let fetched = c.imap("v", "FETCH 2 (FLAGS)").await;
    assert!(fetched[0].contains("kw34") && !fetched[0].contains("aaaa"), "{fetched:?}");
}
