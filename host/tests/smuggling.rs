//! SMTP smuggling: a client hides a second message behind an end-of-data sequence that the
//! relay and the next server read differently (`<LF>.<LF>`, `<CR>.<CR>`, ...). ferrymail ends a
//! message only at `<CRLF>.<CRLF>`, normalises bare CR and LF to CRLF, and writes only CRLF
//! lines, dot-stuffed: a real Postfix as the next hop receives exactly one message per
//! submission, with the hidden "message" as part of its content and every dot in place.

mod common;

use std::time::{Duration, Instant};

use common::dns::mail_domain;
use common::mail::{account, send_message, submit_session};
use common::net::Net;
use common::postfix::Postfix;

/// The end-of-data look-alikes of the SMTP smuggling papers (SEC Consult, 2023).
const VARIANTS: [&[u8]; 8] = [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r", b"\r\n\x00.\r\n"];

#[tokio::test]
async fn hidden_end_of_data_sequences_stay_content_on_the_way_out() {
    let net = Net::new();
    let postfix_domain = net.domain("p");
    let carol = format!("carol0001@{postfix_domain}");
    // Cleartext to Carol is allowed, so that what is hidden can be plain SMTP.
    let a = net.relay("a", 2, &format!("passthrough_recipients = \"{carol}\""), None).await;
    let postfix = Postfix::start(&postfix_domain, net.ip(4), &["carol0001"], &[(&a.domain, a.smtp)]);
    let _dns = net.records(&[&a], &mail_domain(&postfix_domain, net.ip(4), "pf", "v=DKIM1;k=rsa;p=x"));
    let alice = account(&a, "alice0001").await;

    let mut c = submit_session(&a, &alice).await;
    for (i, variant) in VARIANTS.iter().enumerate() {
        let hidden = format!(
            "MAIL FROM:<spoofed@{postfix_domain}>\r\nRCPT TO:<{carol}>\r\nDATA\r\nFrom: <spoofed@{postfix_domain}>\r\n\
             To: <{carol}>\r\nSubject: smuggled\r\n\r\nhidden body {i}\r\n"
        );
        let message = [
            format!("From: <{alice}>\r\nTo: <{carol}>\r\nSubject: variant {i}\r\nMessage-ID: <v{i}@{}>\r\n\r\nbefore {i}", a.domain).as_bytes(),
            variant,
            hidden.as_bytes(),
        ]
        .concat();
        let reply = send_message(&mut c, &alice, &[&carol], &message).await;
        assert_eq!(reply, "250 2.0.0 Ok: queued", "variant {variant:?}");
    }
    c.cmd("QUIT").await;

    // Postfix's mailbox: an mbox, each message behind a `From <sender> <date>` line.
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let mbox = postfix.mailbox("carol0001");
        let starts = mbox.lines().filter(|l| l.starts_with("From ")).count();
        if starts >= VARIANTS.len() && mbox.contains(&format!("hidden body {}", VARIANTS.len() - 1)) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            break postfix.mailbox("carol0001");
        }
        assert!(Instant::now() < deadline, "Postfix got {starts} messages:\n{mbox}\n{}", postfix.log());
        a.relay.outbound.wake();
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let envelopes: Vec<&str> = messages.lines().filter(|l| l.starts_with("From ")).collect();
    assert_eq!(envelopes.len(), VARIANTS.len(), "one message per submission:\n{messages}");
    assert!(envelopes.iter().all(|l| l.starts_with(&format!("From {alice} "))), "none from the hidden sender: {envelopes:?}");
    for i in 0..VARIANTS.len() {
        let body = &messages[messages.find(&format!("<v{i}@")).expect("the message arrived")..];
        let body = &body[..body.find("\nFrom ").unwrap_or(body.len())];
        assert!(body.contains(&format!("hidden body {i}")), "the hidden part is content: {body}");
        assert!(body.contains(&format!("MAIL FROM:<spoofed@{postfix_domain}>")), "{body}");
    }
    // A dot that stood alone on its line (whatever ended the line) is still there.
    for i in 0..7 {
        assert!(messages.contains(&format!("before {i}\n.\nMAIL FROM:")), "variant {i} kept its dot:\n{messages}");
    }
}
