//! Interoperability with a mail server that is not a chatmail relay: Debian's Postfix on its own
//! loopback address and domain, found through the same DNS server. Mail goes from the relay to
//! Postfix over SMTP with STARTTLS (Postfix has no /mxdeliv), DKIM-signed so that the signature
//! still verifies after the hop; mail comes back relayed by Postfix and passes the relay's DKIM
//! and encryption checks; cleartext is refused, and Postfix tells its sender why.

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::dns::mail_domain;
use common::mail::{account, deliver, encrypted, send_message, wait_for_inbox};
use common::net::Net;
use common::postfix::Postfix;
use ferrymail::dkim::Dkim;
use ferrymail::dns::Dns;

/// Wait until `what` holds, nudging the relay's queue; the Postfix log in the failure message.
async fn wait_for(postfix: &Postfix, relay: &common::relay::TestRelay, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen; the Postfix log:\n{}", postfix.log());
        relay.relay.outbound.wake();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Hand `message` to Postfix for relaying, as a mail program would.
async fn submit_to_postfix(postfix: &Postfix, from: &str, to: &str, message: &[u8]) {
    let mut c = Client::plain(postfix.smtp).await;
    assert!(c.reply().await[0].starts_with("220 "));
    c.cmd("EHLO client.test").await;
    let reply = send_message(&mut c, from, &[to], message).await;
    assert!(reply.starts_with("250 "), "{reply}");
    c.cmd("QUIT").await;
}

#[tokio::test]
async fn mail_goes_to_postfix_and_comes_back_from_it() {
    let net = Net::new();
    let a = net.relay("a", 2, "", None).await;
    let postfix_domain = net.domain("p");
    let postfix = Postfix::start(&postfix_domain, net.ip(4), &["carol0001"], &[(&a.domain, a.smtp)]);
    // Postfix's mail is signed the way an OpenDKIM milter would sign it, with a published key.
    let keys = tempfile::tempdir().unwrap();
    let signer = Dkim::load_or_generate(keys.path(), &postfix_domain, "pf", &Dns::new(None).unwrap()).unwrap();
    let _dns = net.records(&[&a], &mail_domain(&postfix_domain, net.ip(4), "pf", signer.dns_record()));
    let alice = account(&a, "alice0001").await;
    let carol = format!("carol0001@{postfix_domain}");

    // To Postfix: /mxdeliv is not there, so SMTP with STARTTLS.
    deliver(&a, &alice, &carol).await;
    wait_for(&postfix, &a, "delivery to Postfix", || postfix.mailbox("carol0001").contains("-----END PGP MESSAGE-----")).await;
    let mbox = postfix.mailbox("carol0001");
    assert!(mbox.contains("(using TLSv1.3 with cipher"), "Postfix's Received field tells of TLS:\n{mbox}");
    let delivered = mbox.split_once('\n').unwrap().1.replace('\n', "\r\n");
    let results = a.relay.dkim.verify(delivered.as_bytes()).await;
    assert!(results.iter().any(|r| r.pass && r.domain == a.domain), "the signature survived the hop: {results:?}\n{mbox}");
    assert!(a.relay.store.queue().unwrap().is_empty());

    // From Postfix: relayed over SMTP (STARTTLS) and accepted.
    submit_to_postfix(&postfix, &carol, &alice, &signer.sign(&encrypted(&carol))).await;
    let received = wait_for_inbox(&a, &alice, 1, &[]).await;
    assert!(received[0].contains("-----BEGIN PGP MESSAGE-----") && received[0].contains(&format!("From: <{carol}>")));
    let log = postfix.log();
    assert!(log.contains(&format!("relay={0}[{0}]:25", net.ip(2))) && log.contains("status=sent (250 2.0.0 Ok: queued)"), "{log}");

    // Cleartext through Postfix is refused, and Postfix bounces it to Carol with the reason.
    let cleartext = format!("From: <{carol}>\r\nTo: <{alice}>\r\nSubject: hi\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <c1@{postfix_domain}>\r\n\r\nhello\r\n");
    submit_to_postfix(&postfix, &carol, &alice, &signer.sign(cleartext.as_bytes())).await;
    wait_for(&postfix, &a, "the bounce", || postfix.mailbox("carol0001").contains("Undelivered Mail Returned to Sender")).await;
    assert!(postfix.mailbox("carol0001").contains("523 Encryption Needed"), "{}", postfix.mailbox("carol0001"));
    assert_eq!(common::mail::inbox(&a, &alice).len(), 1);
}
