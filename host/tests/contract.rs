//! Contract versioning: a guest built against contract 1.0.0 (its own frozen copy of the WIT,
//! no SDK) keeps loading and running on this 1.1.0 relay; a guest using what 1.1.0 added gets
//! it; a guest needing a newer minor version than the relay's is refused naming both.

mod common;

use ferrymail::check::{CheckRequest, check, report};
use ferrymail::config::Config;
use ferrymail::policy::{CONTRACT_VERSION, Direction, Policies, Services};

fn bundle_of(guest: &str, services: Services) -> (Policies, Config) {
    let path = common::guest(guest);
    let text = format!("mail_domain = \"c.test\"\n[[policy]]\npath = \"{}\"\n", path.display());
    let config = Config::parse(&text).unwrap().config;
    (Policies::load(&config, None, services, Some(common::compile_cache())).unwrap(), config)
}

async fn first_line(policies: &Policies, config: &Config, from: &str, message: &str) -> String {
    let request = CheckRequest {
        direction: Direction::Outgoing,
        mail_from: from.into(),
        rcpt_to: vec!["bob@c.test".into()],
        dkim_pass: vec![],
        message: message.as_bytes().to_vec(),
    };
    report(&check(policies, config, request).await).lines().next().unwrap().to_string()
}

#[tokio::test]
async fn a_guest_of_contract_1_0_0_keeps_working() {
    assert_eq!(CONTRACT_VERSION, "1.1.0", "this test pins the previous minor version: update it with the contract");
    let services = common::services();
    let (policies, config) = bundle_of("contract_1_0", services.clone());
    let listed = policies.summary();
    assert_eq!(listed[0].name, "contract-1-0");

    let message = "From: alice@c.test\r\nSubject: 1.0.0\r\n\r\nhi\r\n";
    // Its message hook reads the message through the 1.0.0 resource.
    assert_eq!(first_line(&policies, &config, "alice@c.test", message).await, format!("reject 550 5.7.1 {} bytes", message.len()));
    // Its mail-from hook keeps state in the key-value store: the second message waits.
    assert_eq!(first_line(&policies, &config, "alice@c.test", message).await, "defer 451 4.7.1 Slow down");
    let verdicts = |hook, verdict| {
        services.metrics.get("ferrymail_policy_verdicts_total", &[("policy", "contract-1-0"), ("hook", hook), ("verdict", verdict)])
    };
    assert_eq!((verdicts("check-message", "reject"), verdicts("mail-from", "defer")), (1, 1));
}

#[tokio::test]
async fn what_1_1_0_added_reaches_a_guest() {
    let services = common::services();
    let (policies, config) = bundle_of("current", services.clone());
    let today = services.clock.today();
    services.store.create_account("new@c.test", "h", today).unwrap();
    services.store.create_account("old@c.test", "h", today - 5).unwrap();
    let message = "From: x@c.test\r\n\r\nhi\r\n";
    assert_eq!(first_line(&policies, &config, "New@c.test", message).await, format!("defer 451 4.7.1 created on day {today}"));
    assert_eq!(first_line(&policies, &config, "old@c.test", message).await, "accept");
    assert_eq!(first_line(&policies, &config, "who@elsewhere.test", message).await, "accept");
    let events = |event| services.metrics.get("ferrymail_policy_events_total", &[("policy", "current"), ("event", event)]);
    assert_eq!((events("young-sender"), events("no-account")), (1, 1));
    assert!(services.metrics.render().contains("ferrymail_policy_events_total{policy=\"current\",event=\"young-sender\"} 1"));
}

#[test]
fn a_guest_needing_a_newer_minor_version_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    let text = "(component (import \"chatmail:policy/host@1.2.0\" (instance (export \"frobnicate\" (func)))))";
    std::fs::write(&path, wat::parse_str(text).unwrap()).unwrap();
    let config = Config::parse(&format!("mail_domain = \"c.test\"\n[[policy]]\npath = \"{}\"\n", path.display())).unwrap().config;
    let err = Policies::load(&config, None, common::services(), None).err().unwrap().to_string();
    assert!(err.contains("chatmail:policy@1.2.0") && err.contains("chatmail:policy@1.1.0"), "{err}");
    assert!(err.contains("frobnicate"), "says what is missing: {err}");

    // Another major version: refused before linking, naming what this relay loads.
    let text = "(component (import \"chatmail:policy/host@2.0.0\" (instance (export \"now-millis\" (func (result u64))))))";
    std::fs::write(&path, wat::parse_str(text).unwrap()).unwrap();
    let err = Policies::load(&config, None, common::services(), None).err().unwrap().to_string();
    assert!(err.contains("chatmail:policy@2.0.0") && err.contains("loads guests of 1.x"), "{err}");
}
