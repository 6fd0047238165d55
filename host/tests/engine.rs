//! The policy engine under stress: the rate limit over time, hostile policies built by the
//! test suite (endless loop, memory bomb, trap, oversized output...), fail modes, and hot swap
//! while calls run.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use ferrymail::config::Config;
use ferrymail::policy::{Direction, Envelope, Policies, Reply, Verdict};

fn envelope(from: &str) -> Envelope {
    Envelope { direction: Direction::Outgoing, mail_from: from.into(), rcpt_to: vec![], authenticated_as: Some(from.into()) }
}

fn text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Accept => "accept".into(),
        Verdict::Reject(r) => format!("reject {r}"),
        Verdict::Defer(r) => format!("defer {r}"),
    }
}

#[tokio::test]
async fn rate_limit_ten_at_once_then_one_per_second() {
    let policies = common::policies(&common::config());
    let mut answers = Vec::new();
    for _ in 0..11 {
        answers.push(text(&policies.mail_from(envelope("alice@c.test")).await));
    }
    assert!(answers[..10].iter().all(|a| a == "accept"), "{answers:?}");
    assert_eq!(answers[10], "defer 450 4.7.1: Too much mail from <alice@c.test>");
    assert_eq!(text(&policies.mail_from(envelope("bob@c.test")).await), "accept", "per sender");

    policies.services().clock.advance(Duration::from_millis(1000));
    assert_eq!(text(&policies.mail_from(envelope("alice@c.test")).await), "accept");
    assert_eq!(text(&policies.mail_from(envelope("alice@c.test")).await), "defer 450 4.7.1: Too much mail from <alice@c.test>");

    // Incoming mail is not rate-limited per sender.
    let incoming = Envelope { direction: Direction::Incoming, authenticated_as: None, ..envelope("alice@c.test") };
    assert_eq!(text(&policies.mail_from(incoming).await), "accept");
}

#[tokio::test]
async fn rate_limit_holds_under_concurrency() {
    let policies = common::policies(&common::config());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let policies = policies.clone();
            tokio::spawn(async move { policies.mail_from(envelope("burst@c.test")).await })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Verdict::Accept) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 10, "compare-and-swap: concurrent sessions share one budget");
}

/// A config whose bundle is the hostile test policy in `mode`, followed by the built-in
/// encryption policy.
fn hostile_config(mode: &str, fail_mode: &str, extra: &str) -> Config {
    let text = format!(
        "mail_domain = \"c.test\"\n\
         [policy_engine]\ndeadline_ms = 200\nmemory_limit = \"16M\"\n\
         [[policy]]\npath = \"{}\"\nfail_mode = \"{fail_mode}\"\n\
         [policy.config]\nmode = \"{mode}\"\n{extra}\n\
         [[policy]]\nbuiltin = \"ratelimit\"\n",
        common::guest("hostile").display()
    );
    Config::parse(&text).unwrap().config
}

fn tempfail() -> String {
    format!("defer {}", Reply { code: 451, enhanced: "4.3.0".into(), text: "Temporary policy failure, please try again later".into() })
}

#[tokio::test]
async fn hostile_policies_get_the_fail_mode_and_the_engine_keeps_serving() {
    let cases = [
        ("loop", "deadline"),
        ("memory", "memory"),
        ("trap", "trap"),
        ("wasi", "trap"),
        ("huge-reply", "malformed"),
        ("bad-code", "malformed"),
    ];
    for (mode, kind) in cases {
        let policies = common::policies(&hostile_config(mode, "tempfail", ""));
        let started = Instant::now();
        let verdict = policies.mail_from(envelope("alice@c.test")).await;
        let took = started.elapsed();
        assert_eq!(text(&verdict), tempfail(), "mode {mode}");
        assert!(took < Duration::from_secs(5), "mode {mode} took {took:?}");
        let failures = policies.services().metrics.get(
            "ferrymail_policy_failures_total",
            &[("policy", "hostile"), ("hook", "mail-from"), ("kind", kind)],
        );
        assert_eq!(failures, 1, "mode {mode}: {}", policies.services().metrics.render());

        // The engine goes on: the same bundle answers the next call too, and the next
        // policy in the chain still runs when the fail mode lets the chain continue.
        assert_eq!(text(&policies.mail_from(envelope("alice@c.test")).await), tempfail());
        let open = common::policies(&hostile_config(mode, "accept", ""));
        assert_eq!(text(&open.mail_from(envelope("alice@c.test")).await), "accept", "mode {mode}, fail open");
    }
}

/// Log lines written while `work` runs on this thread.
async fn logged_by<F: std::future::Future>(work: F) -> (F::Output, String) {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let output = {
        let _guard = tracing::subscriber::set_default(subscriber);
        work.await
    };
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (output, text)
}

#[tokio::test]
async fn a_policy_cannot_flood_the_log_or_fill_the_disk() {
    // The log: 32 lines per call, then one warning; the call itself succeeds.
    let policies = common::policies(&hostile_config("log-flood", "tempfail", ""));
    let (verdict, log) = logged_by(policies.mail_from(envelope("a@c.test"))).await;
    assert_eq!(text(&verdict), "accept");
    assert_eq!(log.matches("flood line").count(), 32, "{log}");
    assert_eq!(log.matches("the rest of this call's are dropped").count(), 1, "{log}");

    // The kv store: 50 entries per policy here; the call that would go beyond fails, and the
    // fail mode answers.
    let mut config = hostile_config("kv-flood", "tempfail", "keys = 30");
    assert_eq!(config.policy_engine.kv_max_entries, 1_000_000, "the default");
    config.policy_engine.kv_max_entries = 50;
    let policies = common::policies(&config);
    assert_eq!(text(&policies.mail_from(envelope("a@c.test")).await), "accept", "30 entries");
    assert_eq!(text(&policies.mail_from(envelope("a@c.test")).await), tempfail(), "60 would not fit");
    let labels = [("policy", "hostile"), ("hook", "mail-from"), ("kind", "trap")];
    assert_eq!(policies.services().metrics.get("ferrymail_policy_failures_total", &labels), 1);
    assert_eq!(text(&policies.mail_from(envelope("b@c.test")).await), tempfail(), "still full");
}

#[tokio::test]
async fn the_deadline_is_the_configured_one() {
    let policies = common::policies(&hostile_config("loop", "tempfail", ""));
    let started = Instant::now();
    policies.mail_from(envelope("alice@c.test")).await;
    // Deadline 200 ms: the loop cannot end sooner, and must end (generously) soon after.
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
}

#[tokio::test]
async fn oversized_header_edits_are_malformed_output() {
    let policies = common::policies(&hostile_config("edit-flood", "reject", ""));
    let message = common::pgp::encrypted_mime("alice@c.test", "x");
    let parsed = std::sync::Arc::new(ferrymail::message::ParsedMessage::parse(message).unwrap());
    let decision = policies.check_message(envelope("alice@c.test"), parsed, vec![]).await;
    assert_eq!(text(&decision.verdict), "reject 554 5.3.0 Policy failure");
    assert!(decision.edits.is_empty(), "nothing of a malformed answer is applied");
}

#[tokio::test]
async fn many_failing_calls_at_once_do_not_exhaust_the_engine() {
    let policies = common::policies(&hostile_config("trap", "tempfail", ""));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let policies = policies.clone();
            tokio::spawn(async move { policies.mail_from(envelope("alice@c.test")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(text(&task.await.unwrap()), tempfail());
    }
}

fn write_config(dir: &Path, policy_file: &Path, marker: &str) -> std::path::PathBuf {
    let path = dir.join("ferrymail.toml");
    let text = format!(
        "mail_domain = \"c.test\"\n\
         [[policy]]\npath = \"{}\"\n[policy.config]\nmode = \"busy\"\nbusy_ms = 20\nmarker = \"{marker}\"\n",
        policy_file.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A bundle of the hostile policy in `busy` mode, loaded from a config file in a fresh folder
/// (so that reloads read that file again). Returns the folder, the policy file and the config.
fn serving_hostile(marker: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, Policies) {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("policy.wasm");
    std::fs::copy(common::guest("hostile"), &wasm).unwrap();
    let config_path = write_config(dir.path(), &wasm, marker);
    let config = Config::load(&config_path).unwrap().config;
    let policies = Policies::load(&config, Some(&config_path), common::services(), Some(common::compile_cache())).unwrap();
    (dir, wasm, config_path, policies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_while_calls_run() {
    let (dir, wasm, _, policies) = serving_hostile("v1");

    // Callers keep calling until they see the last bundle, so every swap happens while
    // calls run, however long a reload takes (compiling is slow in a cold debug build).
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let policies = policies.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(120);
                while Instant::now() < deadline {
                    let answer = text(&policies.mail_from(envelope("alice@c.test")).await);
                    let last = answer.ends_with("v4");
                    seen.push(answer);
                    if last {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    for version in ["v2", "v3", "v4"] {
        tokio::time::sleep(Duration::from_millis(60)).await;
        write_config(dir.path(), &wasm, version);
        policies.reload().await.unwrap();
    }
    let mut answers = std::collections::BTreeSet::new();
    for caller in callers {
        let seen = caller.await.unwrap();
        assert!(seen.first().is_some_and(|a| a.ends_with("v1")) && seen.last().is_some_and(|a| a.ends_with("v4")), "{seen:?}");
        answers.extend(seen);
    }
    for answer in &answers {
        assert!(answer.starts_with("reject 550 5.7.1 v"), "every call was answered by some bundle: {answer}");
    }
    assert_eq!(policies.generation(), 4);
    assert_eq!(text(&policies.mail_from(envelope("alice@c.test")).await), "reject 550 5.7.1 v4");
    let failures = policies.services().metrics.render();
    assert!(!failures.contains("failures"), "no call failed during the swaps: {failures}");
}

#[tokio::test]
async fn a_bundle_that_fails_to_load_is_refused_and_the_old_one_serves() {
    let (dir, _, config_path, policies) = serving_hostile("good");

    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm but not really").unwrap();
    write_config(dir.path(), &broken, "bad");
    let err = policies.reload().await.unwrap_err().to_string();
    assert!(err.contains("previous one keeps serving") && err.contains("broken.wasm"), "{err}");
    assert!(err.contains("not a valid component"), "{err}");

    std::fs::write(&config_path, "mail_domain = \"c.test\"\nmax_user_send_per_minute = \"many\"\n").unwrap();
    let err = policies.reload().await.unwrap_err().to_string();
    assert!(err.contains("`max_user_send_per_minute`"), "{err}");

    // A core module, not a component.
    std::fs::write(&broken, b"\0asm\x01\0\0\0").unwrap();
    write_config(dir.path(), &broken, "bad");
    assert!(policies.reload().await.is_err());

    assert_eq!(policies.generation(), 1);
    assert_eq!(text(&policies.mail_from(envelope("alice@c.test")).await), "reject 550 5.7.1 good");
}

#[tokio::test]
async fn a_changed_policy_file_is_loaded() {
    let (dir, wasm, _, policies) = serving_hostile("watched");
    let watcher = tokio::spawn(ferrymail::serve::watch_policy_files(policies.clone(), Duration::from_millis(50)));
    assert_eq!(policies.summary()[0].name, "hostile");

    // Replace the file (as an operator's deploy would) with another component.
    let staged = dir.path().join("policy.wasm.new");
    std::fs::copy(common::guest("ratelimit"), &staged).unwrap();
    std::fs::rename(&staged, &wasm).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while policies.summary()[0].name != "ratelimit" {
        assert!(Instant::now() < deadline, "the change was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(policies.generation(), 2);
    watcher.abort();
}

#[tokio::test]
async fn components_outside_the_contract_are_refused() {
    let config = |path: &Path| {
        Config::parse(&format!("mail_domain = \"c.test\"\n[[policy]]\npath = \"{}\"\n", path.display())).unwrap().config
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    let err = Policies::load(&config(&missing), None, common::services(), None).err().unwrap().to_string();
    assert!(err.contains("missing.wasm") && err.contains("cannot read"), "{err}");

    let dupes = Config::parse("mail_domain = \"c.test\"\n[[policy]]\nbuiltin = \"privacy\"\n[[policy]]\nbuiltin = \"privacy\"\n").unwrap().config;
    let err = Policies::load(&dupes, None, common::services(), None).err().unwrap().to_string();
    assert!(err.contains("already named `privacy`"), "{err}");

    let unknown = Config::parse("mail_domain = \"c.test\"\n[[policy]]\nbuiltin = \"nope\"\n").unwrap().config;
    let err = Policies::load(&unknown, None, common::services(), None).err().unwrap().to_string();
    assert!(err.contains("no built-in policy `nope`"), "{err}");
}
