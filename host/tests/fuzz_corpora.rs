//! The committed fuzz corpora (`fuzz/corpus/<target>/`) replayed through the fuzz entry points,
//! so that every input a fuzzer once found interesting stays harmless in every test run.
//! `scripts/fuzz` runs the fuzzers themselves. The seeds are written by the ignored test
//! below: `cargo test -p ferrymail --test fuzz_corpora -- --ignored write_seeds`.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

fn replay(target: &str, run: fn(&[u8])) {
    let mut count = 0;
    for entry in std::fs::read_dir(corpus(target)).unwrap() {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "the {target} corpus is empty");
}

#[test]
fn config_corpus() {
    replay("config", ferrymail::fuzz::config);
}

#[test]
fn message_corpus() {
    replay("message", ferrymail::fuzz::message);
}

#[test]
fn compress_corpus() {
    replay("compress", ferrymail::fuzz::compress);
}

#[test]
fn smtp_session_corpus() {
    replay("smtp_session", ferrymail::fuzz::smtp_session);
}

#[test]
fn imap_session_corpus() {
    replay("imap_session", ferrymail::fuzz::imap_session);
}

const USER: &str = "fuzzer001@_fuzz.test";
const OTHER: &str = "fuzzer002@_fuzz.test";
const PASSWORD: &str = "fuzz-password";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
#[ignore = "writes the seed corpora; run by hand when the protocols change"]
fn write_seeds() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for example in ["ferrymail.toml", "local.toml"] {
        write("config", example, &std::fs::read(root.join("examples").join(example)).unwrap());
    }
    write(
        "config",
        "chatmail.ini",
        b"[params]\nmail_domain = _chat.test\nmax_user_send_per_minute = 80\nmax_mailbox_size = 100M\n\
          privacy_postal =\n    Jane Doe\n    Main Street 1\nmtail_address = 127.0.0.1\n",
    );
    write("config", "policies.toml", b"mail_domain = \"c.test\"\n[[policy]]\nbuiltin = \"privacy\"\n[policy.config]\nx = 1\n[policy_engine]\ndeadline_ms = 50\n");

    let certs = common::pgp::certs();
    let binary = common::pgp::encrypt_to(&[&certs[1]], b"hello");
    let armored = common::pgp::armor(&binary, &[]);
    let encrypted = common::pgp::encrypted_mime(USER, &armored);
    write("message", "encrypted.eml", &encrypted);
    write("message", "legacy-headers.eml", &common::pgp::encrypted_mime(USER, &common::pgp::armor(&common::pgp::with_legacy_headers(&binary), &[])));
    write("message", "partial-lengths.eml", &common::pgp::encrypted_mime(USER, &common::pgp::armor(&common::pgp::with_partial_lengths(&binary), &[])));
    write("message", "literal-only.eml", &common::pgp::encrypted_mime(USER, &common::pgp::armor(&common::pgp::literal_only(b"hi"), &[])));
    write("message", "plain.eml", b"From: a@c.test\r\nTo: b@c.test\r\nSubject: hi\r\n\r\nhello\r\n");
    write(
        "message",
        "nested.eml",
        b"From: =?utf-8?q?A=C3=A9?= <a@c.test>\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\
          Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=latin1\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n--b--\r\n--a\r\nContent-Type: message/rfc822\r\n\r\n\
          Subject: inner\r\n\r\nbody\r\n--a\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
          aGVsbG8=\r\n--a--\r\n",
    );

    let raw = b"a SELECT INBOX\r\nb UID FETCH 1:* (BODY.PEEK[])\r\n".repeat(20);
    let compressed = {
        use flate2::{Compress, Compression, FlushCompress};
        let mut deflate = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(raw.len() + 64);
        deflate.compress_vec(&raw, &mut out, FlushCompress::Sync).unwrap();
        out
    };
    write("compress", "commands", &[7].into_iter().chain(compressed).collect::<Vec<u8>>());
    let bomb = {
        use flate2::{Compress, Compression, FlushCompress};
        let zeros = vec![0u8; 4 << 20];
        let mut deflate = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(16 << 10);
        deflate.compress_vec(&zeros, &mut out, FlushCompress::Sync).unwrap();
        out
    };
    write("compress", "bomb", &[255].into_iter().chain(bomb).collect::<Vec<u8>>());

    let mut data = encrypted.clone();
    data.extend_from_slice(b".\r\n");
    let plain_auth = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let session = |body: &str| format!("EHLO fuzz.test\r\nAUTH PLAIN {plain_auth}\r\n{body}");
    let mut send = session(&format!("MAIL FROM:<{USER}>\r\nRCPT TO:<{OTHER}>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n")).into_bytes();
    send.extend_from_slice(&data);
    send.extend_from_slice(b"RSET\r\nNOOP\r\nVRFY x\r\nQUIT\r\n");
    write("smtp_session", "send", &send);
    let cleartext = session(&format!("MAIL FROM:<{USER}> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<{OTHER}>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n"));
    write("smtp_session", "cleartext", cleartext.as_bytes());
    let login = format!("EHLO fuzz.test\r\nAUTH LOGIN\r\n{}\r\n{}\r\nHELP\r\nSTARTTLS\r\nMAIL FROM:<{OTHER}>\r\nBDAT 5 LAST\r\nhello", b64(USER.as_bytes()), b64(PASSWORD.as_bytes()));
    write("smtp_session", "auth-login", login.as_bytes());
    write("smtp_session", "errors", format!("HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<{OTHER}>\r\n{}\r\nAUTH PLAIN *\r\nAUTH CRAM-MD5\r\n", "x".repeat(5000)).as_bytes());

    let login = format!("a LOGIN \"{USER}\" \"{PASSWORD}\"\r\n");
    let mut append = format!("{login}b APPEND INBOX (\\Seen) {{{}}}\r\n", encrypted.len()).into_bytes();
    append.extend_from_slice(&encrypted);
    append.extend_from_slice(
        b"\r\nc SELECT INBOX\r\nd UID FETCH 1:* (UID RFC822.SIZE FLAGS BODYSTRUCTURE ENVELOPE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM)] BODY.PEEK[1.MIME] BODY[2]<0.10>)\r\n\
          e UID STORE 1 +FLAGS (\\Seen \\Deleted)\r\nf SEARCH UNSEEN FROM \"x\" SINCE 1-Jan-2026\r\ng UID MOVE 1 Trash\r\nh EXPUNGE\r\ni CLOSE\r\nj LOGOUT\r\n",
    );
    write("imap_session", "append-fetch", &append);
    let app = format!(
        "{login}b ID (\"name\" \"Delta Chat\")\r\nc CAPABILITY\r\nd GETQUOTAROOT \"INBOX\"\r\ne GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/turn)\r\n\
         f SELECT \"INBOX\" (CONDSTORE)\r\ng IDLE\r\nDONE\r\nh SETMETADATA INBOX (/private/devicetoken \"tok\")\r\ni STATUS \"INBOX\" (UIDNEXT MESSAGES)\r\n\
         j LIST \"\" \"*\" RETURN (SPECIAL-USE)\r\nk CREATE Folder\r\nl RENAME Folder Other\r\nm DELETE Other\r\nn COMPRESS DEFLATE\r\n"
    );
    write("imap_session", "app", app.as_bytes());
    let literals = format!("a LOGIN {{{}+}}\r\n{USER} {{{}}}\r\n{PASSWORD}\r\nb SELECT {{5}}\r\nINBOX\r\nc APPEND INBOX {{4294967295}}\r\nd NOOP\r\n", USER.len(), PASSWORD.len());
    write("imap_session", "literals", literals.as_bytes());
    write("imap_session", "authenticate", format!("a AUTHENTICATE PLAIN\r\n{plain_auth}\r\nb STARTTLS\r\nc FROBNICATE\r\n").as_bytes());
}
