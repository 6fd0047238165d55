//! Two relays on loopback with their own domains, addresses and standard ports (25, 443), and a
//! real DNS server (dnsmasq) answering their A, MX and DKIM records: mail goes from one to the
//! other over /mxdeliv or SMTP, is DKIM-checked on arrival, waits when the other is down, and
//! comes back as a bounce when it cannot be delivered.

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::dns::TestDns;
use common::mail::{account, deliver, encrypted, inbox, send_message, submit_session, wait_for_inbox};
use common::net::Net;
use common::relay::TestRelay;

/// Relays A (on 127.0.N.2) and B (on .3) in DNS, with the accounts alice on A and bob on B.
/// Bind every field: the DNS server and the network claim must live as long as the test.
struct Pair {
    a: TestRelay,
    b: TestRelay,
    alice: String,
    bob: String,
    _dns: TestDns,
    _net: Net,
}

impl Pair {
    async fn start(net: Net, b_extra: &str, extra_records: &[String]) -> Pair {
        let a = net.relay("a", 2, "", None).await;
        let b = net.relay("b", 3, b_extra, None).await;
        let _dns = net.records(&[&a, &b], extra_records);
        let alice = account(&a, "alice0001").await;
        let bob = account(&b, "bob000001").await;
        Pair { a, b, alice, bob, _dns, _net: net }
    }
}

fn counter(relay: &TestRelay, name: &'static str) -> u64 {
    relay.relay.metrics.get(name, &[])
}

#[tokio::test]
async fn two_relays_exchange_mail_over_mxdeliv() {
    let Pair { a, b, alice, bob, _dns, _net } = Pair::start(Net::new(), "", &[]).await;
    deliver(&a, &alice, &bob).await;
    let received = wait_for_inbox(&b, &bob, 1, &[&a]).await;
    assert!(received[0].contains("-----BEGIN PGP MESSAGE-----"));
    assert!(!received[0].contains("DKIM-Signature"), "the delivery scrub removes the signature");
    assert_eq!(counter(&b, "ferrymail_mxdeliv_received_total"), 1);
    assert_eq!(a.relay.metrics.get("ferrymail_outbound_delivered_total", &[("via", "mxdeliv")]), 1);

    deliver(&b, &bob, &alice).await;
    wait_for_inbox(&a, &alice, 1, &[&b]).await;
    assert_eq!(counter(&a, "ferrymail_mxdeliv_received_total"), 1);
    assert!(a.relay.store.queue().unwrap().is_empty() && b.relay.store.queue().unwrap().is_empty());
}

#[tokio::test]
async fn smtp_when_the_other_relay_has_no_mxdeliv() {
    let Pair { a, b, alice, bob, _dns, _net } = Pair::start(Net::new(), "accept_mxdeliv = false", &[]).await;
    deliver(&a, &alice, &bob).await;
    wait_for_inbox(&b, &bob, 1, &[&a]).await;
    assert_eq!(counter(&b, "ferrymail_mxdeliv_received_total"), 0, "it came over SMTP");
    assert_eq!(a.relay.metrics.get("ferrymail_outbound_delivered_total", &[("via", "smtp")]), 1);
    // Replies still go over /mxdeliv, which A accepts.
    deliver(&b, &bob, &alice).await;
    wait_for_inbox(&a, &alice, 1, &[&b]).await;
    assert_eq!(counter(&a, "ferrymail_mxdeliv_received_total"), 1);
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_mail_is_refused() {
    let Pair { a, b, alice, bob, _dns, _net } = Pair::start(Net::new(), "", &[]).await;
    let offer = async |message: &[u8]| -> String {
        let mut mx = Client::plain(b.smtp).await;
        mx.reply().await;
        mx.cmd("EHLO a.test").await;
        assert_eq!(mx.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
        mx.start_tls().await;
        mx.cmd("EHLO a.test").await;
        send_message(&mut mx, &alice, &[&bob], message).await
    };
    let unsigned = encrypted(&alice);
    assert_eq!(offer(&unsigned).await, "554 5.7.1 No DKIM signature found", "filtermail's text for no signature");
    let signed = a.relay.dkim.sign(&unsigned);
    let mut tampered = signed.clone();
    let at = tampered.len() - 40;
    tampered[at] ^= 1;
    assert_eq!(offer(&tampered).await, "554 5.7.1 No valid DKIM signature found", "and for one that fails");
    // A valid signature, but of another domain than the From address's.
    assert_eq!(offer(&b.relay.dkim.sign(&unsigned)).await, "554 5.7.1 No valid DKIM signature found");
    assert_eq!(offer(&signed).await, "250 2.0.0 Ok: queued", "the same message, signed by its domain");
    assert_eq!(inbox(&b, &bob).len(), 1);

    // At most five signatures are looked at (each costs a DNS lookup and a pass over the
    // body): the good one behind five bad ones is never checked; in front of them it is.
    let bad = (0..5).map(|i| format!("DKIM-Signature: v=1; a=rsa-sha256; d=nowhere{i}.test; s=x; h=from; bh=AAAA; b=AAAA\r\n")).collect::<String>();
    let behind = [bad.as_bytes(), &signed].concat();
    assert_eq!(offer(&behind).await, "554 5.7.1 No valid DKIM signature found");
    let mut in_front = Vec::new();
    let mut rest = &signed[..];
    // The signature field (folded over several lines) first, then the bad ones, then the message.
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..end + 2];
        if !in_front.is_empty() && !line.starts_with(b" ") && !line.starts_with(b"\t") {
            break;
        }
        in_front.extend_from_slice(line);
        rest = &rest[end + 2..];
    }
    assert!(in_front.starts_with(b"DKIM-Signature:"));
    let in_front = [in_front.as_slice(), bad.as_bytes(), rest].concat();
    assert_eq!(offer(&in_front).await, "250 2.0.0 Ok: queued");
}

#[tokio::test]
async fn mail_waits_while_the_other_relay_is_down_and_survives_a_restart() {
    let net = Net::new();
    let a = net.relay("a", 2, "", None).await;
    // B's DNS records are there, B is not (yet).
    let b_domain = net.domain("b");
    let dns = net.records(&[&a], &net.unreachable(&b_domain, 3));
    let alice = account(&a, "alice0001").await;
    let bob = format!("bob000001@{b_domain}");
    deliver(&a, &alice, &bob).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.relay.store.queue().unwrap().first().is_none_or(|e| e.attempts == 0) {
        assert!(Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued = a.relay.store.queue().unwrap();
    assert_eq!(queued.len(), 1);
    assert!(queued[0].last_error.as_deref().unwrap_or("").starts_with("451"), "{:?}", queued[0].last_error);

    // A restarts with the message still queued; then B comes up.
    let a_dir = a.stop().await;
    let a = net.relay("a", 2, "", Some(a_dir)).await;
    assert_eq!(a.relay.store.queue().unwrap().len(), 1, "the queue survived the restart");
    let b = net.relay("b", 3, "", None).await;
    drop(dns);
    let _dns = net.records(&[&a, &b], &[]);
    account(&b, "bob000001").await;
    // The next attempt is due after the first pause.
    a.clock.advance(Duration::from_secs(61));
    wait_for_inbox(&b, &bob, 1, &[&a]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.relay.store.queue().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the entry left the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn undeliverable_mail_bounces_to_the_sender() {
    let net = Net::new();
    let nowhere = net.domain("nowhere");
    let refuses = net.domain("refuses");
    let null_mx = vec![format!("host-record={refuses},{}", net.ip(4)), format!("mx-host={refuses},.,0")];
    let Pair { a, b, alice, bob: _, _dns, _net } = Pair::start(net, "", &null_mx).await;
    let nobody = b.address_here("nobody001");

    deliver(&a, &alice, &nobody).await;
    let bounces = wait_for_inbox(&a, &alice, 1, &[&a]).await;
    assert!(bounces[0].contains("From: Mail Delivery System <MAILER-DAEMON@"), "{}", bounces[0]);
    assert!(bounces[0].contains("multipart/report") && bounces[0].contains(&format!("Final-Recipient: rfc822; {nobody}")));
    assert!(bounces[0].contains("5.1.1"), "{}", bounces[0]);

    deliver(&a, &alice, &format!("someone01@{nowhere}")).await;
    let bounces = wait_for_inbox(&a, &alice, 2, &[&a]).await;
    assert!(bounces[1].contains("5.1.2") && bounces[1].contains("domain does not exist"), "{}", bounces[1]);

    deliver(&a, &alice, &format!("someone01@{refuses}")).await;
    let bounces = wait_for_inbox(&a, &alice, 3, &[&a]).await;
    assert!(bounces[2].contains("556 5.1.10") && bounces[2].contains("null MX"), "{}", bounces[2]);
    assert!(a.relay.store.queue().unwrap().is_empty());
}

#[tokio::test]
async fn mail_hosts_at_private_addresses_are_not_delivered_to() {
    // DNS is the sender's to choose: an MX at loopback (as all test relays are) must not make
    // the relay connect into its own network, unless the operator allows it.
    let net = Net::new();
    let a = net.relay("a", 2, "allow_private_destinations = false", None).await;
    let b = net.relay("b", 3, "", None).await;
    let _dns = net.records(&[&a, &b], &[]);
    let alice = account(&a, "alice0001").await;
    let bob = account(&b, "bob000001").await;
    deliver(&a, &alice, &bob).await;
    let bounces = wait_for_inbox(&a, &alice, 1, &[&a]).await;
    assert!(bounces[0].contains("5.4.4") && bounces[0].contains("loopback, private or reserved addresses"), "{}", bounces[0]);
    assert!(inbox(&b, &bob).is_empty() && a.relay.store.queue().unwrap().is_empty());
    assert_eq!(counter(&b, "ferrymail_mxdeliv_received_total"), 0);
}

#[tokio::test]
async fn after_two_days_mail_is_given_up() {
    let net = Net::new();
    let a = net.relay("a", 2, "", None).await;
    let b_domain = net.domain("b");
    let _dns = net.records(&[&a], &net.unreachable(&b_domain, 3));
    let alice = account(&a, "alice0001").await;
    deliver(&a, &alice, &format!("bob000001@{b_domain}")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.relay.store.queue().unwrap().first().is_none_or(|e| e.attempts == 0) {
        assert!(Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.clock.advance(Duration::from_secs(2 * 86_400 + 60));
    let bounces = wait_for_inbox(&a, &alice, 1, &[&a]).await;
    assert!(bounces[0].contains("gave up after 2 days"), "{}", bounces[0]);
    assert!(a.relay.store.queue().unwrap().is_empty());
}

#[tokio::test]
async fn a_full_queue_for_one_destination_says_try_later() {
    let net = Net::new();
    let a = net.relay("a", 2, "max_queue_per_destination = 2", None).await;
    let b_domain = net.domain("b");
    let c_domain = net.domain("c");
    let _dns = net.records(&[&a], &[net.unreachable(&b_domain, 3), net.unreachable(&c_domain, 4)].concat());
    let alice = account(&a, "alice0001").await;
    let mut c = submit_session(&a, &alice).await;
    assert_eq!(send_message(&mut c, &alice, &[&format!("bob000001@{b_domain}"), &format!("bob000002@{b_domain}")], &encrypted(&alice)).await, "250 2.0.0 Ok: queued");
    c.cmd(&format!("MAIL FROM:<{alice}>")).await;
    assert_eq!(c.cmd(&format!("RCPT TO:<bob000003@{b_domain}>")).await, format!("421 4.3.2 Too much mail queued for {b_domain}, try again later"));
    assert_eq!(c.line().await, None, "421 closes the session");
    // Other destinations are not held up.
    let mut c = submit_session(&a, &alice).await;
    c.cmd(&format!("MAIL FROM:<{alice}>")).await;
    assert_eq!(c.cmd(&format!("RCPT TO:<carol0001@{c_domain}>")).await, "250 2.1.5 Ok");
    assert_eq!(a.relay.store.queue().unwrap().len(), 1, "nothing of the refused recipient was queued");
}

/// One HTTP/1.1 request to a relay's HTTPS port: the status and the body.
async fn http(relay: &TestRelay, method: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (method, path) = method.split_once(' ').unwrap_or((method, "/mxdeliv"));
    let mut c = Client::tls(relay.https).await;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n", relay.domain, body.len());
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    c.write(format!("{head}\r\n").as_bytes()).await;
    c.write(body).await;
    let response = c.rest().await;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn mxdeliv_answers_with_http_statuses() {
    let Pair { a, b, alice, bob, _dns, _net } = Pair::start(Net::new(), "max_message_size = \"64K\"\nmax_mailbox_size = 500", &[]).await;
    let envelope = [("X-Mail-From", alice.as_str()), ("X-Mail-To", bob.as_str())];
    let signed = a.relay.dkim.sign(&encrypted(&alice));

    assert_eq!(http(&b, "POST", &envelope, &encrypted(&alice)).await, (400, "554 5.7.1 No DKIM signature found".into()));
    let cleartext = format!("From: <{alice}>\r\nTo: <{bob}>\r\nSubject: hi\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <c@x>\r\n\r\nhello\r\n");
    let (status, body) = http(&b, "POST", &envelope, &a.relay.dkim.sign(cleartext.as_bytes())).await;
    assert_eq!((status, body.starts_with("523 ")), (400, true), "{body}");
    let nobody = b.address_here("nobody001");
    let (status, body) = http(&b, "POST", &[("X-Mail-From", &alice), ("X-Mail-To", &nobody)], &signed).await;
    assert_eq!((status, body.starts_with("550 5.1.1")), (400, true), "{body}");
    assert_eq!(http(&b, "POST", &[("X-Mail-To", &bob)], &signed).await.0, 400, "no envelope sender");
    assert_eq!(http(&b, "GET", &[], b"").await.0, 405);
    let policy = format!("version: STSv1\nmode: enforce\nmx: {}\nmax_age: 2419200", b.domain);
    assert_eq!(http(&b, "GET /.well-known/mta-sts.txt", &[], b"").await, (200, policy));
    let mut huge = signed.clone();
    huge.extend(std::iter::repeat_n(b'A', 70 * 1024));
    assert_eq!(http(&b, "POST", &envelope, &huge).await.0, 413);
    assert!(inbox(&b, &bob).is_empty(), "nothing refused was delivered");

    assert_eq!(http(&b, "POST", &envelope, &signed).await, (200, "OK".into()));
    assert_eq!(inbox(&b, &bob).len(), 1);
    // Now the mailbox is full: a temporary refusal, 503.
    let (status, body) = http(&b, "POST", &envelope, &signed).await;
    assert_eq!((status, body.starts_with("452 4.2.2 Quota exceeded")), (503, true), "{body}");
}

#[tokio::test]
async fn one_refused_recipient_does_not_sink_the_others() {
    let Pair { a, b, alice, bob, _dns, _net } = Pair::start(Net::new(), "", &[]).await;
    let nobody = b.address_here("nobody001");

    let mut c = submit_session(&a, &alice).await;
    assert_eq!(send_message(&mut c, &alice, &[&bob, &nobody], &encrypted(&alice)).await, "250 2.0.0 Ok: queued");
    wait_for_inbox(&b, &bob, 1, &[&a]).await;
    let bounces = wait_for_inbox(&a, &alice, 1, &[&a]).await;
    assert!(bounces[0].contains(&format!("Final-Recipient: rfc822; {nobody}")) && !bounces[0].contains(&format!("rfc822; {bob}")), "{}", bounces[0]);
}

/// A relay on a bare IP address (`mail_domain = "127.0.N.3"`, as chatmail.ini writes it) and one
/// on a domain exchange mail both ways: the IP relay needs no DNS (its mail goes to the address
/// itself), its messages are taken for coming from the address they were sent from, and
/// addresses `user@[127.0.N.3]` pass MAIL FROM and RCPT TO on port 25.
#[tokio::test]
async fn a_relay_on_an_ip_address_exchanges_mail_with_one_on_a_domain() {
    let net = Net::new();
    let a = net.relay("a", 2, "", None).await;
    let ip = net.ip(3);
    let extra = format!("dns_resolver = \"127.0.0.1:{}\"", net.dns_port);
    let b = TestRelay::start_with(common::relay::Options { domain: ip.to_string(), ip: Some(ip), extra, dir: None }).await;
    assert_eq!(b.relay.config.mail_domain, format!("[{ip}]"), "a bare IP means its address literal");
    assert_eq!(b.relay.tls.validity().names, [ip.to_string()], "the self-signed certificate names the address");
    // Only A is in DNS.
    let _dns = net.records(&[&a], &[]);
    let alice = account(&a, "alice0001").await;
    let bob = account(&b, "bob000001").await;
    assert_eq!(bob, format!("bob000001@[{ip}]"));

    deliver(&a, &alice, &bob).await;
    wait_for_inbox(&b, &bob, 1, &[&a]).await;
    deliver(&b, &bob, &alice).await;
    wait_for_inbox(&a, &alice, 1, &[&b]).await;
    assert_eq!(a.relay.metrics.get("ferrymail_outbound_delivered_total", &[("via", "mxdeliv")]), 1);
    assert_eq!(b.relay.metrics.get("ferrymail_outbound_delivered_total", &[("via", "mxdeliv")]), 1);

    // Over SMTP on port 25 too, in both directions: the literal in the envelope is parsed.
    let mut mx = Client::plain(a.smtp).await;
    mx.reply().await;
    mx.cmd(&format!("EHLO [{ip}]")).await;
    assert_eq!(mx.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    mx.start_tls().await;
    mx.cmd(&format!("EHLO [{ip}]")).await;
    assert_eq!(mx.cmd(&format!("MAIL FROM:<{bob}>")).await, "250 2.1.0 Ok");
    assert_eq!(mx.cmd(&format!("RCPT TO:<{alice}>")).await, "250 2.1.5 Ok");
    assert_eq!(mx.cmd("RSET").await.split(' ').next(), Some("250"));
    assert_eq!(mx.cmd("MAIL FROM:<bob000001@[300.1.2.3]>").await, "501 5.1.7 Bad sender address syntax");
    assert_eq!(mx.cmd("MAIL FROM:<x@x--ip-literal--5b5d.invalid>").await, "501 5.1.7 Bad sender address syntax");
    // A message claiming the IP relay's address from elsewhere (this connection comes from
    // 127.0.0.1, not from the relay's address) has nothing that vouches for it.
    assert_eq!(mx.cmd(&format!("MAIL FROM:<{bob}>")).await, "250 2.1.0 Ok");
    assert_eq!(mx.cmd(&format!("RCPT TO:<{alice}>")).await, "250 2.1.5 Ok");
    assert!(mx.cmd("DATA").await.starts_with("354"));
    mx.write(&encrypted(&bob)).await;
    assert_eq!(mx.cmd(".").await, "554 5.7.1 No DKIM signature found");
}
