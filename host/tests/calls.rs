//! Calls (SPEC §8): TURN with a real TURN client using the credentials the app reads over IMAP
//! METADATA. (The realtime relay is tested with real iroh endpoints in tests/iroh/, a workspace
//! of its own so that iroh's dependencies leave the relay's build alone.)

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::client::Client;
use common::mail::{self, PASSWORD};
use common::relay::TestRelay;
use tokio::net::UdpSocket;
use webrtc_util::Conn;

/// The TURN entry of the server METADATA, as the app reads it: (host, port, username, password).
async fn turn_metadata(relay: &TestRelay) -> (String, u16, String, String) {
    let address = mail::account(relay, "alice0001").await;
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    assert!(c.imap("l", &format!("LOGIN {address} {PASSWORD}")).await.last().unwrap().starts_with("l OK"));
    let reply = c.imap("m", "GETMETADATA \"\" (/shared/vendor/deltachat/turn /shared/vendor/deltachat/irohrelay)").await;
    let line = &reply[0];
    // A self-signed relay announces no realtime relay: iroh's client would not trust it.
    assert!(!line.contains("irohrelay"), "{line}");
    let value = line.split("/shared/vendor/deltachat/turn \"").nth(1).unwrap().split('"').next().unwrap();
    let mut parts = value.splitn(4, ':');
    let (host, port, username, password) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    (host.to_string(), port.parse().unwrap(), username.to_string(), password.to_string())
}

async fn turn_client(server: SocketAddr, username: &str, password: &str) -> Result<turn::client::Client, turn::Error> {
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.to_string(),
        password: password.to_string(),
        // Taken from the server's challenge.
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
        vnet: None,
    })
    .await?;
    client.listen().await?;
    Ok(client)
}

#[tokio::test]
async fn turn_relays_calls_with_the_credentials_from_imap_metadata() {
    let relay = TestRelay::start("turn_allow_private_peers = true").await;
    let server = relay.turn.unwrap();
    let (host, port, username, password) = turn_metadata(&relay).await;
    assert_eq!((host.as_str(), port), (relay.domain.as_str(), server.port()));
    let expires: u64 = username.parse().unwrap();
    let now = relay.clock.now_secs();
    assert!((now + 5 * 86_400 - 5..=now + 5 * 86_400).contains(&expires), "five days: {expires} at {now}");

    let client = turn_client(server, &username, &password).await.unwrap();
    let allocation = client.allocate().await.unwrap();
    let relayed = allocation.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Sending creates the permission for the peer, then the data goes through the relay.
    allocation.send_to(b"hello peer", peer.local_addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], from), (&b"hello peer"[..], relayed));
    peer.send_to(b"hello caller", relayed).await.unwrap();
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), allocation.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], from), (&b"hello caller"[..], peer.local_addr().unwrap()));
    client.close().await.unwrap();

    // Wrong credentials get no allocation.
    let intruder = turn_client(server, &username, "not-the-password").await.unwrap();
    assert!(intruder.allocate().await.is_err());
    intruder.close().await.unwrap();
}

#[tokio::test]
async fn turn_does_not_relay_into_private_networks() {
    let relay = TestRelay::start("").await;
    let (_, _, username, password) = turn_metadata(&relay).await;
    let client = turn_client(relay.turn.unwrap(), &username, &password).await.unwrap();
    let allocation = client.allocate().await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    allocation.send_to(b"knock knock", peer.local_addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(tokio::time::timeout(Duration::from_secs(1), peer.recv_from(&mut buf)).await.is_err(), "relayed to loopback");
    client.close().await.unwrap();
}
