//! IMAP over real sockets and TLS: what the Delta Chat app sends (SPEC §5), in its order and
//! with its exact expectations, and what standard IMAP tools need.

mod common;

use std::time::Duration;

use common::client::Client;
use common::mail::{PASSWORD, account, deliver};
use common::relay::TestRelay;

/// A logged-in session on 993.
async fn login(relay: &TestRelay, address: &str) -> Client {
    let mut c = Client::tls(relay.imaps).await;
    let greeting = c.imap_line().await;
    assert!(greeting.starts_with("* OK [CAPABILITY "), "{greeting}");
    let reply = c.imap("l1", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
    assert!(reply.last().unwrap().starts_with("l1 OK"), "{reply:?}");
    c
}

fn tagged(reply: &[String]) -> &str {
    reply.last().unwrap()
}

#[tokio::test]
async fn capabilities_before_and_after_login() {
    let relay = TestRelay::start("").await;
    let mut plain = Client::plain(relay.imap).await;
    let greeting = plain.imap_line().await;
    for cap in ["IMAP4REV1", "STARTTLS", "LOGINDISABLED", "XCHATMAIL", "XDELTAPUSH", "ID", "IDLE"] {
        assert!(greeting.split([' ', ']']).any(|w| w == cap), "{cap} missing in {greeting}");
    }
    let address = TestRelay::address("alice0001");
    let reply = plain.imap("a", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
    assert_eq!(tagged(&reply), "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed, use STARTTLS");
    assert!(relay.relay.store.account(&address).unwrap().is_none());

    let mut c = login(&relay, &address).await;
    let caps = c.imap("c", "CAPABILITY").await;
    let line = &caps[0];
    for cap in ["IDLE", "METADATA", "QUOTA", "COMPRESS=DEFLATE", "ID", "MOVE", "UIDPLUS", "XCHATMAIL", "XDELTAPUSH", "CONDSTORE", "SPECIAL-USE", "NAMESPACE", "ENABLE"] {
        assert!(line.split(' ').any(|w| w == cap), "{cap} missing in {line}");
    }
    assert!(!line.contains("LOGINDISABLED") && !line.contains("STARTTLS"));
}

#[tokio::test]
async fn login_creates_accounts_with_quoted_strings_and_literals() {
    let relay = TestRelay::start("").await;
    let address = TestRelay::address("alice0001");
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    // Literals for both arguments, as some clients send them.
    c.send(&format!("a LOGIN {{{}}}", address.len())).await;
    assert_eq!(c.imap_line().await, "+ Ready for literal data");
    c.send(&format!("{address} {{{}}}", PASSWORD.len())).await;
    assert_eq!(c.imap_line().await, "+ Ready for literal data");
    c.send(PASSWORD).await;
    let reply = c.imap_until("a").await;
    assert!(tagged(&reply).starts_with("a OK [CAPABILITY IMAP4REV1"), "{reply:?}");
    assert!(relay.relay.store.account(&address).unwrap().is_some());

    let mut wrong = Client::tls(relay.imaps).await;
    wrong.imap_line().await;
    let reply = wrong.imap("b", &format!("LOGIN \"{address}\" \"wrong-password\"")).await;
    assert_eq!(tagged(&reply), "b NO [AUTHENTICATIONFAILED] Authentication failed");
    let reply = wrong.imap("c", "SELECT INBOX").await;
    assert_eq!(tagged(&reply), "c NO Log in first");
    // AUTHENTICATE PLAIN with an initial response (SASL-IR).
    let sasl = common::mail::plain_auth(&address, PASSWORD);
    let reply = wrong.imap("d", &format!("AUTHENTICATE PLAIN {sasl}")).await;
    assert!(tagged(&reply).starts_with("d OK"), "{reply:?}");
}

#[tokio::test]
async fn the_apps_session_in_order() {
    let relay = TestRelay::start("privacy_mail = \"privacy@example.org\"").await;
    let alice = account(&relay, "alice0001").await;
    let bob = TestRelay::address("bob000001");
    let mut c = login(&relay, &bob).await;

    let id = c.imap("1", "ID (\"name\" \"Delta Chat\")").await;
    assert_eq!(id[0], "* ID (\"name\" \"ferrymail\")");
    assert_eq!(tagged(&id), "1 OK Completed");

    let quota = c.imap("2", "GETQUOTAROOT \"INBOX\"").await;
    assert_eq!(quota[..2], ["* QUOTAROOT INBOX \"User quota\"", "* QUOTA \"User quota\" (STORAGE 0 512000)"]);

    let keys = "/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/turn \
                /shared/vendor/deltachat/maxsmtprecipients /shared/vendor/deltachat/appversions";
    let metadata = c.imap("3", &format!("GETMETADATA \"\" ({keys})")).await;
    // Values as literals, as Dovecot sends them (the app reads both forms).
    let expected_start =
        "* METADATA \"\" (/shared/admin {26}\r\nmailto:privacy@example.org /shared/vendor/deltachat/turn {53}\r\n_c.test:";
    assert!(metadata[0].starts_with(expected_start), "{}", metadata[0]);
    let app_versions = ferrymail::config::DEFAULT_APP_VERSIONS.trim();
    let tail = format!(" /shared/vendor/deltachat/maxsmtprecipients {{4}}\r\n1000 /shared/vendor/deltachat/appversions {{{}}}\r\n{app_versions})", app_versions.len());
    assert!(metadata[0].ends_with(&tail), "the default app versions: {}", metadata[0]);
    assert_eq!(metadata.len(), 2, "one line: {metadata:?}");

    let select = c.imap("4", "SELECT \"INBOX\"").await;
    assert!(select.contains(&"* 0 EXISTS".to_string()), "{select:?}");
    assert!(select.iter().any(|l| l.starts_with("* OK [UIDVALIDITY ")), "{select:?}");
    assert!(select.contains(&"* OK [UIDNEXT 1] Predicted next UID".to_string()), "{select:?}");
    assert_eq!(tagged(&select), "4 OK [READ-WRITE] Select completed");

    deliver(&relay, &alice, &bob).await;
    let noop = c.imap("5", "NOOP").await;
    assert_eq!(noop[0], "* 1 EXISTS");

    let fields = "MESSAGE-ID DATE X-MICROSOFT-ORIGINAL-MESSAGE-ID FROM CONTENT-TYPE SECURE-JOIN CHAT-VERSION CHAT-IS-POST-MESSAGE AUTOCRYPT-SETUP-MESSAGE";
    let headers = c.imap("6", &format!("UID FETCH 1:500 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({fields})])")).await;
    let fetch = &headers[0];
    assert!(fetch.starts_with("* 1 FETCH (UID 1 RFC822.SIZE "), "{fetch}");
    assert!(fetch.contains(&format!("BODY[HEADER.FIELDS ({fields})] {{")), "the section is echoed: {fetch}");
    assert!(fetch.contains(&format!("From: <{alice}>")) && fetch.contains("Chat-Version: 1.0"), "{fetch}");
    assert!(!fetch.contains("Subject"), "only the fields asked for: {fetch}");

    let body = c.imap("7", "UID FETCH 1 (FLAGS BODY.PEEK[])").await;
    // Recent to this session, the first to be told of it (RFC 3501 §2.3.2).
    assert!(body[0].starts_with("* 1 FETCH (UID 1 FLAGS (\\Recent) BODY[] {"), "{}", body[0]);
    assert!(body[0].contains("-----BEGIN PGP MESSAGE-----"));

    let seen = c.imap("8", "UID STORE 1 +FLAGS (\\Seen)").await;
    assert_eq!(seen[0], "* 1 FETCH (FLAGS (\\Seen \\Recent) UID 1)");
    let deleted = c.imap("9", "UID STORE 1 +FLAGS (\\Deleted)").await;
    assert_eq!(deleted[0], "* 1 FETCH (FLAGS (\\Seen \\Deleted \\Recent) UID 1)");
    assert_eq!(tagged(&c.imap("10", "CLOSE").await), "10 OK Completed");
    let account = relay.relay.store.account(&bob).unwrap().unwrap();
    assert_eq!(account.messages, 0, "CLOSE expunged");

    let status = c.imap("11", "STATUS \"INBOX\" (UIDNEXT MESSAGES)").await;
    assert_eq!(status[0], "* STATUS INBOX (UIDNEXT 2 MESSAGES 0)");
    assert_eq!(tagged(&c.imap("12", "LOGOUT").await), "12 OK Completed");
}

#[tokio::test]
async fn idle_is_woken_by_a_delivery_from_another_connection() {
    let relay = TestRelay::start("").await;
    let alice = account(&relay, "alice0001").await;
    let bob = TestRelay::address("bob000001");
    let mut c = login(&relay, &bob).await;
    c.imap("s", "SELECT INBOX").await;
    c.send("i IDLE").await;
    assert_eq!(c.imap_line().await, "+ idling");
    deliver(&relay, &alice, &bob).await;
    let announced = tokio::time::timeout(Duration::from_secs(10), c.imap_line()).await.expect("woken within seconds");
    assert_eq!(announced, "* 1 EXISTS");
    assert_eq!(c.imap_line().await, "* 1 RECENT", "recent to the session first told of it");
    c.send("DONE").await;
    assert_eq!(c.imap_line().await, "i OK IDLE terminated");
    // The new message is fetchable in the already-selected mailbox.
    let fetched = c.imap("f", "UID FETCH 1 (UID)").await;
    assert_eq!(fetched[0], "* 1 FETCH (UID 1)");
}

#[tokio::test]
async fn flags_and_expunges_reach_other_sessions() {
    let relay = TestRelay::start("").await;
    let alice = account(&relay, "alice0001").await;
    let bob = TestRelay::address("bob000001");
    let mut one = login(&relay, &bob).await;
    let mut two = login(&relay, &bob).await;
    deliver(&relay, &alice, &bob).await;
    deliver(&relay, &alice, &bob).await;
    one.imap("a", "SELECT INBOX").await;
    two.imap("a", "SELECT INBOX").await;
    one.imap("b", "STORE 1 +FLAGS.SILENT (\\Seen)").await;
    let seen = two.imap("b", "NOOP").await;
    assert_eq!(seen[0], "* 1 FETCH (FLAGS (\\Seen))");
    one.imap("c", "UID STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    let expunged = one.imap("d", "UID EXPUNGE 2").await;
    assert_eq!(expunged[0], "* 2 EXPUNGE");
    let gone = two.imap("c", "NOOP").await;
    assert!(gone.contains(&"* 2 EXPUNGE".to_string()), "{gone:?}");

    // A change of its own right after another session's must not hide the other one.
    deliver(&relay, &alice, &bob).await;
    one.imap("e", "NOOP").await;
    two.imap("d", "NOOP").await;
    one.imap("f", "UID STORE 3 +FLAGS.SILENT (\\Deleted)").await;
    one.imap("g", "UID EXPUNGE 3").await;
    let mut seen = two.imap("e", "STORE 1 +FLAGS.SILENT (\\Flagged)").await;
    seen.extend(two.imap("f", "NOOP").await);
    assert!(seen.contains(&"* 2 EXPUNGE".to_string()), "{seen:?}");
}

#[tokio::test]
async fn device_tokens_add_up() {
    let relay = TestRelay::start("").await;
    let bob = TestRelay::address("bob000001");
    let mut c = login(&relay, &bob).await;
    assert_eq!(tagged(&c.imap("a", "SETMETADATA INBOX (/private/devicetoken \"token-one\")").await), "a OK Completed");
    assert_eq!(tagged(&c.imap("b", "SETMETADATA INBOX (/private/devicetoken \"token-two\")").await), "b OK Completed");
    let tokens = c.imap("c", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert!(
        tokens[0] == "* METADATA INBOX (/private/devicetoken {19}\r\ntoken-one token-two)"
            || tokens[0] == "* METADATA INBOX (/private/devicetoken {19}\r\ntoken-two token-one)",
        "{tokens:?}"
    );
    let refused = c.imap("d", "SETMETADATA \"\" (/shared/comment \"mine now\")").await;
    assert!(tagged(&refused).starts_with("d NO"), "{refused:?}");
    // Unknown server keys are left out, never an error.
    let unknown = c.imap("e", "GETMETADATA \"\" (/shared/nothing)").await;
    assert_eq!(unknown, ["e OK Completed"]);
}

#[tokio::test]
async fn folders_for_standard_tools() {
    let relay = TestRelay::start("").await;
    let bob = TestRelay::address("bob000001");
    let mut c = login(&relay, &bob).await;
    let list = c.imap("a", "LIST \"\" \"*\"").await;
    assert_eq!(
        list,
        [
            "* LIST () \"/\" INBOX",
            "* LIST (\\Drafts) \"/\" Drafts",
            "* LIST (\\Junk) \"/\" Junk",
            "* LIST (\\Sent) \"/\" Sent",
            "* LIST (\\Trash) \"/\" Trash",
            "a OK List completed"
        ]
    );
    let special = c.imap("b", "LIST (SPECIAL-USE) \"\" \"*\"").await;
    assert_eq!(special.len(), 5, "{special:?}");
    assert_eq!(c.imap("c", "LIST \"\" \"\"").await[0], "* LIST (\\Noselect) \"/\" \"\"");
    assert_eq!(tagged(&c.imap("d", "CREATE Archive").await), "d OK Create completed");
    assert_eq!(tagged(&c.imap("e", "CREATE Archive").await), "e NO [ALREADYEXISTS] Mailbox already exists");
    assert_eq!(tagged(&c.imap("f", "RENAME Archive Old").await), "f OK Rename completed");
    assert_eq!(tagged(&c.imap("g", "UNSUBSCRIBE Old").await), "g OK Completed");
    let lsub = c.imap("h", "LSUB \"\" \"*\"").await;
    assert!(!lsub.iter().any(|l| l.ends_with(" Old")), "{lsub:?}");
    assert_eq!(tagged(&c.imap("i", "DELETE Old").await), "i OK Delete completed");
    assert_eq!(tagged(&c.imap("j", "DELETE INBOX").await), "j NO [CANNOT] INBOX cannot be deleted or renamed");
    assert_eq!(tagged(&c.imap("k", "SELECT Nowhere").await), "k NO [NONEXISTENT] Mailbox doesn't exist");
    let namespace = c.imap("l", "NAMESPACE").await;
    assert_eq!(namespace[0], "* NAMESPACE ((\"\" \"/\")) NIL NIL");
}

#[tokio::test]
async fn append_copy_move_search() {
    let relay = TestRelay::start("").await;
    let bob = TestRelay::address("bob000001");
    let mut c = login(&relay, &bob).await;
    let message = "From: bob@x\r\nSubject: draft one\r\n\r\nhello\r\n";
    c.send(&format!("a APPEND Drafts (\\Draft) {{{}}}", message.len())).await;
    assert_eq!(c.imap_line().await, "+ Ready for literal data");
    c.write(message.as_bytes()).await;
    c.send("").await;
    let appended = c.imap_until("a").await;
    let append_uid = tagged(&appended);
    assert!(append_uid.starts_with("a OK [APPENDUID ") && append_uid.contains(" 1] Append completed"), "{appended:?}");

    c.imap("b", "SELECT Drafts").await;
    let search = c.imap("c", "SEARCH SUBJECT \"DRAFT ONE\" DRAFT UNSEEN").await;
    assert_eq!(search[0], "* SEARCH 1");
    assert_eq!(c.imap("d", "UID SEARCH DELETED").await[0], "* SEARCH");

    let copied = c.imap("e", "UID COPY 1 Trash").await;
    assert!(tagged(&copied).starts_with("e OK [COPYUID ") && tagged(&copied).contains(" 1 1]"), "{copied:?}");
    let moved = c.imap("f", "UID MOVE 1 Sent").await;
    assert!(moved[0].starts_with("* OK [COPYUID ") && moved[0].contains(" 1 1]"), "{moved:?}");
    assert!(moved.contains(&"* 1 EXPUNGE".to_string()), "{moved:?}");
    assert_eq!(tagged(&moved), "f OK Move completed");
    let missing = c.imap("g", "COPY 1:* Nowhere").await;
    assert!(tagged(&missing).starts_with("g NO"), "{missing:?}");

    // Mail readers' view of a message.
    c.imap("x", "SELECT Sent").await;
    let summary = c.imap("y", "FETCH 1 (ENVELOPE BODYSTRUCTURE)").await;
    assert_eq!(
        summary[0],
        "* 1 FETCH (ENVELOPE (NIL \"draft one\" ((NIL NIL \"bob\" \"x\")) ((NIL NIL \"bob\" \"x\")) ((NIL NIL \"bob\" \"x\")) NIL NIL NIL NIL NIL) \
         BODYSTRUCTURE (\"TEXT\" \"plain\" NIL NIL NIL \"7BIT\" 7 1))"
    );
    let trash = c.imap("h", "STATUS Trash (MESSAGES UNSEEN)").await;
    assert_eq!(trash[0], "* STATUS Trash (MESSAGES 1 UNSEEN 1)");
    let account = relay.relay.store.account(&bob).unwrap().unwrap();
    assert_eq!(account.messages, 2, "a copy counts, a move does not");
}

#[tokio::test]
async fn condstore_changes_since() {
    let relay = TestRelay::start("").await;
    let alice = account(&relay, "alice0001").await;
    let bob = account(&relay, "bob000001").await;
    deliver(&relay, &alice, &bob).await;
    deliver(&relay, &alice, &bob).await;
    let mut c = login(&relay, &bob).await;
    assert_eq!(c.imap("a", "ENABLE CONDSTORE").await[0], "* ENABLED CONDSTORE");
    let select = c.imap("b", "SELECT INBOX").await;
    let highest: u64 = select
        .iter()
        .find_map(|l| l.strip_prefix("* OK [HIGHESTMODSEQ ")?.split(']').next()?.parse().ok())
        .expect("HIGHESTMODSEQ in SELECT");
    c.imap("c", "UID STORE 2 +FLAGS.SILENT (\\Flagged)").await;
    let changed = c.imap("d", &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")).await;
    assert_eq!(changed.len(), 2, "only the changed message: {changed:?}");
    assert!(changed[0].starts_with("* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ ("), "{changed:?}");
}

#[tokio::test]
async fn bad_input_gets_clear_answers() {
    let relay = TestRelay::start("max_message_size = 1000").await;
    let bob = TestRelay::address("bob000001");
    let mut c = login(&relay, &bob).await;
    assert_eq!(c.imap("a", "FROBNICATE").await, ["a BAD Error in IMAP command received by server"]);
    c.send("b APPEND INBOX {5000}").await;
    assert_eq!(c.imap_line().await, "b BAD [TOOBIG] Literal too large");
    assert_eq!(tagged(&c.imap("c", "NOOP").await), "c OK Completed", "the session goes on");
    assert_eq!(tagged(&c.imap("d", "FETCH 1 (FLAGS)").await), "d NO Select a mailbox first");
    assert!(tagged(&c.imap("e", "LOGIN a b").await).starts_with("e BAD"));
    // Messages that end in a field name without a colon.
    for odd in ["Subject: x\r\nFrom", "Subject: x\r\nDate"] {
        c.send(&format!("f APPEND INBOX {{{}}}", odd.len())).await;
        c.imap_line().await;
        c.send(odd).await;
        assert!(tagged(&c.imap_until("f").await).starts_with("f OK"));
    }
    c.imap("g", "SELECT INBOX").await;
    assert_eq!(c.imap("h", "SEARCH FROM x").await, ["* SEARCH", "h OK Search completed"]);
    assert_eq!(c.imap("i", "SEARCH SENTON 1-Jan-2026").await, ["* SEARCH", "i OK Search completed"]);
}

#[tokio::test]
async fn starttls_then_login_and_injected_plaintext_is_ignored() {
    let relay = TestRelay::start("").await;
    let bob = TestRelay::address("bob000001");
    let mut c = Client::plain(relay.imap).await;
    c.imap_line().await;
    c.write(b"s STARTTLS\r\nx LOGOUT\r\n").await;
    assert_eq!(c.imap_line().await, "s OK Begin TLS negotiation now");
    c.start_tls().await;
    // The smuggled LOGOUT was dropped: the session is alive and takes a login.
    let reply = c.imap("l", &format!("LOGIN \"{bob}\" \"{PASSWORD}\"")).await;
    assert!(tagged(&reply).starts_with("l OK"), "{reply:?}");
}

#[tokio::test]
async fn compress_deflate_carries_the_session() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let relay = TestRelay::start("").await;
    let alice = account(&relay, "alice0001").await;
    let bob = account(&relay, "bob000001").await;
    deliver(&relay, &alice, &bob).await;
    let mut c = login(&relay, &bob).await;
    assert_eq!(c.imap("z", "COMPRESS DEFLATE").await, ["z OK DEFLATE active"]);
    let mut tls = c.into_tls();
    let (mut deflate, mut inflate) = (Compress::new(Compression::default(), false), Decompress::new(false));
    let mut send = async |tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, line: &str| {
        let mut out = Vec::with_capacity(line.len() + 64);
        deflate.compress_vec(format!("{line}\r\n").as_bytes(), &mut out, FlushCompress::Sync).unwrap();
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
    };
    // Read and inflate until the tagged line has arrived whole.
    let mut receive = async |tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, tag: &str| -> String {
        let mut text = String::new();
        while !(text.ends_with("\r\n") && text.split("\r\n").any(|line| line.starts_with(&format!("{tag} ")))) {
            let mut raw = [0u8; 4096];
            let n = tls.read(&mut raw).await.unwrap();
            assert!(n > 0, "closed");
            let mut out = Vec::with_capacity(64 * 1024);
            inflate.decompress_vec(&raw[..n], &mut out, FlushDecompress::None).unwrap();
            text.push_str(&String::from_utf8_lossy(&out));
        }
        text
    };
    send(&mut tls, "a SELECT INBOX").await;
    let select = receive(&mut tls, "a").await;
    assert!(select.contains("* 1 EXISTS") && select.contains("a OK [READ-WRITE]"), "{select}");
    send(&mut tls, "b UID FETCH 1 (BODY.PEEK[])").await;
    let fetched = receive(&mut tls, "b").await;
    assert!(fetched.contains("-----BEGIN PGP MESSAGE-----") && fetched.contains("b OK Fetch completed"), "{fetched}");
    // A command that inflates to more than the session reads at once, arriving in one packet:
    // the inflater holds the rest back, and it must be asked again before the socket is.
    send(&mut tls, &format!("d SEARCH {}\r\ne NOOP", ["ALL"; 1000].join(" "))).await;
    let both = tokio::time::timeout(Duration::from_secs(30), receive(&mut tls, "e")).await.expect("the rest of the command was left in the inflater");
    assert!(both.contains("d OK Search completed") && both.contains("e OK"), "{both}");
    send(&mut tls, "c COMPRESS DEFLATE").await;
    assert!(receive(&mut tls, "c").await.contains("c NO [COMPRESSIONACTIVE]"));
}

#[tokio::test]
async fn before_login_input_is_bounded() {
    let relay = TestRelay::start("").await;
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    c.send("a LOGIN {100000}").await;
    assert_eq!(c.imap_line().await, "a BAD [TOOBIG] Literal too large");
    // A line that never ends is cut off.
    c.write(&vec![b'x'; 64 * 1024]).await;
    let rest = c.rest().await;
    assert!(rest.starts_with("* BYE"), "{rest}");
}
