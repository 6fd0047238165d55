//! The `ferrymail` binary as operators and policy authors use it: `policy check`, `dns`, and
//! a running `serve` reloaded by `policy reload`, by SIGHUP, and refusing a broken bundle.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::serve::{BIN, Serve, ferrymail, listen};

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
    assert_eq!(stdout(&out).lines().next(), Some("reject 554 5.7.1 No DKIM signature found"));
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

/// A relay for `_c.test` on loopback ports the OS picks, with `policies` in its config.
fn serve(dir: &Path, policies: &str) -> Serve {
    let data_dir = dir.join("data");
    Serve::start(dir, &format!("mail_domain = \"_c.test\"\ndata_dir = \"{}\"\n{policies}\n{}", data_dir.display(), listen("127.0.0.1", true)))
}

fn generation(server: &Serve) -> u64 {
    let out = server.run(&["policy", "list"]);
    let listing = stdout(&out);
    let line = listing.lines().next().unwrap_or_default();
    line.strip_prefix("generation ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{listing}{}", stderr(&out)))
}

#[test]
fn a_running_relay_reloads_on_request_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), "");

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
    while generation(&server) != 3 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A broken bundle is refused with a clear message; the old one keeps serving.
    let text = std::fs::read_to_string(&server.config).unwrap().replace("[listen]", "[[policy]]\npath = \"nowhere.wasm\"\n[listen]");
    std::fs::write(&server.config, text).unwrap();
    let out = server.run(&["policy", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bundle refused") && stderr(&out).contains("nowhere.wasm"), "{}", stderr(&out));
    assert_eq!(generation(&server), 3);

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

#[test]
fn init_writes_a_config_key_and_certificate_and_reads_chatmail_ini() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc/ferrymail.toml");
    let data = dir.path().join("data");
    let args = ["init", "_new.test", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let out = ferrymail(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ferrymail dns --config"), "{}", stdout(&out));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("mail_domain = \"_new.test\"") && text.contains("# Rate limit per sender"), "commented: {text}");
    assert!(data.join("dkim/opendkim.key").is_file() && data.join("tls/self-signed.crt").is_file());
    // Never over an existing config.
    let again = ferrymail(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists already"), "{}", stderr(&again));

    // A chatmail operator's settings carry over, whether converted or used as they are.
    let ini = write(
        dir.path(),
        "chatmail.ini",
        format!(
            "[params]\nmail_domain = _chat.test\nmax_user_send_per_minute = 80\nmax_mailbox_size = 100M\n\
             privacy_postal =\n    Jane Doe\n    Main Street 1\nmtail_address = 127.0.0.1\ndata_dir = {}\n",
            dir.path().join("data2").display()
        )
        .as_bytes(),
    );
    let converted = dir.path().join("converted.toml");
    let data2 = dir.path().join("data2");
    let status = ferrymail(&["status", "--config", ini.to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(3), "{}", stderr(&status));
    assert!(stdout(&status).contains("no relay data yet"), "{}", stdout(&status));
    let out = ferrymail(&["init", "--from-ini", ini.to_str().unwrap(), "--config", converted.to_str().unwrap(), "--data-dir", data2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&converted).unwrap();
    for expected in ["mail_domain = \"_chat.test\"", "max_user_send_per_minute = 80", "max_mailbox_size = \"100M\"", "# mtail_address = \"127.0.0.1\""] {
        assert!(text.contains(expected), "{expected} missing in {text}");
    }
    let loaded = ferrymail::config::Config::load(&converted).unwrap().config;
    assert_eq!(loaded.privacy_postal, "Jane Doe\nMain Street 1");
    let status = ferrymail(&["report", "--config", ini.to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(1));
    assert!(stderr(&status).contains("holds no relay data"), "{}", stderr(&status));
}

#[test]
fn operator_commands_work_with_and_without_a_running_relay() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let queued = {
        let store = ferrymail::store::Store::open(&dir.path().join("data/db")).unwrap();
        let today = (now / day) as u32;
        store.create_account("alice0001@_c.test", "$argon2id$x", today).unwrap();
        store.create_account("bob000001@_c.test", "$argon2id$x", today - 3).unwrap();
        store.deliver(&vec![b'x'; 2000], &["bob000001@_c.test".to_string()], now / 1000).unwrap();
        // Due tomorrow, so that the relay leaves them alone until told.
        let to = ["someone@nowhere.invalid".to_string()];
        [store.enqueue(b"one", "alice0001@_c.test", &to, now + day).unwrap(), store.enqueue(b"two", "", &to, now + day).unwrap()]
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = write(dir.path(), "ferrymail.toml", b"mail_domain = \"_c.test\"\ndata_dir = \"data\"\n");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", config.to_str().unwrap()]);
        ferrymail(&all)
    };

    // No relay runs: the CLI opens the data itself.
    let list = run(&["account", "list"]);
    assert!(stderr(&list).is_empty(), "{}", stderr(&list));
    let listing = stdout(&list);
    assert!(listing.contains("alice0001@_c.test") && listing.contains("bob000001@_c.test") && listing.contains("2 accounts"), "{listing}");
    let show = stdout(&run(&["account", "show", "bob000001@_c.test"]));
    assert!(show.contains("stored: 2000 bytes in 1 messages") && show.contains("INBOX: 1 messages"), "{show}");
    let missing = run(&["account", "show", "nobody@_c.test"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no account nobody@_c.test"), "{}", stderr(&missing));
    let queue = stdout(&run(&["queue", "list"]));
    assert!(queue.contains("2 messages queued") && queue.contains("to someone@nowhere.invalid") && queue.contains("from <>"), "{queue}");
    let report = stdout(&run(&["report"]));
    assert!(report.contains("accounts: 2") && report.contains("stored: 2000 bytes in 1 messages"), "{report}");
    assert!(report.contains("accounts active within 1 day: 1") && report.contains("outbound queue: 2 messages"), "{report}");
    let prometheus = stdout(&run(&["report", "--prometheus"]));
    assert!(prometheus.contains("ferrymail_storage_bytes 2000\n"), "{prometheus}");
    let dry = stdout(&run(&["expire", "--dry-run"]));
    assert!(dry.contains("dry run") && dry.contains("messages deleted: 0"), "{dry}");
    let status = run(&["status"]);
    assert_eq!(status.status.code(), Some(3));
    assert!(stdout(&status).starts_with("not running") && stdout(&status).contains("accounts: 2"), "{}", stdout(&status));

    // The same through a running relay's control socket.
    let server = serve(dir.path(), "");
    let status = server.run(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).starts_with("running since") && stdout(&status).contains("policies: accounts, ratelimit"), "{}", stdout(&status));
    let deleted = server.run(&["queue", "delete", &queued[0].id.to_string()]);
    assert!(stdout(&deleted).contains("deleted queued message"), "{}{}", stdout(&deleted), stderr(&deleted));
    assert!(stdout(&server.run(&["queue", "flush"])).contains("1 messages due now"));
    let deleted = server.run(&["account", "delete", "alice0001@_c.test"]);
    assert!(stdout(&deleted).contains("deleted alice0001@_c.test"), "{}", stderr(&deleted));
    assert!(stdout(&server.run(&["account", "list"])).contains("1 accounts"));
    let expire = server.run(&["expire"]);
    assert!(stdout(&expire).contains("accounts checked: 1"), "{}{}", stdout(&expire), stderr(&expire));
}
