//! A full disk never traps a user: the relay's data_dir on a small tmpfs, filled to the last
//! byte by someone else. New mail is refused as Postfix refuses it (`452 4.3.1 Insufficient
//! system storage`, `/mxdeliv` 503), users can still log in, flag and expunge (what EXPUNGE
//! answers OK for is gone), and once space returns mail flows again by itself.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::client::{Client, tls_config};
use common::mail::{PASSWORD, account, deliver, encrypted, submit_session};
use common::relay::{Options, TestRelay};

/// A tmpfs of `size` mounted on a folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status().unwrap();
        assert!(status.success(), "mounting a tmpfs needs root (scripts/test runs as root)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the filesystem at `path` to the last byte.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![7u8; 1 << 16];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

async fn imap_login(relay: &TestRelay, address: &str) -> Client {
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    let reply = c.imap("l", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
    assert!(reply.last().unwrap().starts_with("l OK"), "{reply:?}");
    c
}

#[tokio::test]
async fn a_full_disk_refuses_mail_but_lets_users_delete_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(dir.path(), "256m");
    let extra = "max_message_size = \"1M\"\nmin_free_disk_space = \"1M\"\nmax_user_send_per_minute = 100000\nmax_user_send_burst_size = 100000".to_string();
    let relay = TestRelay::start_with(Options { extra, dir: Some(dir), ..Options::default() }).await;
    let alice = account(&relay, "alice0001").await;
    let bob = account(&relay, "bob000001").await;
    for _ in 0..3 {
        deliver(&relay, &alice, &bob).await;
    }

    // Someone else fills the disk.
    let filler = relay.dir.path().join("filler");
    fill(&filler);

    let mut s = submit_session(&relay, &alice).await;
    assert_eq!(s.cmd(&format!("MAIL FROM:<{alice}>")).await, "452 4.3.1 Insufficient system storage");
    let mut h = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"http/1.1"])).await.unwrap();
    h.write(format!("POST /mxdeliv HTTP/1.1\r\nHost: relay.test\r\nX-Mail-From: <c@other.test>\r\nX-Mail-To: {bob}\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789").as_bytes()).await;
    let answer = h.rest().await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.ends_with("452 4.3.1 Insufficient system storage"), "{answer}");

    // Bob logs in, flags and expunges: it works, and what was expunged is gone.
    let mut c = imap_login(&relay, &bob).await;
    assert!(c.imap("s", "SELECT INBOX").await.contains(&"* 3 EXISTS".to_string()));
    assert!(c.imap("f", "STORE 1:2 +FLAGS (\\Deleted)").await.last().unwrap().starts_with("f OK"));
    assert_eq!(c.imap("e", "EXPUNGE").await.last().unwrap(), "e OK Expunge completed");
    let mut fresh = imap_login(&relay, &bob).await;
    assert!(fresh.imap("s", "SELECT INBOX").await.contains(&"* 1 EXISTS".to_string()), "expunged for good");
    assert_eq!(c.imap("d", "DELETE Trash").await.last().unwrap(), "d OK Delete completed");
    // APPEND is refused, not failed.
    c.send("a APPEND INBOX {20}").await;
    assert_eq!(c.imap_line().await, "+ Ready for literal data");
    c.write(b"Subject: x\r\n\r\nhello!").await;
    c.send("").await;
    assert_eq!(c.imap_until("a").await.pop().unwrap(), "a NO [OVERQUOTA] Insufficient system storage");

    // Space returns: mail flows again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    loop {
        let mut s = submit_session(&relay, &alice).await;
        if s.cmd(&format!("MAIL FROM:<{alice}>")).await.starts_with("250") {
            assert!(s.cmd(&format!("RCPT TO:<{bob}>")).await.starts_with("250"));
            assert!(s.cmd("DATA").await.starts_with("354"));
            s.write(&encrypted(&alice)).await;
            assert_eq!(s.cmd(".").await, "250 2.0.0 Ok: queued");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "mail did not resume");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut fresh = imap_login(&relay, &bob).await;
    assert!(fresh.imap("s", "SELECT INBOX").await.contains(&"* 2 EXISTS".to_string()));

    // Filled by its own mail this time, 1 MB messages until the relay says no: then Bob
    // deletes everything, and the space those messages took comes back (compaction, blob
    // garbage collection) without anyone's help.
    let big = {
        let mut message = encrypted(&alice);
        let padding = format!("X-Padding: {}\r\n", "p".repeat(900));
        while message.len() < 900_000 {
            message.splice(..0, padding.bytes());
        }
        message
    };
    let mut s = submit_session(&relay, &alice).await;
    let mut stored = 0;
    loop {
        let reply = s.cmd(&format!("MAIL FROM:<{alice}>")).await;
        if reply == "452 4.3.1 Insufficient system storage" {
            break;
        }
        assert!(reply.starts_with("250"), "{reply}");
        assert!(s.cmd(&format!("RCPT TO:<{bob}>")).await.starts_with("250"));
        assert!(s.cmd("DATA").await.starts_with("354"));
        s.write(&big).await;
        let done = s.cmd(".").await;
        if done.starts_with("452") {
            break;
        }
        assert_eq!(done, "250 2.0.0 Ok: queued");
        stored += 1;
        assert!(stored < 400, "the disk never filled");
    }
    assert!(stored > 50, "{stored} messages of 1 MB on 256 MB");
    let mut c = imap_login(&relay, &bob).await;
    c.imap("s", "SELECT INBOX").await;
    assert!(c.imap("f", "STORE 1:* +FLAGS (\\Deleted)").await.last().unwrap().starts_with("f OK"));
    assert_eq!(c.imap("e", "EXPUNGE").await.last().unwrap(), "e OK Expunge completed");
    let started = Instant::now();
    while !s.cmd(&format!("MAIL FROM:<{alice}>")).await.starts_with("250") {
        if started.elapsed() > Duration::from_secs(90) {
            let listing = Command::new("ls").arg("-laS").arg(relay.dir.path().join("data/db")).output().unwrap();
            panic!("the deleted messages' space did not come back:\n{}", String::from_utf8_lossy(&listing.stdout));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("{stored} messages stored until the disk was full; after deleting them, mail was taken again in {:?}", started.elapsed());
    drop(relay);
}
