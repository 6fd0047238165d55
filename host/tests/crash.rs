//! Crash safety: the real binary killed with SIGKILL while apps submit mail to local and remote
//! recipients, then started again. Every message answered `250` must arrive — local ones
//! exactly once — and mail queued for a relay that was down must survive and go out.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::Client;
use common::dns::{TestDns, records_from_zone};
use common::mail::{PASSWORD, account, inbox, plain_auth};
use common::net::Net;
use common::relay::TestRelay;
use common::serve::{Serve, listen};

/// Answered `250`, by Message-ID, with the recipients each went to.
type Acknowledged = Arc<Mutex<Vec<(String, Recipients)>>>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Recipients {
    Local,
    Remote,
    Both,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_answered_250_survives_sigkill() {
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (a_domain, a_ip) = (net.domain("a"), net.ip(2));
    let config = format!(
        "mail_domain = \"{a_domain}\"\ndata_dir = \"{}\"\ndns_resolver = \"127.0.0.1:{}\"\n\
         max_user_send_per_minute = 1000000\nmax_load_1m = 1000.0\ndaily_expire = false\nallow_private_destinations = true\n{}",
        dir.path().join("data").display(),
        net.dns_port,
        listen(&a_ip.to_string(), false),
    );
    let b_domain = net.domain("b");
    let relay_a = Serve::start(dir.path(), &config);
    let zone = String::from_utf8(relay_a.run(&["dns"]).stdout).unwrap();
    let mut records = records_from_zone(&zone, a_ip);
    records.extend(net.unreachable(&b_domain, 3));
    let _dns = TestDns::start(net.dns_port, &records);

    let apps = Apps {
        submissions: SocketAddr::from((a_ip, 465)),
        alice: format!("alice0001@{a_domain}"),
        bob: format!("bob000001@{a_domain}"),
        carol: format!("carol0001@{b_domain}"),
    };
    for address in [&apps.alice, &apps.bob] {
        let mut c = login(apps.submissions, address).await.expect("login");
        c.cmd("QUIT").await;
    }

    // Round 1: B, the remote relay, is down; its share waits in A's queue when A is killed.
    let (mut acknowledged, relay_a) = crash_under_load(relay_a, &apps, 0).await;
    check_local(&apps, &acknowledged).await;
    let queued = String::from_utf8(relay_a.run(&["queue", "list"]).stdout).unwrap();
    let b = net.relay("b", 3, "", None).await;
    account(&b, "carol0001").await;
    // Only a message being handed over at the moment of the kill could arrive twice; none was.
    check_remote(&relay_a, &b, &apps, &acknowledged, 0, &queued).await;

    // Round 2: B is up, so A is killed while it delivers to B as well.
    let (more, relay_a) = crash_under_load(relay_a, &apps, 1).await;
    acknowledged.extend(more);
    check_local(&apps, &acknowledged).await;
    let queued = String::from_utf8(relay_a.run(&["queue", "list"]).stdout).unwrap();
    // At most one per delivery to B in flight at the kill (max_outbound_per_destination).
    check_remote(&relay_a, &b, &apps, &acknowledged, 4, &queued).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while String::from_utf8(relay_a.run(&["queue", "list"]).stdout).unwrap().lines().last() != Some("0 messages queued") {
        assert!(Instant::now() < deadline, "A's queue did not empty");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Apps {
    submissions: SocketAddr,
    /// The sender, on A.
    alice: String,
    /// The local recipient, on A.
    bob: String,
    /// The remote recipient, on B.
    carol: String,
}

/// Four apps submit as fast as they can; A is killed once 150 messages were accepted in this
/// round, then started again. Returns the messages answered `250` and the restarted relay.
async fn crash_under_load(mut relay: Serve, apps: &Apps, round: usize) -> (Vec<(String, Recipients)>, Serve) {
    let acknowledged: Acknowledged = Arc::default();
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (addr, acknowledged) = (apps.submissions, acknowledged.clone());
            let (alice, bob, carol) = (apps.alice.clone(), apps.bob.clone(), apps.carol.clone());
            let name = format!("{round}-{sender}");
            tokio::spawn(async move { submit_until_refused(addr, &name, &alice, &bob, &carol, &acknowledged).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().unwrap().len() < 150 {
        assert!(Instant::now() < deadline, "only {} messages accepted", acknowledged.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill();
    let mut attempted = 0;
    for sender in senders {
        attempted += sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("round {round}: {} of {attempted} messages answered 250 before SIGKILL", acknowledged.len());
    (acknowledged, relay.restart())
}

/// Each acknowledged message for the local recipient is in bob's INBOX exactly once.
async fn check_local(apps: &Apps, acknowledged: &[(String, Recipients)]) {
    let local = message_ids(apps.submissions.ip(), &apps.bob).await;
    let counts = tally(&local);
    for (id, recipients) in acknowledged {
        if *recipients != Recipients::Remote {
            assert_eq!(counts.get(id.as_str()), Some(&1), "{id} in bob's INBOX");
        }
    }
    assert!(counts.values().all(|&n| n == 1), "no local message twice");
}

/// Wait until every acknowledged message for the remote recipient has reached B, at most
/// `twice` of them twice.
async fn check_remote(relay_a: &Serve, b: &TestRelay, apps: &Apps, acknowledged: &[(String, Recipients)], twice: usize, queued: &str) {
    let want: Vec<&str> = acknowledged.iter().filter(|(_, r)| *r != Recipients::Local).map(|(id, _)| id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let arrived: Vec<String> = inbox(b, &apps.carol).iter().filter_map(|m| message_id(m)).collect();
        let counts = tally(&arrived);
        let missing = want.iter().filter(|id| !counts.contains_key(**id)).count();
        if missing == 0 {
            let doubled = counts.values().filter(|&&n| n > 1).count();
            eprintln!("{} remote messages arrived, {doubled} of them twice", want.len());
            assert!(doubled <= twice, "{doubled} remote messages arrived twice");
            return;
        }
        assert!(Instant::now() < deadline, "{missing} of {} remote messages missing; A's queue after restart:\n{queued}", want.len());
        relay_a.run(&["queue", "flush"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A submission session on 465 logged in as `user`, or None once the relay is gone.
async fn login(addr: SocketAddr, user: &str) -> Option<Client> {
    let mut c = Client::tls_with(addr, common::client::tls_config(&[&rustls::version::TLS13], &[])).await.ok()?;
    c.line().await?;
    c.send("EHLO client.test").await;
    while c.line().await?.starts_with("250-") {}
    c.send(&format!("AUTH PLAIN {}", plain_auth(user, PASSWORD))).await;
    c.line().await?.starts_with("235").then_some(c)
}

/// Submit encrypted messages until the relay stops answering; returns how many were tried.
async fn submit_until_refused(addr: SocketAddr, sender: &str, from: &str, local: &str, remote: &str, acknowledged: &Acknowledged) -> usize {
    let template = common::mail::encrypted(from);
    let template = String::from_utf8(template).unwrap();
    let Some(mut c) = login(addr, from).await else { return 0 };
    for n in 0.. {
        let id = format!("<crash-{sender}-{n}@test>");
        let recipients = [Recipients::Local, Recipients::Remote, Recipients::Both][n % 3];
        let to = match recipients {
            Recipients::Local => vec![local],
            Recipients::Remote => vec![remote],
            Recipients::Both => vec![local, remote],
        };
        let message = template.replace("<0123456789@c.test>", &id);
        if transaction(&mut c, from, &to, message.as_bytes()).await.as_deref() != Some("250 2.0.0 Ok: queued") {
            return n + 1;
        }
        acknowledged.lock().unwrap().push((id, recipients));
    }
    unreachable!()
}

/// One SMTP transaction, pipelined as the app does it; the reply to the final dot, or None when
/// the connection broke or a command was refused.
async fn transaction(c: &mut Client, from: &str, to: &[&str], message: &[u8]) -> Option<String> {
    let mut commands = format!("MAIL FROM:<{from}>\r\n");
    for rcpt in to {
        commands.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
    }
    commands.push_str("DATA\r\n");
    c.write(commands.as_bytes()).await;
    for _ in 0..to.len() + 1 {
        c.line().await?.starts_with("250").then_some(())?;
    }
    c.line().await?.starts_with("354").then_some(())?;
    let mut data = message.to_vec();
    data.extend_from_slice(b".\r\n");
    c.write(&data).await;
    c.line().await
}

/// The Message-IDs in `address`'s INBOX, read over IMAP.
async fn message_ids(ip: std::net::IpAddr, address: &str) -> Vec<String> {
    let mut c = Client::tls(SocketAddr::new(ip, 993)).await;
    c.imap_line().await;
    let reply = c.imap("a", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
    assert!(reply.last().unwrap().starts_with("a OK"), "{reply:?}");
    c.imap("b", "SELECT INBOX").await;
    let fetched = c.imap("c", "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])").await;
    assert!(fetched.last().unwrap().starts_with("c OK"), "{fetched:?}");
    fetched.iter().filter_map(|line| message_id(line)).collect()
}

fn message_id(text: &str) -> Option<String> {
    let start = text.find("<crash-")?;
    let end = start + text[start..].find('>')?;
    Some(text[start..=end].to_string())
}

fn tally(ids: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_insert(0) += 1;
    }
    counts
}
