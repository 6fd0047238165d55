//! The HTTPS side (SPEC §1, §9): `/new`, the pages, autoconfig, MTA-STS, robots.txt, metrics,
//! and IMAP and submission on the HTTPS port chosen by ALPN.

mod common;

use common::client::{Client, tls_config};
use common::http::{http, https};
use common::mail::{self, PASSWORD, account, plain_auth};
use common::relay::TestRelay;

const PRIVACY: &str = "privacy_mail = \"privacy@example.org\"\nprivacy_postal = \"Jane Operator\\nMain Street 1\\n12345 Town\"\n\
                       privacy_pdo = \"Dr. Data, pdo@example.org\"\nprivacy_supervisor = \"The State Commissioner\"\n\
                       max_user_send_per_minute = 42\ndelete_mails_after = 17\nmax_mailbox_size = \"300M\"\n";

#[tokio::test]
async fn new_hands_out_working_accounts_and_never_an_existing_one() {
    let relay = TestRelay::start("").await;
    let response = https(relay.https, "POST", "/new").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let json = response.json();
    let (email, password) = (json["email"].as_str().unwrap(), json["password"].as_str().unwrap());
    let (local, domain) = email.split_once('@').unwrap();
    assert_eq!(domain, relay.domain);
    assert!(local.len() == 9 && local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{email}");
    assert_eq!(password.len(), 12);
    // Self-signed relay: the app must be told to accept the certificate.
    let expected = format!("dclogin:{email}?p={password}&v=1&ic=3");
    assert_eq!(json["dclogin_url"].as_str(), Some(expected.as_str()));

    // The account exists with that password, and only with it.
    let mut c = Client::tls(relay.submissions).await;
    c.reply().await;
    c.cmd("EHLO x").await;
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", plain_auth(email, "wrong-password"))).await, "535 5.7.8 Error: authentication failed");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", plain_auth(email, password))).await, "235 2.7.0 Authentication successful");

    // Distinct credentials every time.
    let second = https(relay.https, "POST", "/new").await.json();
    assert_ne!(second["email"], json["email"]);

    let get = https(relay.https, "GET", "/new").await;
    assert_eq!(get.status, 301);
    assert_eq!(get.header("location"), Some(format!("dcaccount:https://{}/new", relay.domain).as_str()));
}

#[tokio::test]
async fn new_cannot_take_over_an_existing_address() {
    // A bundle whose new-account hook names an address that exists (a buggy or hostile policy):
    // the host never hands it out, and the account keeps its password.
    let alice = TestRelay::address("alice0001");
    let extra = format!(
        "[[policy]]\npath = \"{}\"\n[policy.config]\nmode = \"takeover\"\naddress = \"{alice}\"\npassword = \"taken-over-123\"\n\
         [[policy]]\nbuiltin = \"accounts\"\n",
        common::guest("hostile").display()
    );
    let relay = TestRelay::start(&extra).await;
    account(&relay, "alice0001").await;
    let response = https(relay.https, "POST", "/new").await;
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.json()["reason"], "No free address found, try again");
    let mut c = Client::tls(relay.submissions).await;
    c.reply().await;
    c.cmd("EHLO x").await;
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", plain_auth(&alice, "taken-over-123"))).await, "535 5.7.8 Error: authentication failed");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", plain_auth(&alice, PASSWORD))).await, "235 2.7.0 Authentication successful");
}

#[tokio::test]
async fn new_is_rate_limited_per_requester() {
    let relay = TestRelay::start("").await;
    // At once: a burst of 5 is served (one more if the requests took half a second to arrive).
    let requests: Vec<_> = (0..8).map(|_| tokio::spawn(https(relay.https, "POST", "/new"))).collect();
    let mut responses = Vec::new();
    for request in requests {
        responses.push(request.await.unwrap());
    }
    let served = responses.iter().filter(|r| r.status == 200).count();
    assert!((5..=6).contains(&served), "{served} served");
    for refused in responses.iter().filter(|r| r.status != 200) {
        assert_eq!(refused.status, 429);
        assert_eq!(refused.json()["reason"], "Too many requests for new accounts, try again in a moment");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(https(relay.https, "POST", "/new").await.status, 200);
}

#[tokio::test]
async fn new_obeys_the_kill_switch() {
    let relay = TestRelay::start("accept_new_accounts = false").await;
    let response = https(relay.https, "POST", "/new").await;
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["reason"], "This relay does not accept new accounts");
    assert_eq!(relay.relay.metrics.get("ferrymail_accounts_refused_total", &[("reason", "kill_switch")]), 1);
}

#[tokio::test]
async fn refused_accounts_say_why_in_the_metrics() {
    // A machine short of disk (as every machine is of a petabyte): no new accounts, and the
    // counter says which resource, for /new and for a first login alike.
    let relay = TestRelay::start("min_free_disk_space = \"1000T\"").await;
    assert_eq!(https(relay.https, "POST", "/new").await.status, 503);
    let (_, reply) = common::mail::try_login(&relay, &TestRelay::address("newcomer1"), common::mail::PASSWORD).await;
    assert_eq!(reply, "454 4.7.0 Temporary authentication failure");
    assert_eq!(relay.relay.metrics.get("ferrymail_accounts_refused_total", &[("reason", "disk")]), 2);
}

#[tokio::test]
async fn pages_show_the_configured_limits_and_contacts() {
    let relay = TestRelay::start(PRIVACY).await;
    let index = https(relay.https, "GET", "/").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(index.body.contains("<svg") && index.body.contains(&format!("DCACCOUNT:https://{}/new", relay.domain)));
    assert!(index.body.contains("name=\"viewport\""));

    let info = https(relay.https, "GET", "/info.html").await.body;
    for expected in ["<strong>42</strong>", "<strong>17</strong>", "300 MiB", "30 MiB", "privacy@example.org"] {
        assert!(info.contains(expected), "info lacks {expected}");
    }
    let privacy = https(relay.https, "GET", "/privacy.html").await.body;
    for expected in ["Jane Operator<br>\nMain Street 1<br>\n12345 Town", "mailto:privacy@example.org", "Dr. Data, pdo@example.org", "The State Commissioner", "<strong>17</strong>"] {
        assert!(privacy.contains(expected), "privacy policy lacks {expected}");
    }
    assert_eq!(https(relay.https, "GET", "/nothing-here").await.status, 404);
}

#[tokio::test]
async fn autoconfig_mta_sts_and_robots() {
    let relay = TestRelay::start("").await;
    let xml = https(relay.https, "GET", "/.well-known/autoconfig/mail/config-v1.1.xml").await;
    assert_eq!(xml.status, 200);
    assert!(xml.body.starts_with("<?xml"));
    // The configured ports (0 here: the test relay lets the OS pick).
    assert_eq!(xml.body.matches("<incomingServer type=\"imap\">").count(), 3);
    assert_eq!(xml.body.matches("<outgoingServer type=\"smtp\">").count(), 3);
    assert_eq!(xml.body.matches("<socketType>STARTTLS</socketType>").count(), 2);
    assert!(xml.body.contains("<username>%EMAILADDRESS%</username>") && xml.body.contains("password-cleartext"));

    let sts = https(relay.https, "GET", "/.well-known/mta-sts.txt").await.body;
    assert!(sts.contains("version: STSv1") && sts.contains("mode: enforce") && sts.contains(&format!("mx: {}", relay.domain)));
    assert!(sts.contains("max_age: 2419200"));
    let robots = https(relay.https, "GET", "/robots.txt").await;
    assert!(robots.status == 200 && robots.body.contains("User-agent: *"));
}

#[tokio::test]
async fn metrics_are_served_on_their_own_address() {
    let relay = TestRelay::start("").await;
    let bob = mail::account(&relay, "bob000001").await;
    let alice = mail::account(&relay, "alice0001").await;
    mail::deliver(&relay, &alice, &bob).await;
    https(relay.https, "POST", "/new").await;
    let metrics = http(relay.metrics, "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    for expected in [
        "ferrymail_delivered_mail_total 1\n",
        "ferrymail_messages_accepted_total{direction=\"outgoing\",encrypted=\"yes\"} 1\n",
        "ferrymail_accounts_created_total{via=\"login\"} 2\n",
        "ferrymail_accounts_created_total{via=\"new\"} 1\n",
        "ferrymail_storage_accounts 3\n",
        "ferrymail_accounts_active{days=\"1\"} 3\n",
        "ferrymail_storage_messages{le=\"+Inf\"} 1\n",
    ] {
        assert!(metrics.body.contains(expected), "metrics lack {expected:?}:\n{}", metrics.body);
    }
    // Not on the public port.
    assert_eq!(https(relay.https, "GET", "/metrics").await.status, 404);
}

#[tokio::test]
async fn imap_and_submission_on_the_https_port_by_alpn() {
    let relay = TestRelay::start("").await;
    let bob = mail::account(&relay, "bob000001").await;

    let mut imap = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"imap"])).await.unwrap();
    assert!(imap.imap_line().await.starts_with("* OK"));
    let login = imap.imap("a1", &format!("LOGIN {bob} {}", mail::PASSWORD)).await;
    assert!(login.last().unwrap().starts_with("a1 OK"), "{login:?}");

    let mut smtp = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"smtp"])).await.unwrap();
    assert!(smtp.reply().await[0].starts_with("220 "));
    smtp.cmd("EHLO client.test").await;
    let alice = relay.address_here("alice0001");
    assert_eq!(smtp.cmd(&format!("AUTH PLAIN {}", plain_auth(&alice, mail::PASSWORD))).await, "235 2.7.0 Authentication successful");
    assert_eq!(mail::send_message(&mut smtp, &alice, &[&bob], &mail::encrypted(&alice)).await, "250 2.0.0 Ok: queued");

    imap.imap("a2", "SELECT INBOX").await;
    let fetched = imap.imap("a3", "FETCH 1 (RFC822.SIZE)").await;
    assert!(fetched[0].starts_with("* 1 FETCH"), "{fetched:?}");

    // Without ALPN it is HTTPS.
    let mut plain = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[])).await.unwrap();
    plain.write(b"GET /robots.txt HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n").await;
    assert!(plain.rest().await.starts_with("HTTP/1.1 200 OK\r\n"));
}

#[tokio::test]
async fn plain_http_redirects_and_answers_the_realtime_relays_probes() {
    let relay = TestRelay::start("").await;
    let home = http(relay.http.unwrap(), "GET", "/info.html?x=1").await;
    assert_eq!(home.status, 301);
    assert_eq!(home.header("location"), Some("https://_c.test/info.html?x=1"));
    let probe = http(relay.http.unwrap(), "GET", "/generate_204").await;
    assert_eq!(probe.status, 204);
    assert_eq!(https(relay.https, "GET", "/ping").await.status, 200);
    // The relay protocol needs its upgrade.
    assert_eq!(https(relay.https, "GET", "/relay").await.status, 400);
    // Plain HTTP carries the relay itself only when the apps are told an http:// URL.
    assert_eq!(http(relay.http.unwrap(), "GET", "/relay").await.status, 301);
    let plain = TestRelay::start("iroh_relay = \"http://127.0.0.1:1\"").await;
    assert_eq!(http(plain.http.unwrap(), "GET", "/relay").await.status, 400);
    assert_eq!(http(plain.http.unwrap(), "GET", "/generate_204").await.status, 204);
    let off = TestRelay::start("serve_iroh_relay = false").await;
    assert_eq!(https(off.https, "GET", "/ping").await.status, 404);
}
