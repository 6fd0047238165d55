//! The default chain's cost per message, in Wasm and natively, side by side.
//!
//! For a 4 KiB and a 1 MiB encrypted message it times, per message:
//! - `wasm`: host parse + the bundle's check-message chain (encryption, privacy), each policy
//!   in a fresh sandboxed instance, through the same async API the SMTP session uses;
//! - `native`: host parse + the same two policies' Rust code compiled into this binary;
//! - `wasm, whole transaction`: MAIL FROM + RCPT TO + message hooks, as one submission runs them.
//!
//! Run with `cargo bench -p ferrymail --bench policy_chain` (an optimised build). Without
//! `--bench` (as `cargo test --bench policy_chain` runs it) it does a few iterations only,
//! to check that both sides still agree on every message.

#[path = "../tests/common/pgp.rs"]
mod pgp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrymail::clock::Clock;
use ferrymail::config::Config;
use ferrymail::message::ParsedMessage;
use ferrymail::metrics::Metrics;
use ferrymail::policy::{Direction, Envelope, MailboxUsage, Policies, Recipient, Services, Verdict};
use ferrymail::store::Store;
use ferrymail_policy::{MessageView, Policy};

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let config = Config::parse("mail_domain = \"c.test\"\nmax_user_send_per_minute = 100000000\nmax_user_send_burst_size = 100000000").unwrap().config;
    let services = Services { store: Store::open_in_memory().unwrap(), clock: Clock::default(), metrics: Arc::new(Metrics::default()) };
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-cache");
    let policies = Policies::load(&config, None, services, Some(cache)).unwrap();

    println!("| message | mode | p50 | p99 | mean | native ratio (p50) |");
    println!("|---|---|---|---|---|---|");
    for (label, plaintext_len, iterations) in [("4 KiB", 2_600, 20_000), ("1 MiB", 780_000, 300)] {
        let iterations = if full { iterations } else { 3 };
        let certs = pgp::certs();
        let armored = pgp::armor(&pgp::encrypt_to(&[&certs[1]], &vec![b'x'; plaintext_len]), &[]);
        // Cloned per call, as SMTP hands each message's own buffer over: a copy the relay
        // itself does not make (tens of µs for 1 MiB, some percent of the 1 MiB rows).
        let raw: Vec<u8> = pgp::encrypted_mime("alice@c.test", &armored);
        let size = raw.len();

        let native = measure(iterations, || {
            let message = ParsedMessage::parse(raw.clone()).unwrap();
            let verdict = native_chain(&message);
            assert!(verdict, "native chain accepts");
        });
        let wasm = measure(iterations, || {
            let message = Arc::new(ParsedMessage::parse(raw.clone()).unwrap());
            let decision = runtime.block_on(policies.check_message(envelope(), message, vec![]));
            assert_eq!(decision.verdict, Verdict::Accept);
        });
        let transaction = measure(iterations, || {
            runtime.block_on(async {
                assert_eq!(policies.mail_from(envelope()).await, Verdict::Accept);
                let rcpt = Recipient { address: "bob@c.test".into(), local: Some(MailboxUsage { used_bytes: 0, messages: 0 }) };
                assert_eq!(policies.rcpt_to(envelope(), rcpt).await, Verdict::Accept);
                let message = Arc::new(ParsedMessage::parse(raw.clone()).unwrap());
                assert_eq!(policies.check_message(envelope(), message, vec![]).await.verdict, Verdict::Accept);
            })
        });
        let parse = measure(iterations, || {
            std::hint::black_box(ParsedMessage::parse(raw.clone()).unwrap());
        });
        let name = format!("{label} ({size} bytes)");
        row(&name, "native: parse + rules", &native, &native);
        row(&name, "wasm: parse + check-message chain", &wasm, &native);
        row(&name, "wasm: whole transaction (mail-from, rcpt-to, check-message)", &transaction, &native);
        row(&name, "host parse alone", &parse, &native);
    }
}

fn envelope() -> Envelope {
    Envelope { direction: Direction::Outgoing, mail_from: "alice@c.test".into(), rcpt_to: vec!["bob@c.test".into()], authenticated_as: Some("alice@c.test".into()) }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn measure(iterations: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..(iterations / 10).max(3) {
        f();
    }
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    Stats { p50: times[times.len() / 2], p99: times[times.len() * 99 / 100], mean }
}

fn row(message: &str, mode: &str, stats: &Stats, native: &Stats) {
    let ratio = stats.p50.as_secs_f64() / native.p50.as_secs_f64();
    println!("| {message} | {mode} | {:.1} µs | {:.1} µs | {:.1} µs | {ratio:.1}× |", us(stats.p50), us(stats.p99), us(stats.mean));
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The native side: encryption then privacy, over the same host view.
fn native_chain(message: &ParsedMessage) -> bool {
    let view = NativeView(message);
    let sdk_message = ferrymail_policy::Message::new(&view);
    let envelope = ferrymail_policy::Envelope {
        direction: ferrymail_policy::Direction::Outgoing,
        mail_from: "alice@c.test".into(),
        rcpt_to: vec!["bob@c.test".into()],
        authenticated_as: Some("alice@c.test".into()),
    };
    let verdict = encryption_policy::Encryption::check_message(envelope.clone(), &sdk_message, vec![]);
    let edits = privacy_policy::Privacy::check_message(envelope, &sdk_message, vec![]);
    std::hint::black_box(edits);
    verdict.verdict.is_accept()
}

/// The host's parsed message seen through the SDK's view, as a guest sees it (minus the copying).
struct NativeView<'a>(&'a ParsedMessage);

impl MessageView for NativeView<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn headers(&self) -> Vec<(String, String)> {
        self.0.fields().iter().map(|f| (f.name.clone(), f.value.clone())).collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.0.header(name).map(str::to_string)
    }
    fn addresses(&self, name: &str) -> Vec<String> {
        self.0.addresses(name)
    }
    fn parts(&self) -> Vec<ferrymail_policy::Part> {
        self.0
            .parts()
            .iter()
            .enumerate()
            .map(|(i, p)| ferrymail_policy::Part {
                index: i as u32,
                parent: p.parent,
                content_type: p.content_type.clone(),
                children: p.children.clone(),
                body_size: self.0.body(i as u32).map_or(0, |b| b.len() as u64),
            })
            .collect()
    }
    fn part_header(&self, part: u32, name: &str) -> Option<String> {
        self.0.part_header(part, name).map(str::to_string)
    }
    fn body(&self, part: u32, max_bytes: u64) -> Option<Vec<u8>> {
        self.0.body(part).map(|b| b[..b.len().min(max_bytes as usize)].to_vec())
    }
    fn armor(&self, part: u32) -> Result<ferrymail_policy::Armored, String> {
        self.0.armor(part).map(|a| ferrymail_policy::Armored {
            headers: a.headers.clone(),
            packets: a
                .packets
                .iter()
                .map(|p| ferrymail_policy::Packet { tag: p.tag, legacy_format: p.legacy_format, length: p.length, partial: p.partial })
                .collect(),
            error: a.error.clone(),
        })
    }
}
