//! Push notifications (SPEC §6) against a notification service the test runs itself: HTTPS on
//! loopback, answering each token with the status the test chose.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client::Client;
use common::mail::{self, PASSWORD};
use common::relay::{Options, TestRelay};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// The notification service: records every token posted, answers with the status set for it (200 by default).
#[derive(Clone, Default)]
struct Service {
    posted: Arc<Mutex<Vec<String>>>,
    statuses: Arc<Mutex<HashMap<String, u16>>>,
}

impl Service {
    async fn start(&self) -> SocketAddr {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![generated.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, service) = (acceptor.clone(), service.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let handler = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        async move {
                            assert_eq!((request.method().as_str(), request.uri().path()), ("POST", "/notify"));
                            let token = String::from_utf8(request.into_body().collect().await?.to_bytes().to_vec()).unwrap();
                            let status = service.statuses.lock().unwrap().get(&token).copied().unwrap_or(200);
                            service.posted.lock().unwrap().push(token);
                            Ok::<_, hyper::Error>(hyper::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), handler).await;
                });
            }
        });
        addr
    }

    fn answer(&self, token: &str, status: u16) {
        self.statuses.lock().unwrap().insert(token.to_string(), status);
    }

    fn posted(&self, token: &str) -> usize {
        self.posted.lock().unwrap().iter().filter(|t| *t == token).count()
    }

    /// Wait until `token` was posted `count` times in all.
    async fn wait_for(&self, token: &str, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.posted(token) < count {
            assert!(std::time::Instant::now() < deadline, "{token} posted {} times, not {count}", self.posted(token));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn imap(relay: &TestRelay, address: &str) -> Client {
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    assert!(c.imap("l", &format!("LOGIN {address} {PASSWORD}")).await.last().unwrap().starts_with("l OK"));
    c
}

async fn set_token(c: &mut Client, token: &str) {
    let reply = c.imap("t", &format!("SETMETADATA INBOX (/private/devicetoken \"{token}\")")).await;
    assert!(reply.last().unwrap().starts_with("t OK"), "{reply:?}");
}

async fn tokens(c: &mut Client) -> String {
    c.imap("g", "GETMETADATA INBOX (/private/devicetoken)").await.join("\n")
}

fn config(addr: SocketAddr) -> String {
    format!("notification_url = \"https://{addr}/notify\"")
}

#[tokio::test]
async fn every_device_is_notified_of_mail_from_others_and_gone_tokens_are_forgotten() {
    let service = Service::default();
    let relay = TestRelay::start(&config(service.start().await)).await;
    let alice = mail::account(&relay, "alice0001").await;
    let bob = mail::account(&relay, "bob000001").await;
    let mut session = imap(&relay, &bob).await;
    set_token(&mut session, "phone-token").await;
    set_token(&mut session, "tablet-token").await;
    service.answer("tablet-token", 410);

    mail::deliver(&relay, &alice, &bob).await;
    service.wait_for("phone-token", 1).await;
    service.wait_for("tablet-token", 1).await;
    // 410: the tablet's token is gone; the phone's stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokens(&mut session).await.contains("tablet-token") {
        assert!(std::time::Instant::now() < deadline, "the 410 token was kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tokens(&mut session).await.contains("phone-token"));

    // Bob's own message (a copy for his other devices) wakes nobody; the next one from alice does.
    mail::deliver(&relay, &bob, &bob).await;
    mail::deliver(&relay, &alice, &bob).await;
    service.wait_for("phone-token", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((service.posted("phone-token"), service.posted("tablet-token")), (2, 1));
    assert!(relay.relay.store.push_queue().unwrap().is_empty());
}

#[tokio::test]
async fn failed_notifications_are_retried_across_a_restart_and_dropped_after_5_hours() {
    let service = Service::default();
    let extra = config(service.start().await);
    let relay = TestRelay::start(&extra).await;
    let alice = mail::account(&relay, "alice0001").await;
    let bob = mail::account(&relay, "bob000001").await;
    set_token(&mut imap(&relay, &bob).await, "phone-token").await;
    service.answer("phone-token", 503);

    mail::deliver(&relay, &alice, &bob).await;
    service.wait_for("phone-token", 1).await; // at once
    failures_recorded(&relay, 1).await;
    relay.clock.advance(Duration::from_secs(9));
    service.wait_for("phone-token", 2).await; // after 8 s
    failures_recorded(&relay, 2).await;
    assert_eq!(relay.relay.store.push_queue().unwrap().len(), 1);

    // The queue survives a restart; the service is back.
    let dir = relay.stop().await;
    service.answer("phone-token", 200);
    let relay = TestRelay::start_with(Options { extra: extra.clone(), dir: Some(dir), ..Options::default() }).await;
    // The restarted relay's clock starts from real time again: 9 + 64 s and a margin.
    relay.clock.advance(Duration::from_secs(80));
    service.wait_for("phone-token", 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !relay.relay.store.push_queue().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "a delivered notification stayed queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A service that stays down: tried at once and after 8, 64, 512 and 4096 s, then dropped.
    service.answer("phone-token", 500);
    let before = service.posted("phone-token");
    mail::deliver(&relay, &alice, &bob).await;
    service.wait_for("phone-token", before + 1).await;
    failures_recorded(&relay, 1).await;
    for (attempt, wait) in [8, 64, 512, 4096].into_iter().enumerate() {
        // The clock runs on in real time too: stop 5 s short, look for 1.5 s.
        relay.clock.advance(Duration::from_secs(wait - 5));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(service.posted("phone-token") - before, attempt + 1, "not before its time");
        relay.clock.advance(Duration::from_secs(5));
        service.wait_for("phone-token", before + attempt + 2).await;
        if attempt < 3 {
            failures_recorded(&relay, attempt as u32 + 2).await;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !relay.relay.store.push_queue().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "not dropped after the fifth attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(relay.relay.metrics.get("ferrymail_push_total", &[("result", "dropped")]), 1);

    // Still queued 5 hours after the message (the relay was down, say): dropped unsent.
    let before = service.posted("phone-token");
    mail::deliver(&relay, &alice, &bob).await;
    service.wait_for("phone-token", before + 1).await;
    failures_recorded(&relay, 1).await;
    relay.clock.advance(Duration::from_secs(5 * 3600 + 1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !relay.relay.store.push_queue().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "a stale notification stayed queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(service.posted("phone-token"), before + 1, "nothing posted after 5 hours");
    assert_eq!(relay.relay.metrics.get("ferrymail_push_total", &[("result", "dropped")]), 2);
}

/// Wait until the queued notification shows `attempts` failed attempts (the relay writes a
/// failure after the service answered).
async fn failures_recorded(relay: &TestRelay, attempts: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while relay.relay.store.push_queue().unwrap().first().is_none_or(|e| e.attempts < attempts) {
        assert!(std::time::Instant::now() < deadline, "the failure was not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
