//! The realtime relay: iroh's relay protocol as iroh 0.35 speaks it (what Delta Chat 2.x uses
//! for webxdc realtime channels), on the HTTPS port at `/relay`. Two apps that cannot reach each
//! other directly send packets addressed to the other's node id; the relay forwards them and
//! forgets them. Nothing relayed is stored or logged, and node ids are never logged either.
//!
//! The wire protocol (version 3): after `GET /relay` with `Upgrade: iroh derp http` and a `101`,
//! frames are `[type u8][length u32 BE][body]`. The client first proves its node id: a ClientInfo
//! frame with a magic, its ed25519 public key, a signature and the signed message (postcard
//! `{version: 3}`). Then SendPacket (destination key + data) becomes RecvPacket (source key +
//! data) on the destination's connection; Ping is answered with Pong; when a client leaves, the
//! peers it sent to hear PeerGone.
//!
//! A second connection for a node id already connected: version 3's ClientInfo signs a
//! constant message, bound to no session and no challenge, so anyone who saw a node's
//! handshake (any relay it used, a proxy, a sniffer on `http://`) can replay it, and a real
//! reconnect sends the very same bytes. The only thing that tells them apart is whether the
//! connection we have is still alive: it is pinged at once, and keeps the node if it answers
//! within [`PROBE_TIMEOUT`]; the newcomer is then closed without having been read from, sent
//! anything or routed to. Only a silent connection (a client whose network changed under it)
//! is replaced. What remains possible: whoever holds a node's handshake can take the node id
//! while the node is not connected to this relay (and receive, not read, what is sent to it
//! until the node connects: then the squatter answers the probe and keeps it); and can make
//! the node answer one ping per attempt. Closing that needs iroh's newer handshake, which
//! Delta Chat 2.x does not speak.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::UPGRADE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::serve::Relay;

const UPGRADE_PROTOCOL: &str = "iroh derp http";
const MAGIC: &[u8] = "RELAY🔑".as_bytes();
const PROTOCOL_VERSION: u64 = 3;
const MAX_PACKET: usize = 64 * 1024;
/// The largest frame taken: a packet with its address (before the handshake: 1 KiB).
const MAX_FRAME: usize = 32 + MAX_PACKET;
const MAX_HANDSHAKE_FRAME: usize = 1024;
/// Bytes of packets waiting for one client; more are dropped (realtime data: late is as good
/// as lost). Pongs and PeerGone have a small queue of their own that is written first.
const QUEUE_BYTES: usize = 512 * 1024;
const CONTROL_QUEUE: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// How long the connected client of a node has to answer the probe a newcomer with its node
/// id triggers (iroh 0.35 clients wait 5 s for their first pong: a promoted newcomer gets it).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Peers a client sent to, remembered to tell them when it leaves (bounded).
const MAX_REMEMBERED_PEERS: usize = 1024;

mod frame {
    pub const CLIENT_INFO: u8 = 2;
    pub const SEND_PACKET: u8 = 4;
    pub const RECV_PACKET: u8 = 5;
    pub const PEER_GONE: u8 = 8;
    pub const PING: u8 = 12;
    pub const PONG: u8 = 13;
}

type NodeId = [u8; 32];

/// What goes out to one client, besides packets.
enum Control {
    PeerGone(NodeId),
    Pong([u8; 8]),
    /// A ping to learn whether this connection is alive (a newcomer claims its node id).
    Probe([u8; 8]),
}

/// The clients connected now, by node id.
pub struct Realtime {
    clients: RwLock<HashMap<NodeId, Client>>,
    /// Nodes whose connected client is being probed for a newcomer: one newcomer at a time.
    challenged: Mutex<HashSet<NodeId>>,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    connections: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// How to reach one connected client.
#[derive(Clone)]
struct Client {
    connection: u64,
    packets: mpsc::UnboundedSender<(NodeId, Vec<u8>)>,
    /// Bytes in `packets` not yet written: bounded by `QUEUE_BYTES`.
    queued: Arc<AtomicUsize>,
    control: mpsc::Sender<Control>,
    /// Tells the connection to end (another connection took over its node id).
    stop: Arc<Notify>,
    /// The probe in flight: its ping data and who waits for the pong.
    probe: Arc<Mutex<Option<([u8; 8], oneshot::Sender<()>)>>>,
}

impl Client {
    /// Whether this connection answers a ping within [`PROBE_TIMEOUT`].
    async fn answers_probe(&self) -> bool {
        let data: [u8; 8] = rand::random();
        let (answered, pong) = oneshot::channel();
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((data, answered));
        // A live connection writes its control queue first: room comes soon.
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
        if !matches!(tokio::time::timeout_at(deadline, self.control.send(Control::Probe(data))).await, Ok(Ok(()))) {
            return false;
        }
        // A connection that ends meanwhile drops the sender: not alive.
        matches!(tokio::time::timeout_at(deadline, pong).await, Ok(Ok(())))
    }

    /// Queue a packet unless the client's queue is full.
    fn offer(&self, from: NodeId, data: Vec<u8>) -> bool {
        let size = data.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        self.packets.send((from, data)).is_ok()
    }
}

impl Realtime {
    pub fn new(max_connections: usize) -> Realtime {
        Realtime {
            clients: RwLock::default(),
            challenged: Mutex::default(),
            next_id: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            connections: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn client(&self, node: &NodeId) -> Option<Client> {
        self.clients.read().unwrap_or_else(|e| e.into_inner()).get(node).cloned()
    }

    /// How many clients are connected.
    pub fn connected(&self) -> usize {
        self.clients.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The relay's counters, in the Prometheus text format (counted without locks: per packet).
    pub fn render_metrics(&self) -> String {
        format!(
            "# TYPE ferrymail_realtime_connections_total counter\nferrymail_realtime_connections_total {}\n\
             # TYPE ferrymail_realtime_packets_total counter\nferrymail_realtime_packets_total{{result=\"forwarded\"}} {}\n\
             ferrymail_realtime_packets_total{{result=\"dropped\"}} {}\n\
             # TYPE ferrymail_realtime_clients gauge\nferrymail_realtime_clients {}\n",
            self.connections.load(Ordering::Relaxed),
            self.forwarded.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.connected()
        )
    }
}

/// The relay's routes: the protocol at `/relay` (and iroh's legacy `/derp`), and its probes.
pub fn routes(router: axum::Router<Arc<Relay>>) -> axum::Router<Arc<Relay>> {
    use axum::routing::get;
    router
        .route("/relay", get(upgrade))
        .route("/derp", get(upgrade))
        .route("/ping", get(ping))
        .route("/generate_204", get(generate_204))
}

/// `GET /relay`: switch to the relay protocol.
pub async fn upgrade(State(relay): State<Arc<Relay>>, request: Request) -> Response {
    if request.headers().get(UPGRADE).map(HeaderValue::as_bytes) != Some(UPGRADE_PROTOCOL.as_bytes()) {
        return (StatusCode::BAD_REQUEST, "expected Upgrade: iroh derp http").into_response();
    }
    let Ok(slot) = relay.realtime.slots.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many relay connections").into_response();
    };
    let upgrading = hyper::upgrade::on(request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrading.await {
            serve_client(&relay, TokioIo::new(upgraded), slot).await;
        }
    });
    (StatusCode::SWITCHING_PROTOCOLS, [(UPGRADE, UPGRADE_PROTOCOL)]).into_response()
}

/// `GET /ping`: the app checks the relay is there.
pub async fn ping() -> impl IntoResponse {
    ([("access-control-allow-origin", "*")], StatusCode::OK)
}

/// `GET /generate_204`: latency probes, answering a well-formed challenge as iroh expects.
pub async fn generate_204(headers: HeaderMap) -> Response {
    let challenge = headers.get("x-tailscale-challenge").and_then(|v| v.to_str().ok()).filter(|c| {
        c.len() < 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    match challenge {
        Some(challenge) => (StatusCode::NO_CONTENT, [("x-tailscale-response", format!("response {challenge}"))]).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn serve_client<S: AsyncRead + AsyncWrite + Send + 'static>(relay: &Relay, stream: S, _slot: OwnedSemaphorePermit) {
    let realtime = &relay.realtime;
    let (read, write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    let node = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut read)).await {
        Ok(Ok(node)) => node,
        _ => return,
    };
    let connection = realtime.next_id.fetch_add(1, Ordering::Relaxed);
    let (packets, outgoing_packets) = mpsc::unbounded_channel();
    let (control, outgoing_control) = mpsc::channel(CONTROL_QUEUE);
    let client = Client { connection, packets, queued: Arc::default(), control, stop: Arc::new(Notify::new()), probe: Arc::default() };
    if !register(realtime, node, &client).await {
        return;
    }
    realtime.connections.fetch_add(1, Ordering::Relaxed);

    let awaiting_pong = Mutex::new(None);
    let mut sent_to = HashSet::new();
    tokio::select! {
        _ = read_loop(realtime, &mut read, node, &client, &awaiting_pong, &mut sent_to) => {}
        _ = write_loop(write, outgoing_control, outgoing_packets, &client.queued, &awaiting_pong) => {}
        _ = client.stop.notified() => {}
    }

    // A probe waiting for this connection learns at once that it is gone.
    client.probe.lock().unwrap_or_else(|e| e.into_inner()).take();
    // Only the node's current connection leaving means the node is gone (and not when a
    // newcomer with its node id is about to take over).
    let mut clients = realtime.clients.write().unwrap_or_else(|e| e.into_inner());
    if clients.get(&node).is_some_and(|c| c.connection == connection) {
        clients.remove(&node);
        if realtime.challenged.lock().unwrap_or_else(|e| e.into_inner()).contains(&node) {
            return;
        }
        for peer in sent_to {
            if let Some(client) = clients.get(&peer) {
                let _ = client.control.try_send(Control::PeerGone(node));
            }
        }
    }
}

/// Make `client` the connection of `node`, unless another one is, and alive: see the module's
/// doc. False: the newcomer is to be closed.
async fn register(realtime: &Realtime, node: NodeId, client: &Client) -> bool {
    let current = {
        let mut clients = realtime.clients.write().unwrap_or_else(|e| e.into_inner());
        match clients.get(&node) {
            None => {
                clients.insert(node, client.clone());
                return true;
            }
            Some(current) => current.clone(),
        }
    };
    if !realtime.challenged.lock().unwrap_or_else(|e| e.into_inner()).insert(node) {
        // Another newcomer is being decided on already.
        return false;
    }
    let alive = current.answers_probe().await;
    let mut clients = realtime.clients.write().unwrap_or_else(|e| e.into_inner());
    realtime.challenged.lock().unwrap_or_else(|e| e.into_inner()).remove(&node);
    if alive {
        return false;
    }
    match clients.get(&node) {
        // Silent, or gone meanwhile: the newcomer takes over.
        Some(still) if still.connection == current.connection => {
            still.stop.notify_one();
            clients.insert(node, client.clone());
            true
        }
        None => {
            clients.insert(node, client.clone());
            true
        }
        // Someone else took over meanwhile.
        Some(_) => false,
    }
}

/// The ClientInfo frame: the client's node id, proven by its signature.
async fn handshake<R: AsyncRead + Unpin>(read: &mut R) -> Result<NodeId, ()> {
    let (kind, body) = read_frame(read, MAX_HANDSHAKE_FRAME).await.map_err(|_| ())?;
    if kind != frame::CLIENT_INFO || body.len() < MAGIC.len() + 32 + 64 || &body[..MAGIC.len()] != MAGIC {
        return Err(());
    }
    let key = &body[MAGIC.len()..MAGIC.len() + 32];
    let signature = &body[MAGIC.len() + 32..MAGIC.len() + 96];
    let message = &body[MAGIC.len() + 96..];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key).verify(message, signature).map_err(|_| ())?;
    // postcard: `ClientInfo { version: usize }` is one varint.
    let (version, _) = postcard::take_from_bytes::<u64>(message).map_err(|_| ())?;
    if version != PROTOCOL_VERSION {
        return Err(());
    }
    Ok(key.try_into().expect("32 bytes"))
}

async fn read_loop<R: AsyncRead + Unpin>(
    realtime: &Realtime,
    read: &mut R,
    node: NodeId,
    own: &Client,
    awaiting_pong: &Mutex<Option<[u8; 8]>>,
    sent_to: &mut HashSet<NodeId>,
) {
    // A malformed frame ends the connection, as with iroh's own relay.
    while let Ok((kind, mut body)) = read_frame(read, MAX_FRAME).await {
        match kind {
            frame::SEND_PACKET if body.len() >= 32 => {
                let to: NodeId = body[..32].try_into().expect("32 bytes");
                let data = body.split_off(32);
                let forwarded = match realtime.client(&to) {
                    Some(client) => {
                        if sent_to.len() < MAX_REMEMBERED_PEERS {
                            sent_to.insert(to);
                        }
                        client.offer(node, data)
                    }
                    None => false,
                };
                let counter = if forwarded { &realtime.forwarded } else { &realtime.dropped };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            frame::PING if body.len() == 8 => {
                let _ = own.control.try_send(Control::Pong(body[..8].try_into().expect("8 bytes")));
            }
            frame::PONG if body.len() == 8 => {
                let mut expected = awaiting_pong.lock().unwrap_or_else(|e| e.into_inner());
                if expected.as_ref().is_some_and(|data| data[..] == body[..]) {
                    *expected = None;
                }
                let mut probe = own.probe.lock().unwrap_or_else(|e| e.into_inner());
                if probe.as_ref().is_some_and(|(data, _)| data[..] == body[..])
                    && let Some((_, answered)) = probe.take()
                {
                    let _ = answered.send(());
                }
            }
            frame::SEND_PACKET | frame::PING | frame::PONG => return,
            // KeepAlive, NotePreferred and anything newer: nothing to do.
            _ => {}
        }
    }
}

/// Send pongs and PeerGone first, then packets, and a ping every `PING_INTERVAL` (plus jitter);
/// a ping left unanswered until the next one ends the connection.
async fn write_loop<W: AsyncWrite + Unpin>(
    write: W,
    mut control: mpsc::Receiver<Control>,
    mut packets: mpsc::UnboundedReceiver<(NodeId, Vec<u8>)>,
    queued: &AtomicUsize,
    awaiting_pong: &Mutex<Option<[u8; 8]>>,
) {
    let mut write = BufWriter::new(write);
    let jitter = Duration::from_millis(rand::random::<u64>() % 5000);
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL + jitter, PING_INTERVAL);
    loop {
        let result = tokio::select! {
            biased;
            out = control.recv() => {
                let Some(out) = out else { return };
                let flush = packets.is_empty() && control.is_empty();
                match &out {
                    Control::PeerGone(node) => write_frame(&mut write, frame::PEER_GONE, [node, &[]], flush).await,
                    Control::Pong(data) => write_frame(&mut write, frame::PONG, [data, &[]], flush).await,
                    Control::Probe(data) => write_frame(&mut write, frame::PING, [data, &[]], true).await,
                }
            }
            packet = packets.recv() => {
                let Some((from, data)) = packet else { return };
                queued.fetch_sub(data.len(), Ordering::Relaxed);
                let flush = packets.is_empty() && control.is_empty();
                write_frame(&mut write, frame::RECV_PACKET, [&from, &data], flush).await
            }
            _ = pings.tick() => {
                let data: [u8; 8] = rand::random();
                let unanswered = awaiting_pong.lock().unwrap_or_else(|e| e.into_inner()).replace(data).is_some();
                if unanswered {
                    return;
                }
                write_frame(&mut write, frame::PING, [&data, &[]], true).await
            }
        };
        if result.is_err() {
            return;
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(write: &mut W, kind: u8, parts: [&[u8]; 2], flush: bool) -> std::io::Result<()> {
    let length = (parts[0].len() + parts[1].len()) as u32;
    let writing = async {
        write.write_u8(kind).await?;
        write.write_u32(length).await?;
        write.write_all(parts[0]).await?;
        write.write_all(parts[1]).await?;
        if flush {
            write.flush().await?;
        }
        Ok(())
    };
    tokio::time::timeout(WRITE_TIMEOUT, writing).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

async fn read_frame<R: AsyncRead + Unpin>(read: &mut R, max: usize) -> std::io::Result<(u8, Vec<u8>)> {
    let kind = read.read_u8().await?;
    let length = read.read_u32().await? as usize;
    if length > max {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await?;
    Ok((kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_handshake_needs_a_valid_signature_and_version_3() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        use ring::signature::KeyPair;
        let frame = |message: &[u8], signature: &[u8]| {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(pair.public_key().as_ref());
            body.extend_from_slice(signature);
            body.extend_from_slice(message);
            let mut bytes = vec![frame::CLIENT_INFO];
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend(body);
            bytes
        };
        let good = frame(&[3], pair.sign(&[3]).as_ref());
        assert_eq!(handshake(&mut &good[..]).await, Ok(pair.public_key().as_ref().try_into().unwrap()));
        let forged = frame(&[3], pair.sign(&[4]).as_ref());
        assert!(handshake(&mut &forged[..]).await.is_err());
        let old = frame(&[2], pair.sign(&[2]).as_ref());
        assert!(handshake(&mut &old[..]).await.is_err());
    }
}
