//! IMAP to the letter of RFC 3501 / RFC 9051, where an independent compliance suite found
//! ferrymail answering wrongly: body sections of encapsulated messages, ENVELOPE's groups and
//! routes, SEARCH on parsed addresses, sessions that must agree after MOVE, EXPUNGE and DELETE,
//! keywords in FLAGS, SELECT's UNSEEN, and subscriptions that outlive their mailboxes.

mod common;

use common::client::Client;
use common::mail::{PASSWORD, account, deliver};
use common::relay::TestRelay;

async fn login(relay: &TestRelay, address: &str) -> Client {
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    let reply = c.imap("l1", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
    assert!(reply.last().unwrap().starts_with("l1 OK"), "{reply:?}");
    c
}

fn tagged(reply: &[String]) -> &str {
    reply.last().unwrap()
}

/// A relay where Bob has two sessions and `messages` messages from Alice.
async fn two_sessions_with_mail(messages: usize) -> (TestRelay, String, String, Client, Client) {
    let relay = TestRelay::start("").await;
    let alice = account(&relay, "alice0001").await;
    let bob = TestRelay::address("bob000001");
    let one = login(&relay, &bob).await;
    let two = login(&relay, &bob).await;
    for _ in 0..messages {
        deliver(&relay, &alice, &bob).await;
    }
    (relay, alice, bob, one, two)
}

/// APPEND with a non-synchronizing literal (LITERAL+).
async fn append(c: &mut Client, mailbox: &str, flags: &str, message: &str) {
    c.write(format!("ap APPEND {mailbox} ({flags}) {{{}+}}\r\n{message}\r\n", message.len()).as_bytes()).await;
    let reply = c.imap_until("ap").await;
    assert!(tagged(&reply).starts_with("ap OK"), "{reply:?}");
}

/// Part 1 text; 2 an encapsulated multipart message (2.1 text, 2.2 an encapsulated
/// single-part message); 3 an encapsulated single-part message.
const NESTED: &str = include_str!("data/nested-rfc822.eml");

#[tokio::test]
async fn messages_as_standard_clients_read_them() {
    let relay = TestRelay::start("").await;
    let bob = TestRelay::address("bob000001");
    let mut c = login(&relay, &bob).await;
    append(&mut c, "INBOX", "\\Seen", NESTED).await;
    c.imap("s", "SELECT INBOX").await;

    // Body sections inside encapsulated messages (RFC 3501 §6.4.5).
    let fetch = |section: &str| format!("FETCH 1 (BODY.PEEK[{section}])");
    let expect = [
        ("2.1", "BODY[2.1] {11}\r\nmiddle text)"),
        ("2.2.HEADER", "BODY[2.2.HEADER] {38}\r\nFrom: inner@x.test\r\nSubject: inner\r\n\r\n)"),
        ("2.2.TEXT", "BODY[2.2.TEXT] {10}\r\ninner body)"),
        ("2.2.1", "BODY[2.2.1] {10}\r\ninner body)"),
        ("2.2.MIME", "BODY[2.2.MIME] {64}\r\nContent-Type: message/rfc822\r\nContent-Description: innermost\r\n\r\n)"),
        ("2.HEADER.FIELDS (SUBJECT)", "BODY[2.HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: middle\r\n\r\n)"),
        ("3.TEXT", "BODY[3.TEXT] {10}\r\nthird body)"),
        ("9", "BODY[9] NIL)"),
        ("1.HEADER", "BODY[1.HEADER] NIL)"),
    ];
    for (tag, (section, answer)) in expect.iter().enumerate() {
        let reply = c.imap(&format!("f{tag}"), &fetch(section)).await;
        assert_eq!(reply.len(), 2, "{section}: {reply:?}");
        assert_eq!(reply[0], format!("* 1 FETCH ({answer}"), "{section}");
    }
    let many: Vec<String> = (1..=33).map(|i| format!("BODY.PEEK[1.{i}]")).collect();
    let refused = c.imap("m", &format!("FETCH 1 ({})", many.join(" "))).await;
    assert_eq!(refused, ["m NO [LIMIT] Too many body sections in one FETCH"], "each section may parse the message again");
    let partial = c.imap("p", "FETCH 1 (BODY.PEEK[2.2.TEXT]<6.10>)").await;
    assert_eq!(partial[0], "* 1 FETCH (BODY[2.2.TEXT]<6> {4}\r\nbody)");
    let structure = c.imap("b", "FETCH 1 (BODYSTRUCTURE)").await;
    assert!(
        structure[0].contains("\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\"")
            && structure[0].contains("(NIL \"middle\" ((NIL NIL \"middle\" \"x.test\"))")
            && structure[0].contains("(NIL \"inner\" ((NIL NIL \"inner\" \"x.test\"))"),
        "the encapsulated messages' envelopes and structures: {structure:?}"
    );

    // \\Recent is the server's to give, and no other \\-flag exists.
    let recent = c.imap("r1", "STORE 1 +FLAGS (\\Recent)").await;
    assert!(tagged(&recent).starts_with("r1 BAD"), "{recent:?}");
    c.write(b"r2 APPEND INBOX (\\Invented) {1+}\r\nx\r\n").await;
    assert!(tagged(&c.imap_until("r2").await).starts_with("r2 BAD"));

    // ENVELOPE: groups, source routes, comments and encoded words (RFC 3501 §7.4.2).
    let headers = "From: =?utf-8?q?J=C3=B6rg_Smith?= <js@x.test>\r\n\
        Sender: js@x.test (Old Style)\r\n\
        To: Friends: Ann <ann@y.test>, bo@y.test;, carl@z.test\r\n\
        Cc: Undisclosed recipients:;\r\n\
        Bcc: Routed <@hop.test,@hop2.test:dee@w.test>\r\n\
        Reply-To: john . q @ example . com\r\n\
        Subject: a\r\n folded subject\r\n\r\nbody\r\n";
    append(&mut c, "INBOX", "", headers).await;
    c.imap("n", "NOOP").await;
    let envelope = c.imap("e", "FETCH 2 (ENVELOPE)").await;
    assert_eq!(
        envelope[0],
        "* 2 FETCH (ENVELOPE (NIL \"a folded subject\" \
         ((\"=?utf-8?q?J=C3=B6rg_Smith?=\" NIL \"js\" \"x.test\")) \
         ((\"Old Style\" NIL \"js\" \"x.test\")) \
         ((NIL NIL \"john.q\" \"example.com\")) \
         ((NIL NIL \"Friends\" NIL)(\"Ann\" NIL \"ann\" \"y.test\")(NIL NIL \"bo\" \"y.test\")(NIL NIL NIL NIL)(NIL NIL \"carl\" \"z.test\")) \
         ((NIL NIL \"Undisclosed recipients\" NIL)(NIL NIL NIL NIL)) \
         ((\"Routed\" \"@hop.test,@hop2.test\" \"dee\" \"w.test\")) \
         NIL NIL))"
    );

    // SEARCH on addresses as parsed: the decoded display name, the address without the
    // obsolete spaces; and still the field as written.
    assert_eq!(c.imap("s1", "SEARCH FROM \"rg Smith\"").await[0], "* SEARCH 2", "decoded encoded word");
    assert_eq!(c.imap("s2", "SEARCH FROM \"J=C3=B6rg\"").await[0], "* SEARCH 2", "as written");
    assert_eq!(c.imap("s3", "SEARCH TO \"ann@y.test\"").await[0], "* SEARCH 2");
    assert_eq!(c.imap("s4", "SEARCH HEADER REPLY-TO \"john.q@example.com\"").await[0], "* SEARCH", "HEADER stays textual");
    assert_eq!(c.imap("s5", "SEARCH BCC \"dee@w.test\"").await[0], "* SEARCH 2");
    assert_eq!(c.imap("s6", "SEARCH FROM \"outer@x.test\"").await[0], "* SEARCH 1");
    assert_eq!(c.imap("s7", "SEARCH CHARSET UTF-8 FROM \"rg Smith\"").await[0], "* SEARCH 2");
    let latin1 = c.imap("s8", "SEARCH CHARSET ISO-8859-1 FROM \"x\"").await;
    assert_eq!(tagged(&latin1), "s8 NO [BADCHARSET (US-ASCII UTF-8)] Charset not supported");
}

#[tokio::test]
async fn sessions_agree_after_move_expunge_and_delete() {
    let (relay, _, bob, mut one, mut two) = two_sessions_with_mail(3).await;
    one.imap("a", "SELECT INBOX").await;
    two.imap("a", "SELECT INBOX").await;

    // MOVE into the selected mailbox itself: the old message goes, a new one comes.
    let moved = one.imap("b", "MOVE 1 INBOX").await;
    assert!(moved.contains(&"* 1 EXPUNGE".to_string()) && moved.contains(&"* 3 EXISTS".to_string()), "{moved:?}");
    let seen = two.imap("b", "NOOP").await;
    assert!(seen.contains(&"* 1 EXPUNGE".to_string()) && seen.contains(&"* 3 EXISTS".to_string()), "{seen:?}");
    let mut fresh = login(&relay, &bob).await;
    fresh.imap("a", "SELECT INBOX").await;
    let uids = |reply: Vec<String>| reply[..reply.len() - 1].to_vec();
    let want = uids(fresh.imap("c", "FETCH 1:* (UID)").await);
    assert_eq!(want, ["* 1 FETCH (UID 2)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 4)"]);
    assert_eq!(uids(one.imap("c", "FETCH 1:* (UID)").await), want);
    assert_eq!(uids(two.imap("c", "FETCH 1:* (UID)").await), want);

    // A message expunged elsewhere, before this session was told: no silent skip.
    two.imap("d", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    two.imap("e", "EXPUNGE").await;
    let fetched = one.imap("d", "FETCH 1:2 (UID BODY.PEEK[HEADER])").await;
    assert_eq!(tagged(&fetched), "d NO [EXPUNGEISSUED] Some of the requested messages no longer exist", "{fetched:?}");
    assert!(fetched[0].starts_with("* 2 FETCH (UID 3 BODY[HEADER]"), "the others are sent: {fetched:?}");
    let searched = one.imap("e", "SEARCH BODY \"x\"").await;
    assert!(tagged(&searched).starts_with("e NO [EXPUNGEISSUED]"), "{searched:?}");
    let flags_only = one.imap("f", "FETCH 1 (FLAGS)").await;
    assert_eq!(flags_only[0], "* 1 FETCH (FLAGS (\\Recent))", "what the session knows stays readable");
    assert!(one.imap("g", "NOOP").await.contains(&"* 1 EXPUNGE".to_string()));

    // A deleted mailbox, and another made under its name: the old selection ends.
    one.imap("h", "CREATE Box").await;
    let validity = |reply: Vec<String>| reply[0].clone();
    let before = validity(one.imap("i", "STATUS Box (UIDVALIDITY)").await);
    one.imap("j", "SELECT Box").await;
    two.imap("h", "DELETE Box").await;
    two.imap("i", "CREATE Box").await;
    assert_ne!(validity(two.imap("j", "STATUS Box (UIDVALIDITY)").await), before, "a new UIDVALIDITY");
    one.send("k NOOP").await;
    assert_eq!(one.imap_line().await, "* BYE Selected mailbox was deleted, have to disconnect");
}

#[tokio::test]
async fn flags_unseen_and_subscriptions() {
    let (relay, alice, bob, mut one, mut two) = two_sessions_with_mail(3).await;
    one.imap("a", "SELECT INBOX").await;
    one.imap("b", "STORE 1 +FLAGS.SILENT (\\Seen $Label1)").await;

    // SELECT: the keywords in use, and the first unseen message (RFC 3501 §6.3.1).
    let select = two.imap("a", "SELECT INBOX").await;
    assert_eq!(select[0], "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)");
    assert_eq!(select[1], "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] Flags permitted");
    assert!(select.contains(&"* OK [UNSEEN 2] First unseen".to_string()), "{select:?}");
    let examine = two.imap("b", "EXAMINE INBOX").await;
    assert!(examine.contains(&"* OK [PERMANENTFLAGS ()] Flags permitted".to_string()), "{examine:?}");
    two.imap("c", "SELECT INBOX").await;

    // A new keyword: FLAGS again, before the FETCH that shows it, in both sessions.
    let stored = one.imap("c", "STORE 2 +FLAGS (Work)").await;
    assert_eq!(stored[0], "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Work)", "{stored:?}");
    assert!(stored[2].starts_with("* 2 FETCH (FLAGS ("), "{stored:?}");
    let told = two.imap("d", "NOOP").await;
    assert_eq!(told[0], "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Work)", "{told:?}");
    assert!(told[2].starts_with("* 2 FETCH (FLAGS ("), "{told:?}");

    // \Recent (RFC 3501 §2.3.2): each message to the one session first told of it.
    deliver(&relay, &alice, &bob).await;
    let first = one.imap("r1", "NOOP").await;
    assert!(first.contains(&"* 4 EXISTS".to_string()) && first.contains(&"* 4 RECENT".to_string()), "{first:?}");
    let second = two.imap("r1", "NOOP").await;
    assert!(second.contains(&"* 4 EXISTS".to_string()) && !second.iter().any(|l| l.ends_with("RECENT")), "{second:?}");
    assert_eq!(one.imap("r2", "SEARCH RECENT").await[0], "* SEARCH 1 2 3 4", "the selecting session had 1 to 3");
    assert_eq!(one.imap("r3", "SEARCH NEW").await[0], "* SEARCH 2 3 4", "recent and unseen");
    assert_eq!(two.imap("r2", "SEARCH RECENT").await[0], "* SEARCH");
    assert_eq!(two.imap("r3", "SEARCH OLD").await[0], "* SEARCH 1 2 3 4");
    assert_eq!(one.imap("r4", "FETCH 4 (FLAGS)").await[0], "* 4 FETCH (FLAGS (\\Recent))");
    assert_eq!(two.imap("r4", "FETCH 4 (FLAGS)").await[0], "* 4 FETCH (FLAGS ())");
    let status = two.imap("r5", "STATUS Sent (RECENT)").await;
    assert_eq!(status[0], "* STATUS Sent (RECENT 0)");
    let mut three = login(&relay, &bob).await;
    let reselect = three.imap("r6", "SELECT INBOX").await;
    assert!(reselect.contains(&"* 0 RECENT".to_string()), "claimed already: {reselect:?}");

    // Subscriptions are names of their own (RFC 3501 §6.3.6, RFC 9051 §6.3.9).
    one.imap("e", "CREATE Project").await;
    assert!(one.imap("f", "LSUB \"\" \"*\"").await.contains(&"* LSUB () \"/\" Project".to_string()), "new mailboxes subscribed");
    assert_eq!(tagged(&one.imap("g", "DELETE Project").await), "g OK Delete completed");
    let lsub = one.imap("h", "LSUB \"\" \"Pro*\"").await;
    assert_eq!(lsub, ["* LSUB (\\Noselect) \"/\" Project", "h OK Lsub completed"], "DELETE keeps the subscription");
    assert_eq!(tagged(&one.imap("i", "SUBSCRIBE Later").await), "i OK Completed", "a name without a mailbox");
    assert_eq!(tagged(&one.imap("j", "UNSUBSCRIBE Never").await), "j OK Completed", "a name not subscribed");
    let subscribed = one.imap("k", "LIST (SUBSCRIBED) \"\" \"*\"").await;
    assert!(subscribed.contains(&"* LIST (\\Subscribed) \"/\" INBOX".to_string()), "{subscribed:?}");
    assert!(subscribed.contains(&"* LIST (\\NonExistent \\Subscribed) \"/\" Later".to_string()), "{subscribed:?}");
    assert!(subscribed.contains(&"* LIST (\\Trash \\Subscribed) \"/\" Trash".to_string()), "{subscribed:?}");
    one.imap("l", "UNSUBSCRIBE Trash").await;
    let listed = one.imap("m", "LIST \"\" \"*\" RETURN (SUBSCRIBED)").await;
    assert!(listed.contains(&"* LIST (\\Trash) \"/\" Trash".to_string()), "{listed:?}");
    assert!(listed.contains(&"* LIST (\\Sent \\Subscribed) \"/\" Sent".to_string()), "{listed:?}");
    assert!(!listed.iter().any(|l| l.ends_with("Later")), "plain LIST shows mailboxes only: {listed:?}");
    one.imap("n", "CREATE Project").await;
    assert!(one.imap("o", "LSUB \"\" Project").await.contains(&"* LSUB () \"/\" Project".to_string()));

    // As liberal as Dovecot: bare LFs, stray spaces; strict in what is sent.
    one.write(b"v1 NOOP\n").await;
    assert_eq!(tagged(&one.imap_until("v1").await), "v1 OK Completed");
    one.write(b"v2 SETMETADATA INBOX ( /private/devicetoken \"spaced\" )\r\n").await;
    assert_eq!(tagged(&one.imap_until("v2").await), "v2 OK Completed");
    one.write(b"v3  STATUS  INBOX (MESSAGES ) \n").await;
    assert_eq!(one.imap_until("v3").await, ["* STATUS INBOX (MESSAGES 4)", "v3 OK Status completed"]);
    one.write(b"v4 IDLE\n").await;
    assert_eq!(one.imap_line().await, "+ idling");
    one.write(b"DONE\n").await;
    assert_eq!(one.imap_line().await, "v4 OK IDLE terminated");
    let metadata = one.imap("v5", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert_eq!(metadata[0], "* METADATA INBOX (/private/devicetoken {6}\r\nspaced)", "values as literals, as Dovecot sends them");
    assert!(tagged(&one.imap("v6", "FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)").await).starts_with("v6 BAD"), "no QRESYNC");
}
