//! Figure (a): encrypted messages per second through the whole path an app sees — submitted
//! over TLS with authentication, stored, and announced to the recipient's IDLE session — and the
//! latency of each message from the start of its submission to the `* N EXISTS` line.
//!
//! Each of `pairs` senders submits `messages` messages one after another (MAIL, RCPT and DATA
//! pipelined, as the app does) to its own recipient, whose session idles on INBOX.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::client::Client;
use crate::system::{PASSWORD, Ports, account_address};

pub struct Load {
    pub pairs: usize,
    pub messages: usize,
    /// Accounts `first_account ..` (two per pair) are used.
    pub first_account: usize,
}

pub struct Outcome {
    pub messages_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the start of a submission to its `250`.
    pub submit_p50_ms: f64,
    pub submit_p99_ms: f64,
    pub message_bytes: usize,
}

/// The encrypted 4 KiB message the app would send (an OpenPGP message of 2600 bytes of text,
/// armored inside multipart/encrypted).
pub fn encrypted_message(from: &str) -> Vec<u8> {
    let certs = crate::pgp::certs();
    let armored = crate::pgp::armor(&crate::pgp::encrypt_to(&[&certs[1]], &vec![b'x'; 2600]), &[]);
    crate::pgp::encrypted_mime(from, &armored)
}

pub async fn run(ports: Ports, domain: &str, load: &Load) -> Outcome {
    // Receivers first: every one idles before the first message goes out.
    let mut receivers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(load.pairs);
    // Senders log in first; all start submitting together.
    let go = Arc::new(tokio::sync::Barrier::new(load.pairs + 1));
    for pair in 0..load.pairs {
        let address = account_address(load.first_account + 2 * pair + 1, domain);
        let (ready, messages) = (ready_tx.clone(), load.messages);
        receivers.push(tokio::spawn(async move { receive(ports, &address, messages, ready).await }));
    }
    for _ in 0..load.pairs {
        ready_rx.recv().await.expect("a receiver failed to start idling");
    }
    let mut senders = Vec::new();
    let mut message_bytes = 0;
    for pair in 0..load.pairs {
        let from = account_address(load.first_account + 2 * pair, domain);
        let to = account_address(load.first_account + 2 * pair + 1, domain);
        let message = encrypted_message(&from);
        message_bytes = message.len();
        let (messages, go) = (load.messages, go.clone());
        senders.push(tokio::spawn(async move { send(ports, &from, &to, &message, messages, go).await }));
    }
    go.wait().await;
    let started = Instant::now();
    let (mut latencies, mut submit_latencies) = (Vec::new(), Vec::new());
    let mut last_arrival = started;
    for (sender, receiver) in senders.into_iter().zip(receivers) {
        let sent = sender.await.expect("sender");
        let arrived = tokio::time::timeout(Duration::from_secs(120), receiver)
            .await
            .expect("every message announced within 2 minutes")
            .expect("receiver");
        for (k, (start, accepted)) in sent.iter().enumerate() {
            latencies.push(arrived[k].duration_since(*start).as_secs_f64() * 1000.0);
            submit_latencies.push(accepted.duration_since(*start).as_secs_f64() * 1000.0);
        }
        last_arrival = last_arrival.max(*arrived.last().unwrap());
    }
    latencies.sort_by(f64::total_cmp);
    submit_latencies.sort_by(f64::total_cmp);
    let total = load.pairs * load.messages;
    Outcome {
        messages_per_second: total as f64 / last_arrival.duration_since(started).as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        submit_p50_ms: percentile(&submit_latencies, 0.50),
        submit_p99_ms: percentile(&submit_latencies, 0.99),
        message_bytes,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Log in, select INBOX, idle; the time each of the next `messages` messages was announced.
async fn receive(ports: Ports, address: &str, messages: usize, ready: tokio::sync::mpsc::Sender<()>) -> Vec<Instant> {
    let mut c = login(ports, address).await;
    let selected = c.imap("s", "SELECT INBOX").await;
    let before = selected.iter().find_map(|l| exists(l)).expect("SELECT answers EXISTS");
    c.send("i IDLE").await;
    assert!(c.imap_line().await.starts_with('+'), "IDLE refused");
    ready.send(()).await.unwrap();
    let mut arrived = Vec::with_capacity(messages);
    while arrived.len() < messages {
        let line = c.imap_line().await;
        if let Some(now) = exists(&line) {
            let at = Instant::now();
            while before + arrived.len() < now {
                arrived.push(at);
            }
        }
    }
    c.send("DONE").await;
    c.imap_until("i").await;
    c.imap("q", "LOGOUT").await;
    arrived
}

/// `* N EXISTS` -> N
fn exists(line: &str) -> Option<usize> {
    line.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok()
}

/// A logged-in IMAP session over TLS.
pub async fn login(ports: Ports, address: &str) -> Client {
    let mut c = Client::tls(ports.imaps).await;
    c.imap_line().await;
    let reply = c.imap("l", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
    assert!(reply.last().unwrap().starts_with("l OK"), "login of {address}: {reply:?}");
    c
}

/// An authenticated submission session over TLS.
pub async fn submission(ports: Ports, from: &str) -> Client {
    let mut c = Client::tls(ports.submissions).await;
    c.reply().await;
    c.cmd("EHLO bench.test").await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0{from}\0{PASSWORD}"));
    let reply = c.cmd(&format!("AUTH PLAIN {auth}")).await;
    assert!(reply.starts_with("235"), "AUTH of {from}: {reply}");
    c
}

/// One message on an open submission session; the final reply.
pub async fn submit(c: &mut Client, from: &str, to: &str, message: &[u8]) -> String {
    c.write(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes()).await;
    for expected in ["250", "250", "354"] {
        let reply = c.reply().await.pop().unwrap();
        if !reply.starts_with(expected) {
            return reply;
        }
    }
    c.write(message).await;
    c.cmd(".").await
}

/// Submit `messages` messages; when each submission started and when it was answered `250`.
async fn send(ports: Ports, from: &str, to: &str, message: &[u8], messages: usize, go: Arc<tokio::sync::Barrier>) -> Vec<(Instant, Instant)> {
    let mut c = submission(ports, from).await;
    go.wait().await;
    let mut times = Vec::with_capacity(messages);
    for _ in 0..messages {
        let start = Instant::now();
        let reply = submit(&mut c, from, to, message).await;
        assert!(reply.starts_with("250"), "submission from {from}: {reply}");
        times.push((start, Instant::now()));
    }
    c.cmd("QUIT").await;
    times
}
