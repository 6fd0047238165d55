//! The policy sandbox from the outside: a component that imports anything beyond the contract
//! (and the WASI interfaces Rust's std asks for, which trap) is refused when the bundle loads,
//! naming the import; a guest of another contract version is refused naming both versions; and
//! swapping the bundle while apps submit mail drops nothing. Resource exhaustion (endless
//! loops, memory bombs, floods of output) is tests/engine.rs's.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::mail::{account, encrypted, send_message, submit_session};
use common::relay::TestRelay;
use ferrymail::config::Config;
use ferrymail::policy::Policies;

/// Load a bundle of one component, written from the text format.
fn load(dir: &Path, text: &str) -> Result<Policies, String> {
    let path = dir.join("policy.wasm");
    std::fs::write(&path, wat::parse_str(text).unwrap()).unwrap();
    let config = Config::parse(&format!("mail_domain = \"c.test\"\n[[policy]]\npath = \"{}\"\n", path.display())).unwrap().config;
    Policies::load(&config, None, common::services(), None).map_err(|e| e.to_string())
}

#[test]
fn imports_outside_the_contract_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for import in ["example:evil/net@1.0.0", "wasmtime:unsafe/host", "sockets"] {
        let text = format!("(component (import \"{import}\" (instance (export \"connect\" (func)))))");
        let err = load(dir.path(), &text).err().unwrap();
        assert!(err.contains(&format!("imports `{import}`, which is not part of the policy contract")), "{err}");
        assert!(err.contains("policy.wasm"), "the message names the file: {err}");
    }
    let text = "(component (import \"chatmail:policy/host@7.1.0\" (instance (export \"now\" (func (result u64))))))";
    let err = load(dir.path(), text).err().unwrap();
    assert!(err.contains("chatmail:policy@7.1.0") && err.contains(&format!("chatmail:policy@{}", ferrymail::policy::CONTRACT_VERSION)), "{err}");
    // The contract's own interfaces and WASI pass the check (WASI calls trap at run time).
    let text = "(component (import \"wasi:sockets/tcp@0.2.0\" (instance (export \"connect\" (func)))))";
    let err = load(dir.path(), text).err().unwrap_or_default();
    assert!(!err.contains("not part of the policy contract"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_the_bundle_while_apps_submit_drops_nothing() {
    let relay = TestRelay::start("max_user_send_per_minute = 1000000").await;
    let bob = account(&relay, "bob000001").await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for i in 0..4 {
        let (stop, sent, bob) = (stop.clone(), sent.clone(), bob.clone());
        let sender = account(&relay, &format!("alice000{i}")).await;
        let mut c = submit_session(&relay, &sender).await;
        senders.push(tokio::spawn(async move {
            let message = encrypted(&sender);
            while !stop.load(Ordering::Relaxed) {
                let reply = send_message(&mut c, &sender, &[&bob], &message).await;
                assert_eq!(reply, "250 2.0.0 Ok: queued", "a submission failed during a swap");
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..5 {
        let before = sent.load(Ordering::Relaxed);
        relay.relay.policies.reload().await.unwrap();
        // Each swap lands while submissions are in flight.
        while sent.load(Ordering::Relaxed) < before + 5 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(relay.relay.policies.generation(), 6);
    let delivered = common::mail::inbox(&relay, &bob).len();
    assert_eq!(delivered, sent.load(Ordering::Relaxed), "every accepted message was delivered");
    assert!(!relay.relay.metrics.render().contains("ferrymail_policy_failures_total"), "no policy call failed");
}
