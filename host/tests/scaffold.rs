//! `ferrymail policy new`: the crate it makes passes its own tests, builds to a component, and
//! that component runs in `policy check`, with nothing edited, as a new author would find it.

mod common;

use common::serve::ferrymail;

#[test]
fn a_new_policy_builds_tests_and_runs_out_of_the_box() {
    // Always the same folder, so that cargo rebuilds little on the next run.
    let root = common::build_dir("policy-new");
    let dir = root.join("spam-guard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&root).unwrap();

    let created = ferrymail(&["policy", "new", "spam-guard", "--path", dir.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("target/wasm32-wasip2/release/spam_guard.wasm"));
    let again = ferrymail(&["policy", "new", "spam-guard", "--path", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists and is not empty"), "never over an author's work");
    let bad = ferrymail(&["policy", "new", "Spam Guard"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a policy name"));

    let target = root.join("target");
    let target_arg = ["--target-dir", target.to_str().unwrap()];
    let tested = common::cargo(&dir, &[&["test"][..], &target_arg].concat());
    assert!(String::from_utf8_lossy(&tested.stdout).contains("test result: ok. 2 passed"));
    common::cargo(&dir, &[&["build", "--target", "wasm32-wasip2", "--release"][..], &target_arg].concat());

    let wasm = target.join("wasm32-wasip2/release/spam_guard.wasm");
    let config = dir.join("test.toml");
    let data = root.join("data");
    let text = format!(
        "mail_domain = \"chat.example.org\"\ndata_dir = \"{}\"\n[[policy]]\npath = \"{}\"\n[policy.config]\nblocked_domains = [\"spam.example\"]\n",
        data.display(),
        wasm.display()
    );
    std::fs::write(&config, text).unwrap();
    let check = |from: &str| {
        let eml = dir.join("message.eml");
        std::fs::write(&eml, format!("From: {from}\r\nSubject: hi\r\n\r\nhello\r\n")).unwrap();
        let domain = from.split_once('@').unwrap().1;
        let args = ["policy", "check", "--config", config.to_str().unwrap(), "--direction", "incoming", "--from", from];
        let args = [&args[..], &["--to", "a@chat.example.org", "--dkim-pass", domain, eml.to_str().unwrap()]].concat();
        let output = ferrymail(&args);
        String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(check("x@spam.example"), "reject 550 5.7.1 Mail from this domain is not accepted here");
    assert_eq!(check("b@friends.example"), "accept");
}
