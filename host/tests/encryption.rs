//! The default bundle's verdicts on real OpenPGP messages and on near-misses (SPEC §2, §4),
//! run through the whole engine: host parse, Wasm policies, chain.

mod common;

use common::pgp;
use ferrymail::check::{CheckRequest, check, report};
use ferrymail::policy::{Direction, MessageDecision, Policies};

fn bundle() -> (Policies, ferrymail::config::Config) {
    let config = common::config();
    (common::policies(&config), config)
}

async fn outgoing(policies: &Policies, config: &ferrymail::config::Config, from: &str, message: Vec<u8>) -> MessageDecision {
    let request = CheckRequest {
        direction: Direction::Outgoing,
        mail_from: from.into(),
        rcpt_to: vec!["bob@c.test".into(), "carol@other.test".into()],
        dkim_pass: vec![],
        message,
    };
    check(policies, config, request).await
}

async fn incoming(policies: &Policies, config: &ferrymail::config::Config, from: &str, dkim: &[&str], message: Vec<u8>) -> MessageDecision {
    let request = CheckRequest {
        direction: Direction::Incoming,
        mail_from: from.into(),
        rcpt_to: vec!["alice@c.test".into()],
        dkim_pass: dkim.iter().map(|d| d.to_string()).collect(),
        message,
    };
    check(policies, config, request).await
}

/// The first line `policy check` would print.
fn verdict(decision: &MessageDecision) -> String {
    report(decision).lines().next().unwrap().to_string()
}

const NEEDED: &str = "reject 523 Encryption Needed: Invalid Unencrypted Mail";

fn encrypted_for_all() -> Vec<u8> {
    let certs = pgp::certs();
    pgp::encrypt_to(&[&certs[0], &certs[1], &certs[2]], b"hello, three of us")
}

#[tokio::test]
async fn pkesk_seipd_for_several_recipients_passes_both_ways() {
    let (policies, config) = bundle();
    let binary = encrypted_for_all();
    let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(&binary, &[]));

    let parsed = ferrymail::message::ParsedMessage::parse(message.clone()).unwrap();
    let tags: Vec<u8> = parsed.armor(2).unwrap().packets.iter().map(|p| p.tag).collect();
    assert_eq!(tags, [1, 1, 1, 18], "one PKESK per recipient, then SEIPD");

    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message.clone()).await), "accept");
    let from_other = pgp::encrypted_mime("carol@other.test", &pgp::armor(&binary, &[]));
    assert_eq!(verdict(&incoming(&policies, &config, "carol@other.test", &["other.test"], from_other).await), "accept");
}

#[tokio::test]
async fn skesk_seipd_passes() {
    let (policies, config) = bundle();
    let binary = pgp::encrypt_with_password("correct horse", b"symmetric");
    let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(&binary, &[]));
    let parsed = ferrymail::message::ParsedMessage::parse(message.clone()).unwrap();
    assert_eq!(parsed.armor(2).unwrap().packets[0].tag, 3, "SKESK first");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), "accept");
}

#[tokio::test]
async fn legacy_packet_headers_pass() {
    let (policies, config) = bundle();
    let legacy = pgp::with_legacy_headers(&encrypted_for_all());
    let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(&legacy, &[]));
    let parsed = ferrymail::message::ParsedMessage::parse(message.clone()).unwrap();
    let packets = &parsed.armor(2).unwrap().packets;
    assert!(packets[0].legacy_format && !packets[3].legacy_format, "{packets:?}");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), "accept");
}

#[tokio::test]
async fn partial_body_lengths_pass() {
    let (policies, config) = bundle();
    let certs = pgp::certs();
    // sequoia only streams in chunks past 4 MiB; re-encode a small message the same way.
    let binary = pgp::with_partial_lengths(&pgp::encrypt_to(&[&certs[1]], &[b'x'; 3000]));
    let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(&binary, &[]));
    let parsed = ferrymail::message::ParsedMessage::parse(message.clone()).unwrap();
    let seipd = parsed.armor(2).unwrap().packets.last().unwrap().clone();
    assert!(seipd.partial && seipd.tag == 18, "{seipd:?}");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), "accept");
}

#[tokio::test]
async fn cleartext_is_refused_with_523_both_ways() {
    let (policies, config) = bundle();
    let plain = b"From: alice@c.test\r\nTo: bob@c.test\r\nSubject: hi\r\n\r\nhello\r\n".to_vec();
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", plain).await), NEEDED);
    let plain = b"From: carol@other.test\r\nSubject: hi\r\n\r\nhello\r\n".to_vec();
    assert_eq!(verdict(&incoming(&policies, &config, "carol@other.test", &["other.test"], plain).await), NEEDED);
}

#[tokio::test]
async fn armor_inside_text_plain_is_refused() {
    let (policies, config) = bundle();
    let armored = pgp::armor(&encrypted_for_all(), &[]);
    let message = format!("From: alice@c.test\r\nContent-Type: text/plain\r\n\r\n{armored}").into_bytes();
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
}

#[tokio::test]
async fn literal_data_and_signed_only_are_refused() {
    let (policies, config) = bundle();
    for binary in [pgp::literal_only(b"not secret"), pgp::signed_only(b"signed, not secret")] {
        let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(&binary, &[]));
        assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
    }
}

#[tokio::test]
async fn truncated_payload_is_refused() {
    let (policies, config) = bundle();
    let binary = encrypted_for_all();
    let cut = &binary[..binary.len() - 7];
    let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(cut, &[]));
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
    // Cut inside the first packet's header.
    let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(&binary[..1], &[]));
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
}

#[tokio::test]
async fn trailing_data_after_seipd_is_refused() {
    let (policies, config) = bundle();
    let mut binary = encrypted_for_all();
    binary.extend_from_slice(&pgp::literal_only(b"appended"));
    let message = pgp::encrypted_mime("alice@c.test", &pgp::armor(&binary, &[]));
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
}

#[tokio::test]
async fn a_third_part_is_refused() {
    let (policies, config) = bundle();
    let armored = pgp::armor(&encrypted_for_all(), &[]);
    let extra = "--zxcv\r\nContent-Type: text/plain\r\n\r\nsurprise\r\n";
    let message = pgp::mime("alice@c.test", "Version: 1", &armored, extra);
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
}

#[tokio::test]
async fn version_2_marker_is_refused() {
    let (policies, config) = bundle();
    let armored = pgp::armor(&encrypted_for_all(), &[]);
    let message = pgp::mime("alice@c.test", "Version: 2", &armored, "");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
}

#[tokio::test]
async fn armor_version_header_refused_outgoing_ignored_incoming() {
    let (policies, config) = bundle();
    let armored = pgp::armor(&encrypted_for_all(), &[("Version", "GnuPG v2")]);
    assert!(armored.contains("Version: GnuPG v2"), "{armored}");
    let message = pgp::encrypted_mime("alice@c.test", &armored);
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), NEEDED);
    let message = pgp::encrypted_mime("carol@other.test", &armored);
    assert_eq!(verdict(&incoming(&policies, &config, "carol@other.test", &["other.test"], message).await), "accept");
}

fn securejoin(kind: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <alice@c.test>\r\nTo: <bob@c.test>\r\nSubject: Message from alice@c.test\r\nSecure-Join: {kind}\r\n\
         Secure-Join-Invitenumber: 123\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"sj\"\r\n\r\n\
         --sj\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n--sj--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn secure_join_requests_pass_and_fakes_do_not() {
    let (policies, config) = bundle();
    let real = securejoin("vc-request", "Secure-Join: vc-request");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", real).await), "accept");
    let group = securejoin("vg-request", "secure-join: vg-request\r\n");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", group).await), "accept");
    let fake = securejoin("vc-request", "Buy viagra!");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", fake).await), NEEDED);
    let wrong_kind = securejoin("vc-auth-required", "Secure-Join: vc-request");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", wrong_kind).await), NEEDED);
}

fn bounce(from: &str) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <{from}>\r\nTo: alice@c.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n\
         --r\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; other.test\r\n\r\n\
         Final-Recipient: rfc822; nobody@other.test\r\nAction: failed\r\nStatus: 5.1.1\r\n--r--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn bounces_pass_incoming_only() {
    let (policies, config) = bundle();
    let decision = incoming(&policies, &config, "", &["other.test"], bounce("MAILER-DAEMON@other.test")).await;
    assert_eq!(verdict(&decision), "accept");
    assert_eq!(decision.mail_from, None, "the null sender stays");
    // Out: a user cannot pass cleartext off as a bounce.
    let out = outgoing(&policies, &config, "mailer-daemon@c.test", bounce("mailer-daemon@c.test")).await;
    assert_eq!(verdict(&out), NEEDED);
    // In, but not from a mailer daemon.
    let not_daemon = incoming(&policies, &config, "", &["other.test"], bounce("carol@other.test")).await;
    assert_eq!(verdict(&not_daemon), NEEDED);
}

#[tokio::test]
async fn forged_from_is_refused_outgoing_and_neutralised_incoming() {
    let (policies, config) = bundle();
    let armored = pgp::armor(&encrypted_for_all(), &[]);
    let message = pgp::encrypted_mime("bob@c.test", &armored);
    let decision = outgoing(&policies, &config, "alice@c.test", message).await;
    assert_eq!(verdict(&decision), "reject 500 Invalid FROM <bob@c.test> for <alice@c.test>");

    // The From address compares case-insensitively.
    let message = pgp::encrypted_mime("Alice@C.test", &armored);
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", message).await), "accept");

    // Incoming with an envelope sender other than From: accepted, sender reset to <>.
    let message = pgp::encrypted_mime("carol@other.test", &armored);
    let decision = incoming(&policies, &config, "bounces@lists.other.test", &["other.test"], message).await;
    assert_eq!(verdict(&decision), "accept");
    assert_eq!(decision.mail_from.as_deref(), Some(""));
}

#[tokio::test]
async fn incoming_needs_dkim_aligned_with_from() {
    let (policies, config) = bundle();
    let message = pgp::encrypted_mime("carol@other.test", &pgp::armor(&encrypted_for_all(), &[]));
    let dkim_554 = "reject 554 5.7.1 No valid DKIM signature found";
    let unsigned = "reject 554 5.7.1 No DKIM signature found";
    assert_eq!(verdict(&incoming(&policies, &config, "carol@other.test", &[], message.clone()).await), unsigned);
    // A DKIM-Signature field the host could not even parse is a signature that fails.
    let broken = [b"DKIM-Signature: v=1; garbage\r\n".as_slice(), &message].concat();
    assert_eq!(verdict(&incoming(&policies, &config, "carol@other.test", &[], broken).await), dkim_554);
    let relaxed = incoming(&policies, &config, "carol@other.test", &["mail.other.test"], message.clone()).await;
    assert_eq!(verdict(&relaxed), dkim_554, "alignment is strict: a subdomain does not count");
    assert_eq!(verdict(&incoming(&policies, &config, "carol@other.test", &["OTHER.test"], message).await), "accept");
}

#[tokio::test]
async fn privacy_edits_outgoing_and_on_delivery() {
    let (policies, config) = bundle();
    let armored = pgp::armor(&encrypted_for_all(), &[]);
    let mut message = b"Received: from [192.0.2.1] by c.test\r\nX-Mailer: Delta Chat\r\nUser-Agent: x\r\nX-Originating-IP: 192.0.2.1\r\n".to_vec();
    message.extend(pgp::encrypted_mime("alice@c.test", &armored));
    let decision = outgoing(&policies, &config, "alice@c.test", message.clone()).await;
    assert_eq!(verdict(&decision), "accept");
    let out = ferrymail::message::edit::apply(&message, &decision.edits);
    let text = String::from_utf8(out.into_owned()).unwrap();
    for gone in ["Received:", "X-Mailer:", "User-Agent:", "X-Originating-IP:", "192.0.2.1"] {
        assert!(!text.contains(gone), "{gone} left in:\n{text}");
    }
    assert!(text.contains("\r\nSubject: [...]\r\n"));
    let mut delivery: Vec<&str> = decision.delivery_edits.remove.iter().map(String::as_str).collect();
    delivery.sort();
    assert_eq!(delivery, ["Authentication-Results", "DKIM-Signature", "Received"]);
}

#[tokio::test]
async fn oversized_and_unparseable_messages() {
    let (policies, mut config) = bundle();
    config.max_message_size = ferrymail::config::ByteSize(1000);
    let big = pgp::encrypted_mime("alice@c.test", &pgp::armor(&encrypted_for_all(), &[]));
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", big).await), "reject 552 5.3.4 Message exceeds maximum size");
    assert_eq!(verdict(&outgoing(&policies, &config, "alice@c.test", Vec::new()).await), "reject 500 Failed to parse message");
}

