//! Mail between servers, measured end to end: messages submitted on one side per second until
//! the last one is stored on the other. Every server is a real process on its own loopback
//! address with the standard ports, found through dnsmasq:
//!
//! - ferrymail -> ferrymail over /mxdeliv (HTTPS);
//! - ferrymail -> ferrymail over SMTP (the receiver has `accept_mxdeliv = false`);
//! - Postfix -> ferrymail over SMTP, the peer: the same receiver, the same encrypted messages
//!   (DKIM-signed beforehand, as an OpenDKIM milter would), relayed by Debian's Postfix.
//!
//! `cargo bench -p ferrymail --bench federation_load -- --messages 2000` (needs root for ports
//! 25 and 443). Without `--bench` (under `cargo test`) it runs a small smoke load.

#[path = "../tests/common/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/common/dns.rs"]
#[allow(dead_code)]
mod dns;
#[path = "../tests/common/pgp.rs"]
#[allow(dead_code)]
mod pgp;
#[path = "../tests/common/postfix.rs"]
#[allow(dead_code)]
mod postfix;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use client::Client;

const PASSWORD: &str = "bench-password";
/// Recipients on the receiving relay; each message goes to one of them.
const RECIPIENTS: usize = 8;
/// Concurrent SMTP sessions submitting.
const SENDERS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let messages = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 2000 } else { 16 });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(messages));
}

async fn run(messages: usize) {
    let n = claim_network();
    let ip = |host| Ipv4Addr::new(127, 0, n.0, host);
    let dns_port = dns::free_port();
    let dir = tempfile::tempdir().unwrap();
    let sender = Relay::configure(dir.path(), "sender", ip(2), dns_port, "");
    let over_https = Relay::configure(dir.path(), "https", ip(3), dns_port, "");
    let over_smtp = Relay::configure(dir.path(), "smtp", ip(4), dns_port, "accept_mxdeliv = false\n");
    let postfix_domain = format!("_postfix{}.test", n.0);
    let keys = tempfile::tempdir().unwrap();
    let signer = ferrymail::dkim::Dkim::load_or_generate(keys.path(), &postfix_domain, "pf", &ferrymail::dns::Dns::new(None).unwrap()).unwrap();
    let mut records: Vec<String> = [&sender, &over_https, &over_smtp].iter().flat_map(|r| r.dns_records()).collect();
    records.extend(dns::mail_domain(&postfix_domain, ip(5), "pf", signer.dns_record()));
    let _dns = dns::TestDns::start(dns_port, &records);
    let (sender, over_https, over_smtp) = (sender.start().await, over_https.start().await, over_smtp.start().await);
    let postfix = postfix::Postfix::start(&postfix_domain, ip(5), &[], &[(&over_smtp.domain, over_smtp.smtp())]);

    let from = format!("sender001@{}", sender.domain);
    login_submission(sender.submissions, &from).await.cmd("QUIT").await;
    for receiver in [&over_https, &over_smtp] {
        for i in 0..RECIPIENTS {
            login_submission(receiver.submissions, &receiver.recipient(i)).await.cmd("QUIT").await;
        }
    }
    let certs = pgp::certs();
    let armored = pgp::armor(&pgp::encrypt_to(&[&certs[1]], &vec![b'x'; 2600]), &[]);

    println!("| path ({messages} encrypted 4 KiB messages, {SENDERS} sessions) | messages/s | seconds | ratio to Postfix |");
    println!("|---|---|---|---|");
    let mut rows = Vec::new();
    for (label, receiver) in [("ferrymail -> ferrymail, /mxdeliv", &over_https), ("ferrymail -> ferrymail, SMTP", &over_smtp)] {
        let message = pgp::encrypted_mime(&from, &armored);
        let started = Instant::now();
        submit(sender.submissions, Some(&from), &from, receiver, messages, &message).await;
        receiver.wait_for(messages).await;
        rows.push((label, started.elapsed()));
        receiver.empty_inboxes().await;
    }
    let carol = format!("carol0001@{postfix_domain}");
    let message = signer.sign(&pgp::encrypted_mime(&carol, &armored));
    let started = Instant::now();
    submit(postfix.smtp, None, &carol, &over_smtp, messages, &message).await;
    over_smtp.wait_for(messages).await;
    let peer = started.elapsed();
    rows.push(("Postfix -> ferrymail, SMTP (peer)", peer));
    for (label, elapsed) in rows {
        let rate = messages as f64 / elapsed.as_secs_f64();
        let ratio = peer.as_secs_f64() / elapsed.as_secs_f64();
        println!("| {label} | {rate:.0} | {:.2} | {ratio:.2}x |", elapsed.as_secs_f64());
    }
    drop(postfix);
    drop(n);
}

/// 127.0.N.0/24 for this run, held like the tests hold theirs.
fn claim_network() -> (u8, std::net::TcpListener) {
    for n in 10..=250 {
        if let Ok(claim) = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, n, 1), 9)) {
            return (n, claim);
        }
    }
    panic!("no free loopback network");
}

async fn login_submission(addr: SocketAddr, address: &str) -> Client {
    let mut c = Client::tls(addr).await;
    c.reply().await;
    c.cmd("EHLO bench").await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0{address}\0{PASSWORD}"));
    let answer = c.cmd(&format!("AUTH PLAIN {auth}")).await;
    assert!(answer.starts_with("235"), "{answer}");
    c
}

/// `count` messages over `SENDERS` sessions, pipelined, to the receiver's recipients in turn.
/// With `login`, over TLS and authenticated (submission); without, plain SMTP (Postfix).
async fn submit(addr: SocketAddr, login: Option<&str>, from: &str, receiver: &Started, count: usize, message: &[u8]) {
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let share = count / SENDERS + usize::from(s < count % SENDERS);
        let (login, from, message) = (login.map(str::to_string), from.to_string(), message.to_vec());
        let recipients: Vec<String> = (0..RECIPIENTS).map(|i| receiver.recipient(i)).collect();
        tasks.push(tokio::spawn(async move {
            let mut c = match &login {
                Some(address) => login_submission(addr, address).await,
                None => {
                    let mut c = Client::plain(addr).await;
                    c.reply().await;
                    c.cmd("EHLO bench").await;
                    c
                }
            };
            for i in 0..share {
                let to = &recipients[(s + i) % RECIPIENTS];
                c.write(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes()).await;
                for expected in ["250", "250", "354"] {
                    let reply = c.reply().await;
                    assert!(reply[0].starts_with(expected), "{reply:?}");
                }
                c.write(message.as_slice()).await;
                let done = c.cmd(".").await;
                assert!(done.starts_with("250"), "{done}");
            }
            c.cmd("QUIT").await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// A ferrymail process with SMTP on `ip`:25 and HTTPS on `ip`:443.
struct Relay {
    domain: String,
    ip: Ipv4Addr,
    config: PathBuf,
    submissions: SocketAddr,
    imaps: SocketAddr,
}

struct Started {
    relay: Relay,
    child: Child,
}

impl std::ops::Deref for Started {
    type Target = Relay;
    fn deref(&self) -> &Relay {
        &self.relay
    }
}

impl Relay {
    fn configure(dir: &Path, name: &str, ip: Ipv4Addr, dns_port: u16, extra: &str) -> Relay {
        let domain = format!("_{name}{}.test", ip.octets()[2]);
        let dir = dir.join(name);
        std::fs::create_dir(&dir).unwrap();
        let port = || std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        let (submissions, imaps) = (SocketAddr::from((ip, port())), SocketAddr::from((ip, port())));
        let config = dir.join("ferrymail.toml");
        std::fs::write(
            &config,
            format!(
                "mail_domain = \"{domain}\"\ndata_dir = \"{}\"\nmax_load_1m = 1000.0\nallow_private_destinations = true\ndns_resolver = \"127.0.0.1:{dns_port}\"\n\
                 max_user_send_per_minute = 100000000\nmax_user_send_burst_size = 100000000\n{extra}\n\
                 [listen]\nsmtp = \"{ip}:25\"\nhttps = \"{ip}:443\"\nsubmission = \"{ip}:0\"\nimap = \"{ip}:0\"\nmetrics = \"{ip}:0\"\nturn = \"{ip}:0\"\nhttp = \"{ip}:0\"\n\
                 submissions = \"{submissions}\"\nimaps = \"{imaps}\"\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        Relay { domain, ip, config, submissions, imaps }
    }

    fn dns_records(&self) -> Vec<String> {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrymail")).args(["dns", "--config"]).arg(&self.config).env("RUST_LOG", "warn").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dns::records_from_zone(&String::from_utf8_lossy(&out.stdout), self.ip)
    }

    async fn start(self) -> Started {
        let child = Command::new(env!("CARGO_BIN_EXE_ferrymail"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(self.imaps).await.is_err() {
            assert!(Instant::now() < deadline, "the relay did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Started { relay: self, child }
    }

    fn recipient(&self, i: usize) -> String {
        format!("rcpt{i:05}@{}", self.domain)
    }
}

impl Started {
    fn smtp(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 25))
    }

    async fn imap(&self, i: usize) -> Client {
        let mut c = Client::tls(self.imaps).await;
        c.imap_line().await;
        let login = c.imap("l", &format!("LOGIN {} {PASSWORD}", self.recipient(i))).await;
        assert!(login.last().unwrap().starts_with("l OK"), "{login:?}");
        c
    }

    /// Until the recipients' INBOXes hold `count` messages together.
    async fn wait_for(&self, count: usize) {
        let mut sessions = Vec::new();
        for i in 0..RECIPIENTS {
            sessions.push(self.imap(i).await);
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let mut total = 0;
            for c in &mut sessions {
                let status = c.imap("s", "STATUS INBOX (MESSAGES)").await;
                total += status[0].trim_end_matches(')').rsplit(' ').next().unwrap().parse::<usize>().unwrap();
            }
            if total >= count {
                return;
            }
            assert!(Instant::now() < deadline, "{total} of {count} messages arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn empty_inboxes(&self) {
        for i in 0..RECIPIENTS {
            let mut c = self.imap(i).await;
            c.imap("s", "SELECT INBOX").await;
            c.imap("d", "STORE 1:* +FLAGS.SILENT (\\Deleted)").await;
            c.imap("e", "EXPUNGE").await;
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
