//! Hostile input over real sockets against the real binary: overlong lines, literal bombs,
//! invalid UTF-8, pipelining floods, slow clients, huge headers, deeply nested MIME,
//! decompression bombs and commands smuggled across STARTTLS. Each gets a clear error or a
//! closed connection; the relay's memory stays bounded and it keeps serving everyone else.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::client::Client;
use common::mail::{PASSWORD, plain_auth};
use common::net::Net;
use common::serve::{Serve, listen};

/// Memory a relay may gain over a whole hostile test: one session may legitimately buffer a
/// message of max_message_size (30 MiB), plus parsing it; the bombs would cost far more if
/// buffered (64 MiB of non-synchronizing literal, 4 GiB announced, 16 MiB inflated from 16 KiB).
const MAX_GROWTH_KIB: u64 = 64 * 1024;

struct Relay {
    serve: Serve,
    ip: Ipv4Addr,
    domain: String,
    baseline_kib: u64,
    _net: Net,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Relay {
        Self::start_with("").await
    }

    /// A relay with `extra` added to its config.
    async fn start_with(extra: &str) -> Relay {
        let net = Net::new();
        let dir = tempfile::tempdir().unwrap();
        let (domain, ip) = (net.domain("h"), net.ip(2));
        let config = format!(
            "mail_domain = \"{domain}\"\ndata_dir = \"{}\"\nmax_load_1m = 1000.0\ndaily_expire = false\n{extra}\n{}",
            dir.path().join("data").display(),
            listen(&ip.to_string(), false)
        );
        let serve = Serve::start(dir.path(), &config);
        let mut relay = Relay { serve, ip, domain, baseline_kib: 0, _net: net, _dir: dir };
        // Warm up what every relay allocates on first use (TLS, a login, the bundle's
        // instances), so that the baseline is a serving relay.
        relay.assert_serving().await;
        relay.baseline_kib = relay.serve.rss_kib();
        relay
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

    async fn imap(&self) -> Client {
        let mut c = Client::tls(self.addr(993)).await;
        c.imap_line().await;
        c
    }

    async fn imap_logged_in(&self, local: &str) -> Client {
        let mut c = self.imap().await;
        let reply = c.imap("l", &format!("LOGIN \"{}\" \"{PASSWORD}\"", self.address(local))).await;
        assert!(reply.last().unwrap().starts_with("l OK"), "{reply:?}");
        c
    }

    async fn smtp_logged_in(&self, local: &str) -> Client {
        let mut c = Client::tls(self.addr(465)).await;
        c.reply().await;
        c.cmd("EHLO client.test").await;
        assert_eq!(c.cmd(&format!("AUTH PLAIN {}", plain_auth(&self.address(local), PASSWORD))).await, "235 2.7.0 Authentication successful");
        c
    }

    /// Someone else still gets served: an IMAP login and a submission session.
    async fn assert_serving(&self) {
        let mut c = self.imap_logged_in("bystander").await;
        assert_eq!(c.imap("n", "NOOP").await.last().unwrap(), "n OK Completed");
        let mut s = self.smtp_logged_in("bystander").await;
        assert!(s.cmd("NOOP").await.starts_with("250"));
    }

    fn assert_memory_bounded(&self) {
        let rss = self.serve.rss_kib();
        assert!(rss < self.baseline_kib + MAX_GROWTH_KIB, "RSS grew from {} to {rss} KiB", self.baseline_kib);
    }
}

/// Write everything, whether or not the relay still listens; true if it all went out.
async fn write_all(c: &mut tokio::net::TcpStream, data: &[u8]) -> bool {
    use tokio::io::AsyncWriteExt;
    c.write_all(data).await.is_ok()
}

#[tokio::test]
async fn overlong_lines_and_literal_bombs() {
    let relay = Relay::start().await;

    // IMAP before login: a line that never ends, a literal bomb, a non-synchronizing one.
    let mut c = relay.imap().await;
    c.try_write(&vec![b'x'; 64 * 1024]).await;
    assert!(c.rest().await.starts_with("* BYE"));
    let mut c = relay.imap().await;
    c.send("a LOGIN {4294967295}").await;
    assert_eq!(c.imap_line().await, "a BAD [TOOBIG] Literal too large");
    assert_eq!(c.imap("b", "NOOP").await.last().unwrap(), "b OK Completed");
    let mut c = relay.imap().await;
    c.send("a LOGIN {4294967295+}").await;
    c.try_write(&vec![b'y'; 1 << 20]).await;
    let rest = c.rest().await;
    assert!(rest.starts_with("* BYE") || rest.is_empty(), "{rest}");

    // After login: APPEND may be large, but not larger than a message may be.
    let mut c = relay.imap_logged_in("bomber001").await;
    c.send("a APPEND INBOX {4294967295}").await;
    assert_eq!(c.imap_line().await, "a BAD [TOOBIG] Literal too large");
    // A non-synchronizing bomb is on its way already: parsing past it would mean buffering
    // it, so the session ends. Send 64 MiB of it anyway.
    c.send("b APPEND INBOX {4294967295+}").await;
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..64 {
        if !c.try_write(&chunk).await {
            break;
        }
    }
    assert!(c.rest().await.starts_with("* BYE Literal too large"));
    relay.assert_memory_bounded();
    // Outside APPEND a literal is a command's worth (64 KiB): refused before it is sent.
    let mut c = relay.imap_logged_in("bomber001").await;
    c.send("s SEARCH TEXT {65536}").await;
    assert_eq!(c.imap_line().await, "s BAD [TOOBIG] Literal too large");
    c.send("t SEARCH TEXT {65537+}").await;
    assert!(c.rest().await.starts_with("* BYE Literal too large"));
    // A command line (not a literal) of a megabyte after login: the session ends, unbuffered.
    let mut c = relay.imap_logged_in("bomber001").await;
    c.try_write(&vec![b'x'; 1 << 20]).await;
    assert!(c.rest().await.starts_with("* BYE Command too long"));
    // One just within a command's worth is answered, and the session goes on.
    let mut c = relay.imap_logged_in("bomber001").await;
    c.write(&vec![b'x'; 60_000]).await;
    c.send("").await;
    assert_eq!(c.imap_line().await, "* BAD Error in IMAP command received by server");
    assert_eq!(c.imap("n", "NOOP").await.last().unwrap(), "n OK Completed");

    // SMTP: an overlong command line, then the session goes on.
    let mut s = relay.smtp_logged_in("bomber001").await;
    let reply = s.cmd(&format!("MAIL FROM:<{}>", "x".repeat(100_000))).await;
    assert!(reply.starts_with("500 5.5.2"), "{reply}");
    assert!(s.cmd("NOOP").await.starts_with("250"));

    relay.assert_memory_bounded();
    relay.assert_serving().await;
}

#[tokio::test]
async fn invalid_utf8_and_pipelining_floods() {
    let relay = Relay::start().await;

    let mut s = relay.smtp_logged_in("flooder01").await;
    // A sender that is not the login is refused at RCPT (as Postfix does).
    s.write(b"MAIL FROM:<\xff\xfe@x.test>\r\n").await;
    let reply = s.reply().await.pop().unwrap();
    if reply.starts_with("250") {
        let reply = s.cmd(&format!("RCPT TO:<{}>", relay.address("bystander"))).await;
        assert!(reply.starts_with("553 5.7.1"), "{reply}");
        s.cmd("RSET").await;
    } else {
        assert!(reply.starts_with('5'), "{reply}");
    }
    s.write(b"\xc3\x28\xa0\xa1 \x00\x01\r\n").await;
    let reply = s.reply().await.pop().unwrap();
    assert!(reply.starts_with("500"), "{reply}");
    assert!(s.cmd("NOOP").await.starts_with("250"));

    let mut c = relay.imap_logged_in("flooder01").await;
    c.write(b"a SELECT \"\xff\xfe\"\r\n").await;
    let reply = c.imap_until("a").await;
    assert!(reply.last().unwrap().starts_with("a NO") || reply.last().unwrap().starts_with("a BAD"), "{reply:?}");
    c.write(b"b \xff\xfe\r\n").await;
    let reply = c.imap_line().await;
    assert!(reply.starts_with("b BAD") || reply.starts_with("* BAD"), "{reply}");

    // 50 000 pipelined commands in one go, replies unread until the end: every one answered,
    // in order, while the relay's memory stays put (it stops reading when we stop reading).
    let flood = "NOOP\r\n".repeat(50_000);
    let mut s = relay.smtp_logged_in("flooder01").await;
    s.write(flood.as_bytes()).await;
    for _ in 0..50_000 {
        let reply = s.line().await.expect("an answer to every NOOP");
        assert!(reply.starts_with("250"), "{reply}");
    }
    let flood = (0..50_000).map(|i| format!("t{i} NOOP\r\n")).collect::<String>();
    c.write(flood.as_bytes()).await;
    for i in 0..50_000 {
        let line = c.imap_line().await;
        assert_eq!(line, format!("t{i} OK Completed"));
    }
    relay.assert_memory_bounded();
    relay.assert_serving().await;
}

#[tokio::test]
async fn slow_clients_do_not_hold_up_others() {
    let relay = Relay::start().await;
    // A hundred clients that each send half a command, then nothing, on every port.
    let mut slow = Vec::new();
    for i in 0..100u16 {
        let port = [25, 587, 143, 465, 993][usize::from(i) % 5];
        let mut tcp = tokio::net::TcpStream::connect(relay.addr(port)).await.unwrap();
        write_all(&mut tcp, b"EH").await;
        slow.push(tcp);
    }
    // Everyone else is served at once.
    tokio::time::timeout(Duration::from_secs(60), relay.assert_serving()).await.expect("served while slow clients wait");
    // A client trickling a command byte by byte is answered when it is complete.
    let mut c = Client::plain(relay.addr(587)).await;
    c.reply().await;
    for byte in b"EHLO slow.test\r\n" {
        c.write(&[*byte]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.reply().await.last().unwrap().starts_with("250 "));
    drop(slow);
    relay.assert_serving().await;
}

#[tokio::test]
async fn huge_headers_and_deeply_nested_mime() {
    let relay = Relay::start().await;
    let alice = relay.address("alice0001");
    let bob = relay.address("bob000001");
    relay.imap_logged_in("bob000001").await;
    let mut s = relay.smtp_logged_in("alice0001").await;
    let mut submit = async |message: Vec<u8>| -> String {
        assert_eq!(s.cmd(&format!("MAIL FROM:<{alice}>")).await, "250 2.1.0 Ok");
        assert!(s.cmd(&format!("RCPT TO:<{bob}>")).await.starts_with("250"));
        assert!(s.cmd("DATA").await.starts_with("354"));
        let mut data = message;
        data.extend_from_slice(b"\r\n.\r\n");
        s.write(&data).await;
        s.reply().await.pop().unwrap()
    };
    let from = format!("From: <{alice}>\r\nTo: <{bob}>\r\n");

    // One header field of 4 MiB (no folding), and 100 000 header fields.
    let long = format!("{from}X-Long: {}\r\n\r\nbody", "a".repeat(4 << 20));
    let reply = submit(long.into_bytes()).await;
    assert!(reply.starts_with("523") || reply.starts_with("500") || reply.starts_with("552"), "{reply}");
    let many = format!("{from}{}\r\nbody", "X-Field: value\r\n".repeat(100_000));
    let reply = submit(many.into_bytes()).await;
    assert!(reply.starts_with("523") || reply.starts_with("500"), "{reply}");

    // MIME nested 5 000 deep, and a thousand parts side by side.
    let mut nested = format!("{from}Content-Type: multipart/mixed; boundary=b0\r\n\r\n");
    for depth in 1..5000 {
        nested.push_str(&format!("--b{}\r\nContent-Type: multipart/mixed; boundary=b{depth}\r\n\r\n", depth - 1));
    }
    let reply = submit(nested.into_bytes()).await;
    assert_eq!(reply, "500 Failed to parse message", "beyond MAX_DEPTH");
    let mut wide = format!("{from}Content-Type: multipart/mixed; boundary=w\r\n\r\n");
    for _ in 0..1000 {
        wide.push_str("--w\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n");
    }
    wide.push_str("--w--\r\n");
    let reply = submit(wide.into_bytes()).await;
    assert_eq!(reply, "500 Failed to parse message", "beyond MAX_PARTS");

    relay.assert_memory_bounded();
    relay.assert_serving().await;
}

#[tokio::test]
async fn decompression_bombs_and_starttls_smuggling() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Messages (and so commands) of at most a megabyte: the bomb can be small, yet 16 times too big.
    let relay = Relay::start_with("max_message_size = 1000000").await;
    // 16 MiB of zeros in one command line, compressed to a few KiB, after COMPRESS DEFLATE.
    let mut c = relay.imap_logged_in("deflater1").await;
    assert_eq!(c.imap("z", "COMPRESS DEFLATE").await, ["z OK DEFLATE active"]);
    let mut tls = c.into_tls();
    let mut deflate = Compress::new(Compression::best(), false);
    let mut inflate = Decompress::new(false);
    let zeros = vec![0u8; 1 << 20];
    // The relay may end the session before all of it is written.
    for _ in 0..16 {
        let mut out = Vec::with_capacity(8 << 10);
        deflate.compress_vec(&zeros, &mut out, FlushCompress::None).unwrap();
        let _ = tls.write_all(&out).await;
    }
    let mut out = Vec::with_capacity(8 << 10);
    deflate.compress_vec(b"\r\nn NOOP\r\n", &mut out, FlushCompress::Sync).unwrap();
    let _ = tls.write_all(&out).await;
    // The line is refused as too long after a command's worth of it, without the rest being
    // inflated into memory, and the session ends.
    let answers = tokio::time::timeout(Duration::from_secs(120), async {
        let mut text = String::new();
        loop {
            let mut raw = [0u8; 4096];
            let n = tls.read(&mut raw).await.unwrap_or(0);
            if n == 0 {
                return text;
            }
            let mut plain = Vec::with_capacity(64 * 1024);
            inflate.decompress_vec(&raw[..n], &mut plain, FlushDecompress::None).unwrap();
            text.push_str(&String::from_utf8_lossy(&plain));
        }
    })
    .await
    .expect("an answer after the bomb");
    assert!(answers.contains("* BYE Command too long") && !answers.contains("n OK"), "{answers}");
    relay.assert_memory_bounded();

    // Commands pipelined behind STARTTLS in plaintext are dropped, on SMTP and IMAP.
    let mut s = Client::plain(relay.addr(587)).await;
    s.reply().await;
    s.cmd("EHLO client.test").await;
    s.write(b"STARTTLS\r\nAUTH PLAIN AGZvbwBiYXI=\r\n").await;
    assert!(s.reply().await[0].starts_with("220 "));
    s.start_tls().await;
    let ehlo = {
        s.send("EHLO client.test").await;
        s.reply().await
    };
    assert!(ehlo.iter().all(|l| !l.starts_with("535") && !l.starts_with("235")), "{ehlo:?}");
    assert!(ehlo.last().unwrap().starts_with("250 "), "{ehlo:?}");
    let mut c = Client::plain(relay.addr(143)).await;
    c.imap_line().await;
    c.write(b"s STARTTLS\r\nx LOGOUT\r\n").await;
    assert_eq!(c.imap_line().await, "s OK Begin TLS negotiation now");
    c.start_tls().await;
    assert_eq!(c.imap("n", "NOOP").await.last().unwrap(), "n OK Completed", "the smuggled LOGOUT was dropped");

    relay.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_commands_do_not_hold_up_others() {
    let relay = Relay::start().await;
    // A mailbox of 25 messages of 4 MB, each a long run of `a`: the worst case for a naive
    // substring search with a needle of a thousand `a` and a `b`.
    let mut filler = relay.imap_logged_in("heavy0001").await;
    let size = 4_000_000;
    for i in 0..25 {
        filler.send(&format!("a{i} APPEND INBOX {{{size}+}}")).await;
        let mut message = format!("From: <x@y.test>\r\nSubject: {i}\r\n\r\n").into_bytes();
        message.resize(size, b'a');
        filler.write(&message).await;
        filler.send("").await;
        assert!(filler.imap_until(&format!("a{i}")).await.last().unwrap().contains("OK"));
    }
    let needle = format!("{}b", "a".repeat(1000));
    let search = format!("SEARCH TEXT \"{needle}\"");
    filler.imap("s", "SELECT INBOX").await;
    let started = std::time::Instant::now();
    assert_eq!(filler.imap("t", &search).await, ["* SEARCH", "t OK Search completed"]);
    let one_search = started.elapsed();

    // Two clients run that search (and BODYSTRUCTURE of every message) over and over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut heavy = Vec::new();
    for _ in 0..2 {
        let mut c = relay.imap_logged_in("heavy0001").await;
        c.imap("s", "SELECT INBOX").await;
        let (stop, search) = (stop.clone(), search.clone());
        heavy.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(c.imap("t", &search).await.last().unwrap().starts_with("t OK"));
                assert!(c.imap("b", "FETCH 1:* BODYSTRUCTURE").await.last().unwrap().starts_with("b OK"));
            }
        }));
    }
    // Meanwhile a third client connects and asks again and again.
    let mut bystander = relay.imap_logged_in("bystander").await;
    let mut slowest = Duration::ZERO;
    let until = std::time::Instant::now() + (one_search * 4).max(Duration::from_secs(3));
    while std::time::Instant::now() < until {
        let asked = std::time::Instant::now();
        assert_eq!(bystander.imap("n", "NOOP").await.last().unwrap(), "n OK Completed");
        let mut s = Client::tls(relay.addr(465)).await;
        assert!(s.reply().await[0].starts_with("220 "));
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in heavy {
        task.await.unwrap();
    }
    eprintln!("one search: {one_search:?}; slowest NOOP + SMTP greeting meanwhile: {slowest:?}");
    assert!(slowest * 2 < one_search, "answered well before one search ends: {slowest:?} against {one_search:?}");
    relay.assert_serving().await;
}

#[tokio::test]
async fn turn_requests_without_credentials_do_not_grow_memory() {
    let relay = Relay::start().await;
    let server = relay.addr(3478);
    // The smallest valid Allocate, from many source ports, each with its own transaction id:
    // a server that kept a nonce per challenge would keep 400 000 of them (some 10 MB).
    let mut allocate = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    allocate.extend([0u8; 12]);
    allocate.extend([0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    let mut sockets = Vec::new();
    for _ in 0..16 {
        sockets.push(tokio::net::UdpSocket::bind((relay.ip, 0)).await.unwrap());
    }
    let before = relay.serve.rss_kib();
    for round in 0..400u32 {
        for i in 0..1000u32 {
            allocate[8..12].copy_from_slice(&round.to_be_bytes());
            allocate[12..16].copy_from_slice(&i.to_be_bytes());
            let _ = sockets[i as usize % sockets.len()].send_to(&allocate, server).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.serve.rss_kib();
    eprintln!("RSS {before} -> {after} KiB");
    assert!(after < before + 4 * 1024, "RSS grew from {before} to {after} KiB");
    relay.assert_serving().await;
}
