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
    turn_metadata_of(relay, "alice0001").await
}

async fn turn_metadata_of(relay: &TestRelay, local: &str) -> (String, u16, String, String) {
    let address = mail::account(relay, local).await;
    let mut c = Client::tls(relay.imaps).await;
    c.imap_line().await;
    assert!(c.imap("l", &format!("LOGIN {address} {PASSWORD}")).await.last().unwrap().starts_with("l OK"));
    let reply = c.imap("m", "GETMETADATA \"\" (/shared/vendor/deltachat/turn /shared/vendor/deltachat/irohrelay)").await;
    let line = &reply[0];
    // A self-signed relay announces no realtime relay: iroh's client would not trust it.
    assert!(!line.contains("irohrelay"), "{line}");
    // A literal, as Dovecot sends it: `/shared/vendor/deltachat/turn {n}\r\nvalue`.
    let literal = line.split("/shared/vendor/deltachat/turn {").nth(1).unwrap();
    let (length, rest) = literal.split_once("}\r\n").unwrap();
    let value = &rest[..length.parse::<usize>().unwrap()];
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
    // The username is what Delta Chat parses it as, the expiry (a number), 1 to 5 days ahead.
    let expires: i64 = username.parse().unwrap();
    let now = relay.clock.now_secs() as i64;
    assert!((now + 86_400..=now + 5 * 86_400).contains(&expires), "1 to 5 days: {expires} at {now}");

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

#[tokio::test]
async fn an_account_has_at_most_four_allocations() {
    let relay = TestRelay::start("").await;
    let server = relay.turn.unwrap();
    let (_, _, username, password) = turn_metadata_of(&relay, "alice0001").await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = turn_client(server, &username, &password).await.unwrap();
        let allocation = client.allocate().await.unwrap();
        clients.push((client, allocation));
    }
    let fifth = turn_client(server, &username, &password).await.unwrap();
    assert!(fifth.allocate().await.is_err(), "a fifth allocation of one account");
    // Another account's credentials name another account: its allocations are its own.
    let (_, _, other, other_password) = turn_metadata_of(&relay, "bob000001").await;
    assert_ne!(other, username);
    let bob = turn_client(server, &other, &other_password).await.unwrap();
    bob.allocate().await.unwrap();
    // One of Alice's closes: her next allocation gets its place.
    let (client, allocation) = clients.pop().unwrap();
    // Closing the allocation tells the server (a Refresh with lifetime 0).
    allocation.close().await.unwrap();
    client.close().await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let again = turn_client(server, &username, &password).await.unwrap();
        if again.allocate().await.is_ok() {
            break;
        }
        again.close().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "the freed place did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn strangers_get_small_answers_at_a_bounded_rate() {
    let relay = TestRelay::start("").await;
    let server = relay.turn.unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let header = |length: u16, id: u8| {
        let mut m = vec![0x00, 0x03];
        m.extend(length.to_be_bytes());
        m.extend([0x21, 0x12, 0xA4, 0x42]);
        m.extend([id; 12]);
        m
    };
    let mut buf = [0u8; 1500];
    let answer = async |socket: &UdpSocket, buf: &mut [u8]| tokio::time::timeout(Duration::from_millis(500), socket.recv(buf)).await.ok().and_then(Result::ok);
    // A bare header is no valid Allocate: no answer.
    socket.send_to(&header(0, 1), server).await.unwrap();
    assert_eq!(answer(&socket, &mut buf).await, None);
    // The smallest valid one (REQUESTED-TRANSPORT: UDP): a 401 of at most twice its size.
    let mut allocate = header(8, 2);
    allocate.extend([0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    socket.send_to(&allocate, server).await.unwrap();
    let n = answer(&socket, &mut buf).await.expect("a 401");
    assert!(n <= 2 * allocate.len(), "{n} bytes for {}", allocate.len());
    assert_eq!(&buf[..2], &[0x01, 0x13], "an Allocate error response");
    // A flood: answers at the budget's rate, then none; the rest is dropped unanswered.
    let started = std::time::Instant::now();
    for i in 0..3000u32 {
        let mut flood = allocate.clone();
        flood[8..12].copy_from_slice(&i.to_be_bytes());
        socket.send_to(&flood, server).await.unwrap();
    }
    let mut answered = 0;
    while answer(&socket, &mut buf).await.is_some() {
        answered += 1;
    }
    let allowed = 200.0 + 100.0 * started.elapsed().as_secs_f64() + 10.0;
    assert!((answered as f64) < allowed && answered >= 100, "{answered} answers to 3000 in {:?}", started.elapsed());
    // A real client still gets through once the budget refills.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, _, username, password) = turn_metadata(&relay).await;
    let client = turn_client(server, &username, &password).await.unwrap();
    client.allocate().await.unwrap();
}
