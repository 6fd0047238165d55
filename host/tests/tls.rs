//! TLS with the operator's certificate files: served, and replaced without a restart when the
//! files change (a renewed certificate); a broken pair keeps the old one serving.

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::relay::TestRelay;

fn write_pair(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
    generated.cert.der().to_vec()
}

async fn served_certificate(relay: &TestRelay) -> Vec<u8> {
    let mut c = Client::tls(relay.submissions).await;
    assert!(c.reply().await[0].starts_with("220"));
    c.peer_certificate().unwrap()
}

#[tokio::test]
async fn certificate_files_are_served_and_reloaded() {
    let certs = tempfile::tempdir().unwrap();
    let first = write_pair(certs.path(), "mail.example.org");
    let relay = TestRelay::start(&format!(
        "tls_cert_file = \"{0}/cert.pem\"\ntls_key_file = \"{0}/key.pem\"",
        certs.path().display()
    ))
    .await;
    assert_eq!(served_certificate(&relay).await, first);

    // Something unusable replaces the files: the current certificate keeps serving.
    std::fs::write(certs.path().join("cert.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(served_certificate(&relay).await, first);

    let renewed = write_pair(certs.path(), "mail.example.org");
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_certificate(&relay).await != renewed {
        assert!(Instant::now() < deadline, "the renewed certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
