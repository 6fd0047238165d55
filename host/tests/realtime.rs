//! The realtime relay (iroh 0.35's protocol) against a replayed handshake, over real sockets:
//! a connection that sends another node's ClientInfo byte for byte cannot take that node's
//! packets or cut it off while the node is connected and answers pings; a node whose old
//! connection went silent (its network changed) does get its node id back, within seconds.

mod common;

use std::time::{Duration, Instant};

use common::client::{Client, tls_config};
use common::relay::TestRelay;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const CLIENT_INFO: u8 = 2;
const SEND_PACKET: u8 = 4;
const RECV_PACKET: u8 = 5;
const PING: u8 = 12;
const PONG: u8 = 13;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A node's key and the ClientInfo frame a real client sends for it (always the same bytes).
fn node() -> ([u8; 32], Vec<u8>) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut body = "RELAY🔑".as_bytes().to_vec();
    body.extend_from_slice(pair.public_key().as_ref());
    body.extend_from_slice(pair.sign(&[3]).as_ref());
    body.push(3);
    (pair.public_key().as_ref().try_into().unwrap(), frame(CLIENT_INFO, &body))
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// `GET /relay` with the upgrade, then the handshake.
async fn connect(relay: &TestRelay, client_info: &[u8]) -> Tls {
    let mut c = Client::tls_with(relay.https, tls_config(&[&rustls::version::TLS13], &[b"http/1.1"])).await.unwrap();
    c.write(b"GET /relay HTTP/1.1\r\nHost: relay.test\r\nUpgrade: iroh derp http\r\nConnection: Upgrade\r\n\r\n").await;
    assert!(c.line().await.unwrap().starts_with("HTTP/1.1 101"));
    while !c.line().await.unwrap().is_empty() {}
    let mut tls = c.into_tls();
    tls.write_all(client_info).await.unwrap();
    tls
}

async fn read_frame(tls: &mut Tls) -> Option<(u8, Vec<u8>)> {
    let kind = tls.read_u8().await.ok()?;
    let length = tls.read_u32().await.ok()? as usize;
    let mut body = vec![0; length];
    tls.read_exact(&mut body).await.ok()?;
    Some((kind, body))
}

/// What a connected node sees.
#[derive(Debug, PartialEq)]
enum Seen {
    Packet(Vec<u8>),
    Closed,
}

/// A node's connection that answers pings (as a live client does) and reports packets.
fn live(mut tls: Tls) -> (mpsc::UnboundedSender<Vec<u8>>, mpsc::UnboundedReceiver<Seen>) {
    let (send, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
    let (seen, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = read_frame(&mut tls) => match frame {
                    Some((PING, data)) => {
                        if tls.write_all(&self::frame(PONG, &data)).await.is_err() {
                            break;
                        }
                    }
                    Some((RECV_PACKET, body)) => {
                        let _ = seen.send(Seen::Packet(body[32..].to_vec()));
                    }
                    Some(_) => {}
                    None => break,
                },
                bytes = to_send.recv() => match bytes {
                    Some(bytes) => {
                        if tls.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        let _ = seen.send(Seen::Closed);
    });
    (send, seen_rx)
}

fn packet(to: &[u8; 32], data: &[u8]) -> Vec<u8> {
    frame(SEND_PACKET, &[to.as_slice(), data].concat())
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(20), seen.recv()).await.expect("something within 20 s").unwrap()
}

#[tokio::test]
async fn a_replayed_handshake_cannot_take_a_live_node() {
    let relay = TestRelay::start("").await;
    let (a_key, a_info) = node();
    let (_, b_info) = node();
    let (_a, mut a_seen) = live(connect(&relay, &a_info).await);
    let (b, _b_seen) = live(connect(&relay, &b_info).await);
    b.send(packet(&a_key, b"before")).unwrap();
    assert_eq!(next(&mut a_seen).await, Seen::Packet(b"before".to_vec()));

    // The replay: A's bytes exactly. The relay pings A, A answers, the replayer is closed
    // without having been sent anything.
    let started = Instant::now();
    let mut replayer = connect(&relay, &a_info).await;
    let got = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut replayer)).await.expect("closed in time");
    assert_eq!(got, None, "the replayer got nothing");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // A keeps its packets.
    b.send(packet(&a_key, b"after")).unwrap();
    assert_eq!(next(&mut a_seen).await, Seen::Packet(b"after".to_vec()));
}

#[tokio::test]
async fn a_node_whose_connection_went_silent_gets_its_id_back() {
    let relay = TestRelay::start("").await;
    let (a_key, a_info) = node();
    let (_, b_info) = node();
    // A's old connection: open, but nothing comes back from it (its network went away).
    let mut silent = connect(&relay, &a_info).await;
    let (b, _b_seen) = live(connect(&relay, &b_info).await);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let (_a, mut a_seen) = live(connect(&relay, &a_info).await);
    loop {
        b.send(packet(&a_key, b"to the new one")).unwrap();
        match tokio::time::timeout(Duration::from_millis(500), a_seen.recv()).await {
            Ok(Some(seen)) => {
                assert_eq!(seen, Seen::Packet(b"to the new one".to_vec()));
                break;
            }
            Ok(None) => panic!("closed"),
            Err(_) => assert!(started.elapsed() < Duration::from_secs(15), "the reconnect did not take over"),
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(2), "after the probe timed out: {:?}", started.elapsed());
    // The silent connection was ended (packets sent while it was probed were still its own).
    let ended = tokio::time::timeout(Duration::from_secs(20), async { while read_frame(&mut silent).await.is_some() {} }).await;
    assert!(ended.is_ok(), "the old connection was closed");

    // A clean reconnect (the old connection closed first) takes over at once.
    drop(_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_again, mut again_seen) = live(connect(&relay, &a_info).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    b.send(packet(&a_key, b"again")).unwrap();
    assert_eq!(next(&mut again_seen).await, Seen::Packet(b"again".to_vec()));
    assert!(started.elapsed() < Duration::from_secs(2));
}
