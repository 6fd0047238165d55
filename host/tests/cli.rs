//! The `ferrymail` binary as operators and policy authors use it: `policy check`, `dns`, and
//! a running `serve` reloaded by `policy reload`, by SIGHUP, and refusing a broken bundle.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferrymail");

fn ferrymail(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn policy_check_prints_the_verdict_and_sets_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(dir.path(), "plain.eml", b"From: alice@c.test\r\nSubject: hi\r\n\r\nhello\r\n");
    let out = ferrymail(&["policy", "check", "--direction", "outgoing", "--from", "alice@c.test", "--to", "bob@c.test", plain.to_str().unwrap()]);
    assert_eq!(stdout(&out).lines().next(), Some("reject 523 Encryption Needed: Invalid Unencrypted Mail"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));

    let certs = common::pgp::certs();
    let armored = common::pgp::armor(&common::pgp::encrypt_to(&[&certs[1]], b"hi"), &[]);
    let mut message = b"Received: from somewhere\r\n".to_vec();
    message.extend(common::pgp::encrypted_mime("alice@c.test", &armored));
    let encrypted = write(dir.path(), "encrypted.eml", &message);
    let out = ferrymail(&["policy", "check", "--direction", "outgoing", "--from", "alice@c.test", "--to", "bob@c.test", "--to", "carol@other.test", encrypted.to_str().unwrap()]);
    let report = stdout(&out);
    assert_eq!(report.lines().next(), Some("accept"), "{report}{}", stderr(&out));
    assert!(report.contains("edit: remove Received\n") && report.contains("edit: set Subject: [...]\n"), "{report}");
    assert!(report.contains("delivery edit: remove DKIM-Signature\n"), "{report}");
    assert_eq!(out.status.code(), Some(0));

    // Incoming with a forged envelope sender: accepted, the sender reset to the null sender.
    let from_carol = write(dir.path(), "carol.eml", &common::pgp::encrypted_mime("carol@other.test", &armored));
    let out = ferrymail(&["policy", "check", "--direction", "incoming", "--from", "x@spoof.test", "--to", "bob@c.test", "--dkim-pass", "other.test", from_carol.to_str().unwrap()]);
    assert_eq!(stdout(&out).lines().next(), Some("accept"), "{}", stderr(&out));
    assert!(stdout(&out).contains("envelope sender: <>"), "{}", stdout(&out));

    // The null sender is `--from ""`.
    let out = ferrymail(&["policy", "check", "--direction", "incoming", "--from", "", "--to", "bob@c.test", from_carol.to_str().unwrap()]);
    assert_eq!(stdout(&out).lines().next(), Some("reject 554 5.7.1 No valid DKIM signature found"));
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "bad.toml", b"mail_domain = \"c.test\"\nmax_user_send_per_minute = \"lots\"\n");
    let out = ferrymail(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad value for `max_user_send_per_minute`"), "{}", stderr(&out));

    let out = ferrymail(&["serve", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert!(stderr(&out).contains("cannot read config file"), "{}", stderr(&out));
}

#[test]
fn dns_prints_the_records_to_publish_and_checks_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dns_port = common::dns::free_port();
    let config = write(
        dir.path(),
        "ferrymail.toml",
        format!("mail_domain = \"_d.test\"\ndata_dir = \"{}\"\ndns_resolver = \"127.0.0.1:{dns_port}\"\n", dir.path().join("data").display()).as_bytes(),
    );
    let config = config.to_str().unwrap();
    let out = ferrymail(&["dns", "--config", config]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let zone = stdout(&out);
    assert!(zone.contains("IN MX    10 _d.test.") && zone.contains("\"v=DMARC1;p=reject;adkim=s;aspf=s\""), "{zone}");
    let key = dir.path().join("data/dkim/opendkim.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the DKIM key was generated, private");
    assert_eq!(stdout(&ferrymail(&["dns", "--config", config])), zone, "the same key next time");

    // Nothing published yet.
    let nothing = common::dns::TestDns::start(dns_port, &[]);
    let out = ferrymail(&["dns", "--config", config, "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("MISSING  MX _d.test.\n         want: 10 _d.test."), "{}", stdout(&out));

    drop(nothing);

    // Everything published, as printed.
    let records = common::dns::records_from_zone(&zone, std::net::Ipv4Addr::new(127, 0, 0, 9));
    let published = common::dns::TestDns::start(dns_port, &records);
    let out = ferrymail(&["dns", "--config", config, "--check"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
    assert_eq!(report.lines().filter(|l| l.starts_with("ok ")).count(), 11, "{report}");
    assert!(report.contains("absent   AAAA _d.test. (fine without IPv6)"), "{report}");
    drop(published);

    // A wrong SPF record and no DMARC record.
    let wrong: Vec<String> = records
        .into_iter()
        .filter(|r| !r.contains("_dmarc"))
        .map(|r| r.replace("v=spf1 a ~all", "v=spf1 -all"))
        .collect();
    let _dns = common::dns::TestDns::start(dns_port, &wrong);
    let out = ferrymail(&["dns", "--config", config, "--check"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("WRONG    TXT _d.test.\n         want: v=spf1 a ~all\n         DNS has: v=spf1 -all"), "{report}");
    assert!(report.contains("MISSING  TXT _dmarc._d.test."), "{report}");
}

struct Server {
    child: Child,
    config: PathBuf,
}

impl Server {
    fn start(dir: &Path, policies: &str) -> Server {
        let config = dir.join("ferrymail.toml");
        let listen = "[listen]\nsmtp = \"127.0.0.1:0\"\nsubmission = \"127.0.0.1:0\"\nsubmissions = \"127.0.0.1:0\"\n\
                      imap = \"127.0.0.1:0\"\nimaps = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n";
        let text = format!("mail_domain = \"_c.test\"\ndata_dir = \"data\"\n{policies}\n{listen}");
        std::fs::write(&config, text).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let server = Server { child, config };
        let socket = dir.join("data/control.sock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "serve did not start: {}", std::fs::read_to_string(dir.join("serve.log")).unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        ferrymail(&all)
    }

    fn generation(&self) -> u64 {
        let out = self.run(&["policy", "list"]);
        let listing = stdout(&out);
        let line = listing.lines().next().unwrap_or_default();
        line.strip_prefix("generation ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{listing}{}", stderr(&out)))
    }

    fn signal(&self, name: &str) {
        assert!(Command::new("kill").args([name, &self.child.id().to_string()]).status().unwrap().success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_running_relay_reloads_on_request_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), "");

    let listing = stdout(&server.run(&["policy", "list"]));
    assert!(listing.starts_with("generation 1\n"), "{listing}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("data")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "data_dir is private");
    let socket_mode = std::fs::metadata(dir.path().join("data/control.sock")).unwrap().permissions().mode();
    assert_eq!(socket_mode & 0o777, 0o600, "so is the control socket");
    for (i, name) in ["accounts", "ratelimit", "encryption", "privacy", "retention"].iter().enumerate() {
        assert!(listing.contains(&format!("{}. {name}  builtin:{name}", i + 1)), "{listing}");
    }
    assert!(listing.contains("hooks: check-message"), "{listing}");

    let out = server.run(&["policy", "reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("generation 2"), "{}", stdout(&out));

    server.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.generation() != 3 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A broken bundle is refused with a clear message; the old one keeps serving.
    let text = std::fs::read_to_string(&server.config).unwrap().replace("[listen]", "[[policy]]\npath = \"nowhere.wasm\"\n[listen]");
    std::fs::write(&server.config, text).unwrap();
    let out = server.run(&["policy", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bundle refused") && stderr(&out).contains("nowhere.wasm"), "{}", stderr(&out));
    assert_eq!(server.generation(), 3);

    // A second relay on the same data_dir is refused.
    let second = Command::new(BIN).args(["serve", "--config", server.config.to_str().unwrap()]).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(stderr(&second).contains("database"), "{}", stderr(&second));

    server.signal("-TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!dir.path().join("data/control.sock").exists());
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("policy bundle refused"), "{log}");
}
