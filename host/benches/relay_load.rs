//! The relay under load, as a separate process (the real binary) on loopback:
//!
//! - memory per idle IMAP IDLE session over TLS: resident memory of the relay before and after
//!   opening N sessions (logged in, INBOX selected, idling), with and without COMPRESS=DEFLATE;
//! - messages per second of a submit -> deliver loop: concurrent SMTP submissions (TLS,
//!   authenticated, an encrypted 4 KiB message each) to local recipients, every one answered
//!   `250` only once stored; the recipients' IMAP sessions are checked to have them all.
//!
//! `cargo bench -p ferrymail --bench relay_load -- --sessions 5000 --messages 3000`
//! (`--idle-during-submit` keeps the plain idle sessions open while messages are submitted:
//! every delivery then wakes the recipient's sessions.)
//! - memory for large submissions: N sessions each submitting a message of M MiB at once, the
//!   relay's peak resident memory above its level before, as a ratio to the bytes in flight
//!   (`--large 8 --large-mib 29`).
//!
//! Without `--bench` (under `cargo test`) it runs a small smoke load.

#[path = "../tests/common/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/common/pgp.rs"]
mod pgp;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use client::Client;

const DOMAIN: &str = "_bench.test";
const PASSWORD: &str = "bench-password";
const ACCOUNTS: usize = 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let number = |flag: &str, default: usize| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(default)
    };
    let sessions = number("--sessions", if full { 5000 } else { 20 });
    let messages = number("--messages", if full { 3000 } else { 40 });
    let senders = number("--senders", 8);
    raise_file_limit(sessions * 2 + 1024);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::start(dir.path()).await;
        for i in 0..ACCOUNTS {
            login(relay.imaps, &account(i)).await.imap("q", "LOGOUT").await;
        }

        println!("| measure | value |");
        println!("|---|---|");
        let watching = args.iter().any(|a| a == "--idle-during-submit");
        let mut watchers = Vec::new();
        for compress in [false, true] {
            let before = relay.rss();
            let started = Instant::now();
            let idle = open_idle_sessions(relay.imaps, sessions, compress).await;
            let opened = started.elapsed();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = relay.rss();
            let per_session = after.saturating_sub(before) as f64 / sessions as f64 / 1024.0;
            let label = if compress { "with COMPRESS=DEFLATE" } else { "plain" };
            println!("| idle IMAP sessions over TLS ({label}) | {sessions} open in {:.1} s |", opened.as_secs_f64());
            println!("| relay RSS before / after ({label}) | {:.1} MiB / {:.1} MiB |", mib(before), mib(after));
            println!("| memory per idle session ({label}) | {per_session:.1} KiB |");
            if watching && !compress {
                watchers = idle;
            } else {
                for session in idle {
                    session.abort();
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        let (large, large_mib) = (number("--large", if full { 8 } else { 2 }), number("--large-mib", if full { 29 } else { 2 }));
        let (peak, in_flight) = large_submissions(&relay, large, large_mib).await;
        println!(
            "| {large} submissions of {large_mib} MiB at once: peak RSS above the level before | {:.0} MiB, {:.2}x the {:.0} MiB in flight |",
            mib(peak),
            peak as f64 / in_flight as f64,
            mib(in_flight)
        );

        let (rate, elapsed) = submit_loop(&relay, messages, senders).await;
        let woken = if watching { format!(", {} IDLE sessions woken by the deliveries", watchers.len()) } else { String::new() };
        println!("| submit -> stored, {senders} concurrent senders, {messages} messages{woken} | {rate:.0} messages/s ({:.1} s) |", elapsed.as_secs_f64());
        drop(watchers);
        verify_delivered(relay.imaps, messages + large).await;
        println!("| relay RSS at the end | {:.1} MiB |", mib(relay.rss()));
    });
}

fn account(i: usize) -> String {
    format!("bench{i:04}@{DOMAIN}")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

fn raise_file_limit(wanted: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let hard = current.maximum.unwrap_or(u64::MAX);
    let soft = (wanted as u64).min(hard);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(soft), maximum: current.maximum });
}

struct Relay {
    child: Child,
    imaps: SocketAddr,
    submissions: SocketAddr,
}

impl Relay {
    async fn start(dir: &Path) -> Relay {
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (imaps, submissions) = (port(), port());
        let config = dir.join("ferrymail.toml");
        std::fs::write(
            &config,
            format!(
                "mail_domain = \"{DOMAIN}\"\ndata_dir = \"data\"\nmax_load_1m = 1000.0\nmax_user_send_per_minute = 100000000\n\
                 max_user_send_burst_size = 100000000\n[listen]\nsmtp = \"127.0.0.1:0\"\nsubmission = \"127.0.0.1:0\"\n\
                 submissions = \"127.0.0.1:{submissions}\"\nimap = \"127.0.0.1:0\"\nimaps = \"127.0.0.1:{imaps}\"\nhttps = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nturn = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
                 [policy_engine]\n# Messages of 30 MB, eight at once on two cores: the policies' time is not measured here.\ndeadline_ms = 10000\n"
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferrymail"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let relay = Relay { child, imaps: ([127, 0, 0, 1], imaps).into(), submissions: ([127, 0, 0, 1], submissions).into() };
        let deadline = Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(relay.imaps).await.is_err() {
            assert!(Instant::now() < deadline, "the relay did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        relay
    }

    /// Resident memory of the relay process.
    fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn login(addr: SocketAddr, address: &str) -> Client {
    let mut c = Client::tls(addr).await;
    c.imap_line().await;
    let reply = c.imap("l", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
    assert!(reply.last().unwrap().starts_with("l OK"), "{reply:?}");
    c
}

/// Sessions as the app leaves them: logged in, INBOX selected, idling.
async fn open_idle_sessions(addr: SocketAddr, count: usize, compress: bool) -> Vec<tokio::task::JoinHandle<()>> {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(count.max(1));
    let mut tasks = Vec::with_capacity(count);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    for i in 0..count {
        let (ready, gate) = (ready_tx.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let mut c = login(addr, &account(i % ACCOUNTS)).await;
            if compress {
                // Only the switch is exercised by the client; the relay keeps deflate state.
                assert_eq!(c.imap("z", "COMPRESS DEFLATE").await, ["z OK DEFLATE active"]);
                let mut tls = c.into_tls();
                let mut deflate = flate2::Compress::new(flate2::Compression::default(), false);
                let mut out = Vec::with_capacity(256);
                deflate.compress_vec(b"s SELECT INBOX\r\ni IDLE\r\n", &mut out, flate2::FlushCompress::Sync).unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut tls, &out).await.unwrap();
                let mut response = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut response).await;
                drop(permit);
                let _ = ready.send(()).await;
                std::future::pending::<()>().await;
                drop(tls);
            } else {
                c.imap("s", "SELECT INBOX").await;
                c.send("i IDLE").await;
                assert_eq!(c.imap_line().await, "+ idling");
                drop(permit);
                let _ = ready.send(()).await;
                std::future::pending::<()>().await;
                drop(c);
            }
        }));
    }
    for _ in 0..count {
        ready_rx.recv().await.unwrap();
    }
    tasks
}

/// `count` messages from `senders` concurrent SMTP sessions; returns messages/s.
async fn submit_loop(relay: &Relay, count: usize, senders: usize) -> (f64, Duration) {
    let certs = pgp::certs();
    let armored = pgp::armor(&pgp::encrypt_to(&[&certs[1]], &vec![b'x'; 2600]), &[]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (addr, armored) = (relay.submissions, armored.clone());
        let share = count / senders + usize::from(s < count % senders);
        tasks.push(tokio::spawn(async move {
            let from = account(s % ACCOUNTS);
            let to = account(ACCOUNTS - 1 - s % ACCOUNTS);
            let message = pgp::encrypted_mime(&from, &armored);
            let mut c = Client::tls(addr).await;
            c.reply().await;
            c.cmd("EHLO bench").await;
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0{from}\0{PASSWORD}"));
            assert!(c.cmd(&format!("AUTH PLAIN {auth}")).await.starts_with("235"));
            for _ in 0..share {
                // Pipelined, as the app sends them.
                c.write(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes()).await;
                assert!(c.reply().await[0].starts_with("250"));
                assert!(c.reply().await[0].starts_with("250"));
                assert!(c.reply().await[0].starts_with("354"));
                c.write(&message).await;
                let done = c.cmd(".").await;
                assert!(done.starts_with("250"), "{done}");
            }
            c.cmd("QUIT").await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    (count as f64 / elapsed.as_secs_f64(), elapsed)
}

/// `count` sessions each submit one message of `size_mib` MiB at the same moment; returns the
/// peak of the relay's RSS above its level before, and the bytes submitted.
async fn large_submissions(relay: &Relay, count: usize, size_mib: usize) -> (u64, u64) {
    let certs = pgp::certs();
    // Armor makes 4 bytes of 3: a payload of three quarters gives a message of about the size.
    let payload = ((size_mib << 20) * 3 / 4).saturating_sub(64 << 10);
    let armored = pgp::armor(&pgp::encrypt_to(&[&certs[1]], &vec![b'x'; payload]), &[]);
    let message = std::sync::Arc::new(pgp::encrypted_mime(&account(0), &armored));
    let mut sessions = Vec::new();
    for _ in 0..count {
        let mut c = Client::tls(relay.submissions).await;
        c.reply().await;
        c.cmd("EHLO bench").await;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{PASSWORD}", account(0)));
        assert!(c.cmd(&format!("AUTH PLAIN {auth}")).await.starts_with("235"));
        assert!(c.cmd(&format!("MAIL FROM:<{}>", account(0))).await.starts_with("250"));
        assert!(c.cmd(&format!("RCPT TO:<{}>", account(1))).await.starts_with("250"));
        assert!(c.cmd("DATA").await.starts_with("354"));
        sessions.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.rss();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (pid, sampling) = (relay.child.id(), sampling.clone());
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_of(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut c| {
            let message = message.clone();
            tokio::spawn(async move {
                c.write(&message).await;
                let done = c.cmd(".").await;
                assert!(done.starts_with("250"), "{done}");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    (peak.saturating_sub(before), (message.len() * count) as u64)
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// Every submitted message is in some INBOX.
async fn verify_delivered(addr: SocketAddr, count: usize) {
    let mut total = 0;
    for i in 0..ACCOUNTS {
        let mut c = login(addr, &account(i)).await;
        let status = c.imap("s", "STATUS INBOX (MESSAGES)").await;
        let n: usize = status[0].trim_end_matches(')').rsplit(' ').next().unwrap().parse().unwrap();
        total += n;
    }
    assert_eq!(total, count, "every 250 was delivered");
}
