//! Every connection has a deadline at every step, tried over real sockets with the timeouts
//! set short: idle and silent HTTPS connections give their slot back, a request body that
//! stalls is answered 408, IMAP and SMTP must log in in time, IDLE ends after the autologout
//! time, and a client that stops reading loses its connection and its slot.

mod common;

use std::time::{Duration, Instant};

use common::client::{Client, tls_config};
use common::http::https;
use common::mail::{PASSWORD, account, plain_auth};
use common::relay::TestRelay;

/// Timeouts of a couple of seconds: login 2, IMAP 3, HTTPS idle 2, writes 2 (SMTP stays long).
const SHORT: &str = "[timeouts]\nlogin = 2\nsmtp = 300\nimap = 3\nhttps_idle = 2\nwrite = 2\n";

/// The time until the server ends the connection (all it sent is read and dropped).
async fn until_closed(c: &mut Client) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), c.rest()).await.expect("the relay closes the connection");
    started.elapsed()
}

async fn http1(relay: &TestRelay) -> Client {
    Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"http/1.1"])).await.unwrap()
}

#[tokio::test]
async fn idle_https_connections_give_their_slot_back() {
    let relay = TestRelay::start(&format!("max_https_connections = 3\n{SHORT}")).await;
    // Three connections hold every slot: one HTTP/2 and one HTTP/1.1 idle after a request
    // (keep-alive), one that never sends one.
    let mut idle = Vec::new();
    // HTTP/2 after one request: hyper alone would keep it open for good (pings answered).
    let h2 = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"h2"])).await.unwrap().into_tls();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(h2)).await.unwrap();
    let h2_connection = tokio::spawn(connection);
    let request = hyper::Request::get("https://relay.test/robots.txt").body(http_body_util::Empty::<axum::body::Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    let mut keep_alive = http1(&relay).await;
    keep_alive.write(b"GET /robots.txt HTTP/1.1\r\nHost: relay.test\r\n\r\n").await;
    assert!(keep_alive.line().await.unwrap().starts_with("HTTP/1.1 200"));
    idle.push(keep_alive);
    idle.push(http1(&relay).await);
    assert_eq!(https(relay.https, "GET", "/").await.status, 503, "every slot is taken");
    for c in &mut idle {
        let waited = until_closed(c).await;
        assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
    }
    tokio::time::timeout(Duration::from_secs(10), h2_connection).await.expect("the HTTP/2 connection was ended").unwrap().ok();
    drop(sender);
    assert_eq!(https(relay.https, "GET", "/").await.status, 200, "the slots came back");
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_and_closed() {
    let relay = TestRelay::start(SHORT).await;
    let bob = account(&relay, "bob000001").await;
    let mut c = http1(&relay).await;
    let head = format!(
        "POST /mxdeliv HTTP/1.1\r\nHost: relay.test\r\nX-Mail-From: <a@other.test>\r\nX-Mail-To: {bob}\r\nContent-Length: 100000\r\n\r\n"
    );
    c.write(head.as_bytes()).await;
    c.write(b"From: a@other.test\r\n").await;
    let started = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(30), c.rest()).await.expect("an answer");
    assert!(rest.starts_with("HTTP/1.1 408"), "{rest}");
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn logins_have_a_deadline_and_idle_has_the_autologout_time() {
    let relay = TestRelay::start(SHORT).await;
    // IMAP: silent after the greeting.
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    let started = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(30), c.rest()).await.unwrap();
    assert!(rest.starts_with("* BYE"), "{rest}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // SMTP submission: a greeting and EHLO, then silence before AUTH.
    let mut s = Client::tls(relay.submissions).await;
    s.reply().await;
    s.cmd("EHLO client.test").await;
    assert_eq!(s.reply().await.pop().unwrap(), "421 4.4.2 Error: timeout exceeded");
    // Logged in, the SMTP timeout applies (5 minutes here): still there after the login time.
    let mut s = Client::tls(relay.submissions).await;
    s.reply().await;
    s.cmd("EHLO client.test").await;
    let address = TestRelay::address("alice0001");
    assert!(s.cmd(&format!("AUTH PLAIN {}", plain_auth(&address, PASSWORD))).await.starts_with("235"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.cmd("NOOP").await.starts_with("250"));

    // IMAP IDLE ends with the autologout time (3 s here), with a BYE.
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    assert!(c.imap("l", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await.last().unwrap().starts_with("l OK"));
    c.imap("s", "SELECT INBOX").await;
    c.send("i IDLE").await;
    assert_eq!(c.imap_line().await, "+ idling");
    let started = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(30), c.rest()).await.unwrap();
    assert!(rest.starts_with("* BYE Disconnected for inactivity"), "{rest}");
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_slot() {
    let relay = TestRelay::start(&format!("max_imap_connections = 1\n{SHORT}")).await;
    let address = TestRelay::address("reader001");
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    assert!(c.imap("l", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await.last().unwrap().starts_with("l OK"));
    c.send("a APPEND INBOX {2000000}").await;
    c.imap_line().await;
    let mut message = b"From: <x@y.test>\r\n\r\n".to_vec();
    message.resize(2_000_000, b'x');
    c.write(&message).await;
    c.send("").await;
    c.imap_until("a").await;
    c.imap("s", "SELECT INBOX").await;
    // 100 MB of answers that are never read.
    let fetches: String = (0..50).map(|i| format!("f{i} FETCH 1 BODY.PEEK[]\r\n")).collect();
    c.write(fetches.as_bytes()).await;
    let refused = Client::tls_with(relay.imaps, tls_config(&[&rustls::version::TLS13], &[])).await;
    assert!(refused.is_err(), "the one slot is taken: the connection is closed before TLS");
    // The write timeout (2 s) after the buffers filled, then at most a second each to say
    // goodbye and to drain: the slot comes back while the stalled client still sits there.
    let started = Instant::now();
    loop {
        if let Ok(mut other) = Client::tls_with(relay.imaps, tls_config(&[&rustls::version::TLS13], &[])).await {
            assert!(other.imap_line().await.starts_with("* OK"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the slot did not come back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // What the stalled client gets when it reads again: part of it, then the end.
    let rest = tokio::time::timeout(Duration::from_secs(30), c.rest()).await.unwrap();
    assert!(rest.len() < 50 * 2_000_000, "{} bytes", rest.len());
}
