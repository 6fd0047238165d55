//! Certificates by ACME from a real ACME server, pebble (Let's Encrypt's test CA), validating
//! over loopback against the relay's own listeners: first issuance over TLS-ALPN-01 and over
//! HTTP-01, renewal of short-lived certificates under open IMAP and SMTP sessions, and a
//! challenge that fails (the old certificate keeps serving; the relay retries).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::client::Client;
use common::dns::{TestDns, free_port};
use common::pebble::{Pebble, Validation, listener_files, python_verifies};
use common::relay::{Options, TestRelay};

const DOMAIN: &str = "c.test";
const PASSWORD: &str = "a-long-enough-password";

/// dnsmasq with the relay's two names, pebble's files, the relay itself: pebble starts later,
/// once the relay's ports are known.
struct Setup {
    relay: TestRelay,
    dns: TestDns,
    files: tempfile::TempDir,
    acme_port: u16,
}

async fn setup(ip: Ipv4Addr, challenge: &str) -> Setup {
    let dns_port = free_port();
    let records = [format!("host-record={DOMAIN},{ip}"), format!("host-record=mta-sts.{DOMAIN},{ip}")];
    let dns = TestDns::start(dns_port, &records);
    let files = tempfile::tempdir().unwrap();
    let listener_ca = listener_files(files.path());
    let acme_port = free_port();
    let extra = format!(
        "dns_resolver = \"127.0.0.1:{dns_port}\"\nacme_directory = \"https://127.0.0.1:{acme_port}/dir\"\n\
         acme_ca_root = \"{}\"\nacme_challenge = \"{challenge}\"\nacme_retry = 1\nacme_email = \"postmaster@{DOMAIN}\"",
        listener_ca.display()
    );
    let relay = TestRelay::start_with(Options { domain: DOMAIN.into(), ip: Some(ip), extra, dir: None }).await;
    Setup { relay, dns, files, acme_port }
}

impl Setup {
    fn pebble(&self, tls_port: u16, validity_seconds: u64) -> Pebble {
        let validation = Validation { tls_port, http_port: self.relay.http.unwrap().port(), validity_seconds };
        Pebble::start(self.files.path(), self.acme_port, self.dns.port, &validation)
    }
}

/// Wait until the relay serves an ACME certificate other than `than` (DER of the leaf).
async fn new_certificate(relay: &TestRelay, than: Option<&[u8]>, pebble: &Pebble, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        let served = served_certificate(relay.submissions).await;
        if !relay.relay.tls.validity().temporary && Some(served.as_slice()) != than {
            return served;
        }
        if Instant::now() > deadline {
            let status = ferrymail::operator::execute(&relay.relay, "status").await.unwrap();
            panic!("no new certificate in {within:?}; the relay says:\n{status}\npebble says:\n{}", pebble.log());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn served_certificate(address: SocketAddr) -> Vec<u8> {
    let mut c = Client::tls(address).await;
    assert!(c.reply().await[0].starts_with("220"));
    c.peer_certificate().unwrap()
}

async fn metrics(relay: &TestRelay) -> String {
    common::http::http(relay.metrics, "GET", "/metrics").await.body
}

#[tokio::test]
async fn tls_alpn_01_issues_and_renews_under_open_sessions() {
    let s = setup(Ipv4Addr::new(127, 0, 0, 71), "tls-alpn-01").await;
    assert!(s.relay.relay.tls.validity().temporary, "a temporary certificate serves until ACME brings one");
    // Certificates for 30 s: renewed at 20 s.
    let pebble = s.pebble(443, 30);
    let first = new_certificate(&s.relay, None, &pebble, Duration::from_secs(60)).await;

    let validity = s.relay.relay.tls.validity();
    let mut names = validity.names.clone();
    names.sort();
    assert_eq!(names, [DOMAIN.to_string(), format!("mta-sts.{DOMAIN}")]);
    let acme = s.relay.dir.path().join("data/acme");
    for file in ["account.json", "cert.pem", "key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(acme.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    // A real TLS client takes the chain on every TLS port, for both names.
    let root = pebble.root();
    assert!(python_verifies(&root, s.relay.https, DOMAIN).await.is_ok(), "{:?}", python_verifies(&root, s.relay.https, DOMAIN).await);
    assert!(python_verifies(&root, s.relay.imaps, &format!("mta-sts.{DOMAIN}")).await.is_ok());
    assert!(python_verifies(&root, s.relay.submissions, "other.test").await.unwrap_err().contains("CERTIFICATE_VERIFY_FAILED"));

    let text = metrics(&s.relay).await;
    let expiry = format!("ferrymail_tls_certificate_expiry_seconds{{source=\"acme\",temporary=\"false\"}} {}", validity.not_after);
    assert!(text.contains(&expiry), "{text}");
    let status = ferrymail::operator::execute(&s.relay.relay, "status").await.unwrap();
    assert!(status.contains("certificate: acme, expires"), "{status}");

    // Sessions opened on the first certificate...
    let address = s.relay.address_here("acmetests");
    let mut imap = Client::tls(s.relay.imaps).await;
    imap.line().await.unwrap();
    assert!(imap.imap("l", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await.last().unwrap().starts_with("l OK"));
    let mut smtp = Client::tls(s.relay.submissions).await;
    smtp.reply().await;
    assert!(smtp.cmd("EHLO client.test").await.starts_with("250"));
    assert_eq!(imap.peer_certificate().unwrap(), first);

    // ...live through the renewal, and new ones get the new certificate.
    let renewed = new_certificate(&s.relay, Some(&first), &pebble, Duration::from_secs(60)).await;
    assert_ne!(renewed, first);
    assert!(imap.imap("n", "NOOP").await.last().unwrap().starts_with("n OK"));
    assert!(smtp.cmd("NOOP").await.starts_with("250"));
    assert!(python_verifies(&root, s.relay.imaps, DOMAIN).await.is_ok());
    assert_eq!(s.relay.relay.metrics.get("ferrymail_acme_failures_total", &[("challenge", "tls-alpn-01")]), 0);
}

#[tokio::test]
async fn http_01_issues_on_the_plain_http_port() {
    let s = setup(Ipv4Addr::new(127, 0, 0, 72), "http-01").await;
    // TLS-ALPN-01 would fail here: pebble looks for it on a port nobody serves.
    let pebble = s.pebble(free_port(), 3600);
    new_certificate(&s.relay, None, &pebble, Duration::from_secs(60)).await;
    let root = pebble.root();
    assert!(python_verifies(&root, s.relay.https, DOMAIN).await.is_ok(), "{:?}", python_verifies(&root, s.relay.https, DOMAIN).await);
    // A token nobody asked for is not found.
    let response = common::http::http(s.relay.http.unwrap(), "GET", "/.well-known/acme-challenge/nothing").await;
    assert_eq!(response.status, 404);
    // The CAA record of `ferrymail dns` names pebble's account once there is one (pebble's
    // directory gives no CAA identity, so there is no record to print).
    assert_eq!(ferrymail::acme::caa_record(&s.relay.relay.config), None);
}

#[tokio::test]
async fn a_failing_challenge_keeps_the_old_certificate_and_is_retried() {
    let s = setup(Ipv4Addr::new(127, 0, 0, 73), "tls-alpn-01").await;
    let good = s.pebble(443, 20);
    let first = new_certificate(&s.relay, None, &good, Duration::from_secs(60)).await;
    drop(good);

    // A CA that starts afresh (it forgets the account: the relay registers again) and whose
    // validation cannot reach the relay: every renewal fails.
    let failing = s.pebble(free_port(), 20);
    let failures = || s.relay.relay.metrics.get("ferrymail_acme_failures_total", &[("challenge", "tls-alpn-01")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while failures() < 2 {
        assert!(Instant::now() < deadline, "the renewal did not fail twice; pebble says:\n{}", failing.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(served_certificate(s.relay.submissions).await, first, "the old certificate keeps serving");
    let status = ferrymail::operator::execute(&s.relay.relay, "status").await.unwrap();
    assert!(status.contains("failed attempts") && status.contains("acme: next attempt"), "{status}");
    assert!(metrics(&s.relay).await.contains("ferrymail_acme_failures_total{challenge=\"tls-alpn-01\"}"));
    drop(failing);

    // Once validation works again, a retry gets the new certificate.
    let good = s.pebble(443, 3600);
    new_certificate(&s.relay, Some(&first), &good, Duration::from_secs(90)).await;
    let status = ferrymail::operator::execute(&s.relay.relay, "status").await.unwrap();
    assert!(!status.contains("failed attempts"), "{status}");
}
