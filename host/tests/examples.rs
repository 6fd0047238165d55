//! The example policies (examples/policies/), built to components as an operator would build
//! them and run inside a relay: invite-only sign-up over HTTPS, the new-account send limit
//! over SMTP, partner cleartext and the attachment cap through `policy check`. Their own
//! `cargo test` covers the logic; this covers the component and the relay around it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::http::https;
use common::mail::{PASSWORD, account, submit_session, try_login};
use common::relay::TestRelay;
use common::serve::ferrymail;

/// `examples/policies` built with `cargo build --release --target wasm32-wasip2`, once per run,
/// into a folder of the target directory these tests were built in.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let release = BUILT.get_or_init(|| {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
        let target = common::build_dir("policy-examples");
        // From the examples' folder, for examples/policies/.cargo/config.toml.
        let args = ["build", "--release", "--workspace", "--target", "wasm32-wasip2", "--target-dir", target.to_str().unwrap()];
        common::cargo(&examples, &args);
        target.join("wasm32-wasip2/release")
    });
    release.join(format!("{}_policy.wasm", name.replace('-', "_")))
}

fn policy(name: &str, config: &str) -> String {
    format!("[[policy]]\npath = \"{}\"\nname = \"{name}\"\n[policy.config]\n{config}\n", example(name).display())
}

fn events(relay: &TestRelay, policy: &str, event: &str) -> u64 {
    relay.relay.metrics.get("ferrymail_policy_events_total", &[("policy", policy), ("event", event)])
}

#[tokio::test]
async fn invite_only_hands_out_accounts_for_tokens_only() {
    let bundle = policy("invite-only", "invites = { \"spring-7f3k\" = 1 }") + "[[policy]]\nbuiltin = \"encryption\"\n";
    let relay = TestRelay::start(&bundle).await;
    let reason = |response: common::http::Response| (response.status, response.json()["reason"].as_str().unwrap().to_string());

    let none = https(relay.https, "POST", "/new").await;
    assert_eq!(reason(none), (403, "This relay hands out accounts only with an invitation".into()));
    let wrong = https(relay.https, "POST", "/new?invite=guessed").await;
    assert_eq!(reason(wrong), (403, "This invitation is not valid".into()));

    // A browser opening the invite link is sent on to the app with the token.
    let get = https(relay.https, "GET", "/new?invite=spring-7f3k").await;
    assert_eq!(get.header("location"), Some(format!("dcaccount:https://{}/new?invite=spring-7f3k", relay.domain).as_str()));

    let invited = https(relay.https, "POST", "/new?invite=spring-7f3k").await;
    assert_eq!(invited.status, 200, "{}", invited.body);
    let json = invited.json();
    let (email, password) = (json["email"].as_str().unwrap(), json["password"].as_str().unwrap());
    assert_eq!(try_login(&relay, email, password).await.1, "235 2.7.0 Authentication successful");

    let again = https(relay.https, "POST", "/new?invite=spring-7f3k").await;
    assert_eq!(reason(again), (403, "This invitation has been used up".into()));

    // No account appears on a first login.
    let stranger = relay.address_here("stranger1");
    assert!(try_login(&relay, &stranger, PASSWORD).await.1.starts_with("535 "));
    assert!(relay.relay.store.account(&stranger).unwrap().is_none());

    let counted = ["invite_used", "invite_missing", "invite_unknown", "invite_used_up", "login_refused"].map(|e| events(&relay, "invite-only", e));
    assert_eq!(counted, [1, 1, 1, 1, 1]);
}

#[tokio::test]
async fn new_accounts_send_slower_until_they_come_of_age() {
    let limit = policy("new-account-limit", "new_account_days = 7\nnew_account_sends_per_hour = 6\nnew_account_burst = 2");
    let relay = TestRelay::start(&format!("[[policy]]\nbuiltin = \"accounts\"\n{limit}")).await;
    let alice = account(&relay, "alice0001").await;
    let mut c = submit_session(&relay, &alice).await;
    // The relay answers the MAIL FROM hook's refusal at the first RCPT TO.
    let mut send = async || {
        c.cmd(&format!("MAIL FROM:<{alice}>")).await;
        let reply = c.cmd(&format!("RCPT TO:<{alice}>")).await;
        c.cmd("RSET").await;
        reply
    };
    let ok = "250 2.1.5 Ok";
    assert_eq!(send().await, ok);
    assert_eq!(send().await, ok);
    let expected = format!("450 4.7.1 Too much mail from <{alice}>: new accounts may send 6 messages an hour");
    assert_eq!(send().await, expected);
    relay.clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(send().await, ok);
    assert_eq!(send().await, expected);
    // A week later the account is of age: only the relay-wide limits apply.
    relay.clock.advance(Duration::from_secs(7 * 86_400));
    for _ in 0..10 {
        assert_eq!(send().await, ok);
    }
    assert_eq!(events(&relay, "new-account-limit", "limited"), 2);
}

/// `ferrymail policy check` on one message with the partner and attachment-cap examples in the
/// bundle; the first line of its report.
fn check(dir: &Path, args: &[&str], message: &str) -> String {
    let eml = dir.join("message.eml");
    std::fs::write(&eml, message).unwrap();
    let config = dir.join("ferrymail.toml");
    let mut all = vec!["policy", "check", "--config", config.to_str().unwrap()];
    all.extend(args);
    all.push(eml.to_str().unwrap());
    let output = ferrymail(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.is_empty(), "policy check printed nothing: {}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().next().unwrap().to_string()
}

#[test]
fn partner_cleartext_and_attachment_cap_in_policy_check() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = policy("partner-cleartext", "partner_domains = [\"partner.test\"]")
        + &policy("attachment-cap", "attachment_caps = { \"*\" = \"1K\" }");
    let config = format!("mail_domain = \"c.test\"\ndata_dir = \"{}\"\n{bundle}", dir.path().join("data").display());
    std::fs::write(dir.path().join("ferrymail.toml"), config).unwrap();

    let cleartext = "From: alice@c.test\r\nTo: bob@partner.test\r\nSubject: hi\r\n\r\nhello\r\n";
    let out = |to: &str| check(dir.path(), &["--direction", "outgoing", "--from", "alice@c.test", "--to", to], cleartext);
    assert_eq!(out("bob@partner.test"), "accept");
    assert_eq!(out("carol@else.test"), "reject 523 Encryption Needed: Invalid Unencrypted Mail");

    let large = format!(
        "From: bob@partner.test\r\nTo: alice@c.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n--b--\r\n",
        "x".repeat(2000)
    );
    let incoming = ["--direction", "incoming", "--from", "bob@partner.test", "--to", "alice@c.test", "--dkim-pass", "partner.test"];
    assert_eq!(check(dir.path(), &incoming, &large), "reject 552 5.3.4 Attachment too large: 2000 bytes, mail from partner.test may carry 1024");
    assert_eq!(check(dir.path(), &incoming, &large.replace(&"x".repeat(2000), "small")), "accept");
}
