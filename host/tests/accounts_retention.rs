//! The accounts and retention policies of the default bundle, through the engine (SPEC §1, §7).

mod common;

use ferrymail::config::Config;
use ferrymail::policy::{
    AccountRequest, AccountState, Direction, Envelope, MailboxUsage, NewAccountRequest, NewAccountVerdict, Recipient,
    Resources, StoredMessage, Verdict,
};

fn plenty() -> Resources {
    Resources { load_1m: 0.5, available_memory: 8 << 30, free_disk: 100 << 30 }
}

fn login(address: &str, password_length: u32) -> AccountRequest {
    AccountRequest { address: address.into(), password_length, resources: plenty() }
}

fn code(verdict: &Verdict) -> u16 {
    match verdict {
        Verdict::Accept => 250,
        Verdict::Reject(r) | Verdict::Defer(r) => r.code,
    }
}

#[tokio::test]
async fn first_login_rules() {
    let policies = common::policies(&common::config());
    assert_eq!(policies.create_account(login("abcde1234@c.test", 9)).await, Verdict::Accept);
    assert_eq!(policies.create_account(login("a.b-c_d.9@C.TEST", 30)).await, Verdict::Accept, "domain case-insensitive");
    for refused in [
        login("abcde1234@other.test", 12), // another domain
        login("abcd1234@c.test", 12),      // 8 characters
        login("abcde12345@c.test", 12),    // 10 characters
        login("Abcde1234@c.test", 12),     // upper case
        login("abcd+1234@c.test", 12),     // outside [a-z0-9._-]
        login("abcde1234@c.test", 8),      // password too short
    ] {
        let verdict = policies.create_account(refused.clone()).await;
        assert_eq!(code(&verdict), 535, "{refused:?} -> {verdict:?}");
    }
}

#[tokio::test]
async fn the_kill_switch_and_low_resources_stop_creation() {
    let closed = common::policies(&Config::parse("mail_domain = \"c.test\"\naccept_new_accounts = false").unwrap().config);
    assert_eq!(code(&closed.create_account(login("abcde1234@c.test", 12)).await), 550);
    let refused = closed.new_account(NewAccountRequest { domain: "c.test".into(), invite: None, resources: plenty() }).await;
    assert!(matches!(refused, NewAccountVerdict::Refuse(ref r) if r.code == 550), "{refused:?}");

    let policies = common::policies(&common::config());
    let short = |load_1m: f64, available_memory: u64, free_disk: u64| AccountRequest {
        resources: Resources { load_1m, available_memory, free_disk },
        ..login("abcde1234@c.test", 12)
    };
    for request in [short(5.5, 8 << 30, 100 << 30), short(0.1, 100 << 20, 100 << 30), short(0.1, 8 << 30, 500 << 20)] {
        let verdict = policies.create_account(request.clone()).await;
        assert!(matches!(verdict, Verdict::Defer(ref r) if r.code == 451), "{request:?} -> {verdict:?}");
    }
}

#[tokio::test]
async fn new_account_credentials() {
    let policies = common::policies(&common::config());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let answer = policies.new_account(NewAccountRequest { domain: "c.test".into(), invite: None, resources: plenty() }).await;
        let NewAccountVerdict::Credentials(credentials) = answer else { panic!("{answer:?}") };
        let (local, domain) = credentials.address.split_once('@').unwrap();
        assert_eq!(domain, "c.test");
        assert_eq!(local.len(), 9);
        assert!(local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{local}");
        assert_eq!(credentials.password.len(), 12, "password_min_length + 3");
        // What /new hands out, first login accepts.
        assert_eq!(policies.create_account(login(&credentials.address, 12)).await, Verdict::Accept);
        assert!(seen.insert(credentials.address), "random addresses");
    }
}

#[tokio::test]
async fn full_mailboxes_defer_new_mail() {
    let config = Config::parse("mail_domain = \"c.test\"\nmax_mailbox_size = \"1M\"").unwrap().config;
    let policies = common::policies(&config);
    let envelope = Envelope { direction: Direction::Incoming, mail_from: "x@other.test".into(), rcpt_to: vec![], authenticated_as: None };
    let rcpt = |used_bytes| Recipient { address: "bob@c.test".into(), local: Some(MailboxUsage { used_bytes, messages: 3 }) };
    assert_eq!(policies.rcpt_to(envelope.clone(), rcpt(1024 * 1024 - 1)).await, Verdict::Accept);
    let full = policies.rcpt_to(envelope.clone(), rcpt(1024 * 1024)).await;
    assert!(matches!(full, Verdict::Defer(ref r) if r.code == 452 && r.text.contains("Quota exceeded")), "{full:?}");
    let remote = Recipient { address: "carol@other.test".into(), local: None };
    assert_eq!(policies.rcpt_to(envelope, remote).await, Verdict::Accept);
}

#[tokio::test]
async fn retention_decisions() {
    let config = Config::parse("mail_domain = \"c.test\"\nmax_mailbox_size = 10000").unwrap().config;
    let policies = common::policies(&config);
    let day = 86_400;
    let now = 1_000 * day;
    let message = |id, size, age_days: u64, seen| StoredMessage { id, mailbox: "INBOX".into(), size, received: now - age_days * day, seen };
    let account = |used, last_login_day| AccountState {
        address: "bob@c.test".into(),
        last_login_day,
        used_bytes: used,
        used_bytes_at_start: used,
    };

    let batch = vec![message(1, 100, 21, false), message(2, 300_000, 8, true), message(3, 300_000, 8, false), message(4, 100, 2, false)];
    let decision = policies.retention(now, account(1_000, 999), batch).await;
    assert_eq!((decision.delete_account, decision.delete), (false, vec![1, 2]));

    let decision = policies.retention(now, account(0, 1_000 - 91), vec![]).await;
    assert!(decision.delete_account, "90 days without login");

    // 8000 of 10000 bytes is over 75 %: the oldest go until 70 %; today's message stays.
    let batch = vec![message(10, 600, 5, false), message(11, 600, 4, false), message(12, 600, 3, false), message(13, 6_200, 0, false)];
    let decision = policies.retention(now, account(8_000, 999), batch).await;
    assert_eq!(decision.delete, vec![10, 11]);
}
