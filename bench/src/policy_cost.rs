//! Figure (c): what the default policy chain costs per message, measured the way the
//! foundation benchmark (host/benches/policy_chain.rs) does — one submission's hooks (MAIL
//! FROM, RCPT TO, the message checks) for the 4 KiB encrypted message, on an idle machine,
//! through the relay's own policy API — so that it can be set against the CPU time a whole
//! message costs the relay in figure (a).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrymail::config::Config;
use ferrymail::message::ParsedMessage;
use ferrymail::policy::{Direction, Envelope, MailboxUsage, Policies, Recipient, Services, Verdict};

/// Mean microseconds per message over `iterations` (after a warm-up).
pub fn per_message(iterations: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = Config::parse("mail_domain = \"c.test\"\nmax_user_send_per_minute = 100000000\nmax_user_send_burst_size = 100000000")
        .unwrap()
        .config;
    let services = Services {
        store: ferrymail::store::Store::open_in_memory().unwrap(),
        clock: ferrymail::clock::Clock::default(),
        metrics: Arc::new(ferrymail::metrics::Metrics::default()),
    };
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-cache");
    let policies = Policies::load(&config, None, services, Some(cache)).unwrap();
    // Cloned per call, as SMTP hands each message's own buffer over (a 4 KiB copy: noise here).
    let raw: Vec<u8> = crate::throughput::encrypted_message("alice@c.test");
    let envelope = || Envelope {
        direction: Direction::Outgoing,
        mail_from: "alice@c.test".into(),
        rcpt_to: vec!["bob@c.test".into()],
        authenticated_as: Some("alice@c.test".into()),
    };
    let transaction = || {
        runtime.block_on(async {
            assert_eq!(policies.mail_from(envelope()).await, Verdict::Accept);
            let rcpt = Recipient { address: "bob@c.test".into(), local: Some(MailboxUsage { used_bytes: 0, messages: 0 }) };
            assert_eq!(policies.rcpt_to(envelope(), rcpt).await, Verdict::Accept);
            let message = Arc::new(ParsedMessage::parse(raw.clone()).unwrap());
            assert_eq!(policies.check_message(envelope(), message, vec![]).await.verdict, Verdict::Accept);
        })
    };
    for _ in 0..(iterations / 10).max(3) {
        transaction();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        transaction();
    }
    let total: Duration = started.elapsed();
    total.as_secs_f64() * 1e6 / iterations as f64
}
