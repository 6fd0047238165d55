//! Two iroh 0.35 endpoints, forced onto relay-only paths, exchange data through ferrymail's
//! realtime relay (the real binary, `FERRYMAIL_BIN`) and nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iroh::endpoint::PathSelection;
use iroh::{Endpoint, NodeAddr, RelayMap, RelayMode, RelayNode, RelayUrl};

const ALPN: &[u8] = b"ferrymail/test/echo";

/// A ferrymail relay process, killed when dropped.
struct Relay {
    child: Child,
    https: SocketAddr,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn start_relay() -> Relay {
    let binary = std::env::var_os("FERRYMAIL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/ferrymail"));
    let dir = tempfile::tempdir().unwrap();
    let (https, metrics) = (free_port(), free_port());
    let config = dir.path().join("ferrymail.toml");
    std::fs::write(
        &config,
        format!(
            "mail_domain = \"_iroh.test\"\ndata_dir = \"data\"\nserve_turn = false\n[listen]\nsmtp = \"127.0.0.1:0\"\n\
             submission = \"127.0.0.1:0\"\nsubmissions = \"127.0.0.1:0\"\nimap = \"127.0.0.1:0\"\nimaps = \"127.0.0.1:0\"\n\
             https = \"{https}\"\nmetrics = \"{metrics}\"\nhttp = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(&binary)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (set FERRYMAIL_BIN): {e}", binary.display()));
    let relay = Relay { child, https, metrics, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect(https).is_err() {
        assert!(Instant::now() < deadline, "ferrymail did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    relay
}

/// One counter from the relay's /metrics (0 when absent).
fn counter(relay: &Relay, series: &str) -> u64 {
    let mut stream = TcpStream::connect(relay.metrics).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

async fn endpoint(url: &RelayUrl) -> Endpoint {
    let map = RelayMap::from(RelayNode { url: url.clone(), stun_only: false, stun_port: 0, quic: None });
    Endpoint::builder()
        .relay_mode(RelayMode::Custom(map))
        // The test relay's certificate is self-signed.
        .insecure_skip_relay_cert_verify(true)
        // No direct path: every packet goes through the relay.
        .path_selection(PathSelection::RelayOnly)
        .alpns(vec![ALPN.to_vec()])
        .bind()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_iroh_endpoints_exchange_data_through_the_relay() {
    let relay = start_relay();
    let url: RelayUrl = format!("https://{}", relay.https).parse().unwrap();
    let (a, b) = (endpoint(&url).await, endpoint(&url).await);
    for side in [&a, &b] {
        tokio::time::timeout(Duration::from_secs(30), side.home_relay().initialized()).await.unwrap().unwrap();
    }
    let to_b = NodeAddr::new(b.node_id()).with_relay_url(url.clone());
    let echo = tokio::spawn(async move {
        let connection = b.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = connection.accept_bi().await.unwrap();
        let message = recv.read_to_end(1 << 20).await.unwrap();
        send.write_all(&message).await.unwrap();
        send.finish().unwrap();
        connection.closed().await;
    });
    let connection = tokio::time::timeout(Duration::from_secs(30), a.connect(to_b, ALPN)).await.unwrap().unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    send.write_all(&payload).await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(1 << 20).await.unwrap(), payload);
    connection.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(10), echo).await;

    // 400 kB both ways, in relay packets of at most 64 KiB (iroh batches datagrams).
    let forwarded = counter(&relay, "ferrymail_realtime_packets_total{result=\"forwarded\"}");
    assert!(forwarded >= 8, "{forwarded} packets went through the relay");
    assert!(counter(&relay, "ferrymail_realtime_connections_total") >= 2);
}
